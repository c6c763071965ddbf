"""The forward and backward formula of every module and loss, with the shapes they
work on: what ``handgrad explain`` prints for each layer.

``layers`` holds the formulas of the modules of :mod:`handgrad.nn`, ``losses``
those of its losses: one registry keyed by class (the exact type: a subclass may
compute something else), with a generic fallback that still names the shapes of
every gradient. A custom module gets its own description with
:func:`register_formula`::

    @register_formula(Scale)
    def _scale(m, x, out):
        return Description(
            "Scale",
            forward=(Step("out", "a x", f"{shape(x)} -> {shape(out)}"),),
            backward=(
                Step("dx", "a dout", f"{shape(out)} -> {shape(x)}"),
                Step("da", "sum(dout * x)", f"{shape(out)} -> (1,)", param="a"),
            ),
        )

Notation: ``N`` is the batch size, ``dz`` the gradient of the loss with respect to
the scores, ``dout`` the gradient with respect to a layer's output and ``dx`` with
respect to its input (the ``dout`` of the layer before).
"""

from handgrad.formulas import layers, losses  # noqa: F401 (they register the built-in formulas)
from handgrad.formulas._registry import (
    FORMULAS,
    LOSS_FORMULAS,
    Description,
    Step,
    describe,
    describe_loss,
    register_formula,
    register_loss_formula,
    shape,
)

__all__ = [
    "FORMULAS",
    "LOSS_FORMULAS",
    "Description",
    "Step",
    "describe",
    "describe_loss",
    "register_formula",
    "register_loss_formula",
    "shape",
]
