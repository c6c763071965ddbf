"""Export a handgrad model to ONNX, to run it in onnxruntime or any other ONNX runtime.

``export(model, "mnist.onnx", input_shape=(784,))`` writes the model as it computes in
evaluation mode (dropout the identity, batch norm on its running statistics), whatever
mode it is in: one ONNX operator per layer where ONNX has one (``Linear`` -> ``Gemm``,
``Conv2d`` -> ``Conv``, ``BatchNorm2d`` -> ``BatchNormalization``, ...), a few elementary
ones where it has none at this opset (GELU, SiLU). The batch axis is dynamic (``"N"``);
the graph's input is ``"input"`` of shape ``(N, *input_shape)`` and its output
``"output"``. Weights are initializers named as in ``model.state_dict()`` (``"3.weight"``).

**Opset 17** (ONNX 1.12, 2022; IR version 8): the first with ``LayerNormalization``,
so every handgrad layer maps to one operator or a short chain, and old enough that
every maintained runtime reads it (onnxruntime since 1.12). A newer opset would buy
only the ``Gelu`` operator (opset 20), which ``Erf`` and a few products express here.

float32 and float64 models export in their own dtype (``dtype=`` converts). ONNX
allows doubles for every operator used, but onnxruntime's CPU provider has no double
kernel for ``Conv``, ``AveragePool``, ``GlobalAveragePool`` or ``Erf`` (exact GELU):
export such a float64 model with ``dtype=np.float32`` to run it there. ONNX attributes
are float32, so a float64 graph takes LeakyReLU's slope and ELU's and SELU's constants
as double tensors (``PRelu``; ELU and SELU from ``Exp`` and ``Where``).

The ``onnx`` package is needed only here, and imported only when a model is exported
(``pip install "handgrad[onnx]"``): ``import handgrad`` never loads it. This is a
package, ``handgrad/onnx/``, whose ``import onnx`` is absolute, so it always finds the
``onnx`` package: even a file of it run as a script cannot import itself under that
name, as a ``handgrad/onnx.py`` would. ``handgrad.onnx.layers`` has one converter per
layer type.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from handgrad._atomic import atomic_write
from handgrad._install import install_hint
from handgrad.nn.module import Module, Sequential
from handgrad.onnx.layers import CONVERTERS, ExportError, Graph, Shape, join_path

__all__ = ["CONVERTERS", "IR_VERSION", "OPSET", "ExportError", "export", "to_onnx"]

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: what runtimes of that age accept
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _onnx() -> Any:
    """The ``onnx`` package, or an ImportError that says how to install it."""
    try:
        import onnx
        from onnx import numpy_helper  # noqa: F401  (a submodule: load it now)
    except ImportError:
        raise ImportError(
            f"ONNX export needs the onnx package, which is not installed: {install_hint('onnx')}"
        ) from None
    return onnx


def _label(path: str, module: Module) -> str:
    return f"{path}: {type(module).__name__}" if path else type(module).__name__


def _unsupported(module: Module, path: str = "") -> list[str]:
    """``"3: MyLayer"`` for every layer no converter knows, in model order."""
    if type(module) is Sequential:
        return [
            item
            for name, child in module._modules.items()
            for item in _unsupported(child, join_path(path, name))
        ]
    return [] if type(module) in CONVERTERS else [_label(path, module)]


def _walk(
    g: Graph, module: Module, x: str, probe: np.ndarray, path: str = ""
) -> tuple[str, np.ndarray]:
    """Convert ``module`` (evaluation mode); ``probe`` is a batch of one that goes through
    handgrad alongside, giving every layer's input and output shape."""
    if type(module) is Sequential:
        for name, child in module._modules.items():
            x, probe = _walk(g, child, x, probe, join_path(path, name))
        return x, probe
    try:
        out = module.forward(probe)
    except (ValueError, TypeError) as exc:
        raise ExportError(
            f"input_shape {g.input_shape} does not fit layer {_label(path, module)}, which "
            f"would get samples of shape {probe.shape[1:]}: {exc}"
        ) from None
    name = path or type(module).__name__.lower()
    return CONVERTERS[type(module)](g, module, x, probe.shape, out.shape, name), out


def _input_shape(input_shape: int | Sequence[int]) -> Shape:
    items: tuple[Any, ...]
    try:
        items = tuple(input_shape)  # type: ignore[arg-type]
    except TypeError:  # one number: a 1-d sample
        items = (input_shape,)
    if not items or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in items
    ):
        raise ExportError(
            f"input_shape must be the shape of one sample, positive sizes without the batch "
            f"axis, such as (784,) or (1, 28, 28); got {input_shape!r}"
        )
    return tuple(int(v) for v in items)


def _model_dtype(model: Module) -> np.dtype:
    """The dtype of the first parameter, else floating buffer (running statistics), else float32."""
    arrays = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
    return next((a.dtype for a in arrays if a.dtype in _DTYPES), np.dtype(np.float32))


def to_onnx(
    model: Module, input_shape: int | Sequence[int], dtype: np.dtype | type | None = None
) -> Any:
    """The ``onnx.ModelProto`` of ``model`` in evaluation mode; see :func:`export`."""
    onnx = _onnx()
    bad = _unsupported(model)
    if bad:
        raise ExportError(
            f"cannot export to ONNX: no ONNX operator for layer {', '.join(bad)} (ONNX "
            "export knows the layers of handgrad.nn and Sequential, by exact type; a "
            "Module of your own has no ONNX form)"
        )
    shape = _input_shape(input_shape)
    own = _model_dtype(model)
    target = own if dtype is None else np.dtype(dtype)
    if target not in _DTYPES:
        raise ExportError(f"dtype must be float32 or float64, got {target}")
    g = Graph(onnx, target, shape)
    # a copy in evaluation mode: the caller's model keeps its mode and its caches
    twin = copy.deepcopy(model).eval()
    out, probe = _walk(g, twin, "input", np.zeros((1, *shape), own))
    producer = next((n for n in g.nodes if out in n.output), None)
    if producer is None:  # the model passes its input through: the graph still needs a node
        g.nodes.append(onnx.helper.make_node("Identity", [out], ["output"], "output"))
    else:
        producer.output[list(producer.output).index(out)] = "output"
    graph = onnx.helper.make_graph(
        g.nodes,
        "handgrad",
        [onnx.helper.make_tensor_value_info("input", g.elem_type, ["N", *shape])],
        [onnx.helper.make_tensor_value_info("output", g.elem_type, ["N", *probe.shape[1:]])],
        initializer=g.initializers,
    )
    import handgrad

    proto = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="handgrad",
        producer_version=handgrad.__version__,
        doc_string=repr(model),
    )
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)  # also infers and checks every shape
    return proto


def _write(proto: Any, path: str | os.PathLike[str]) -> Path:
    data = proto.SerializeToString()
    return atomic_write(path, lambda fh: fh.write(data))


def export(
    model: Module,
    path: str | os.PathLike[str],
    input_shape: int | Sequence[int],
    dtype: np.dtype | type | None = None,
) -> Path:
    """Write ``model`` to ``path`` as an ONNX file (opset :data:`OPSET`), atomically.

    Parameters
    ----------
    model : Module
        A layer or a (nested) ``Sequential`` of the layer types in :data:`CONVERTERS`;
        exported as it computes in evaluation mode, whatever mode it is in.
    path : str or PathLike
        The ``.onnx`` file; missing parent directories are created, as :func:`handgrad.save`
        does.
    input_shape : int or tuple of int
        The shape of *one* sample, without the batch axis: ``(784,)`` for the MLP of
        ``handgrad train``, ``(1, 28, 28)`` for a network that starts with a ``Conv2d``.
        The batch axis is dynamic.
    dtype : float32 or float64, optional
        The graph's dtype; default the model's (float32 for a model without parameters).

    Returns
    -------
    Path
        ``path``. The graph reads ``"input"`` ``(N, *input_shape)`` and writes ``"output"``.

    Raises
    ------
    ExportError
        Naming every layer ONNX cannot express (``3: MyLayer``), or the layer an
        ``input_shape`` does not fit. Nothing is written then.
    ImportError
        When the ``onnx`` package is missing, with the command that installs it.
    """
    proto = to_onnx(model, input_shape, dtype)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return _write(proto, target)
