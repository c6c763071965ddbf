"""The formulas of every loss of :mod:`handgrad.nn`: what the loss computes from
the scores ``z`` and the targets ``y``, and the gradient ``dz`` it sends back."""

from __future__ import annotations

import numpy as np

from handgrad.formulas._registry import Describer, Description, Step, register_loss_formula, shape
from handgrad.nn import losses
from handgrad.nn.loss import Loss


def _per(loss: Loss, what: str) -> str:
    """``/ N`` for a mean, nothing for a sum."""
    return f" / {what}" if loss.reduction == "mean" else ""


def _onehot(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    onehot = np.zeros(z.shape, dtype=np.int64)
    onehot[np.arange(len(y)), y] = 1
    return onehot


def _softmax_values(z: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    values = {"p": e / e.sum(axis=1, keepdims=True)}
    if z.ndim == 2 and np.issubdtype(y.dtype, np.integer) and y.shape == z.shape[:1]:
        values["Y"] = _onehot(z, y)
    return values


@register_loss_formula(losses.CrossEntropyLoss)
def _cross_entropy(loss: losses.CrossEntropyLoss, z: np.ndarray, y: np.ndarray) -> Description:
    mean = loss.reduction == "mean"
    e = loss.label_smoothing
    forward = [
        Step("p", "softmax(z) = e^(z - max z) / sum_j e^(z_j - max z)", shape(z)),
        Step(
            "L",
            f"-{'(1/N) ' if mean else ''}sum_n log p[n, y_n]",
            f"p {shape(z)}, y {shape(y)} -> scalar",
        ),
    ]
    target = "Y = onehot(y)"
    if e:
        forward[1] = Step("L", f"-{'(1/N) ' if mean else ''}sum_n sum_c Y[n,c] log p[n,c]", "")
        target = f"Y = {1 - e:g} onehot(y) + {e:g}/C"
    backward = [Step("dz", f"(p - Y){_per(loss, 'N')}, {target}", f"{shape(z)} -> {shape(z)}")]
    if loss.weight is not None:
        backward.append(Step("", "each row times its class weight; N = sum of them", ""))
    return Description(
        f"CrossEntropyLoss({loss.reduction}" + (f", label smoothing {e:g})" if e else ")"),
        tuple(forward),
        tuple(backward),
        _softmax_values,
    )


def _elementwise_loss(title: str, loss_formula: str, grad: str, per: str) -> Describer:
    """A loss of one formula per score: ``{red}`` is mean or sum, ``{per}`` the mean's
    division (nothing for a sum); ``{m.attr}`` the loss's attribute."""

    def describe_it(loss: Loss, z: np.ndarray, y: np.ndarray) -> Description:
        fields = {"m": loss, "red": loss.reduction, "per": _per(loss, per)}
        return Description(
            title.format(**fields),
            (Step("L", loss_formula.format(**fields), f"{shape(z)} -> scalar"),),
            (Step("dz", grad.format(**fields), f"{shape(z)} -> {shape(z)}"),),
        )

    return describe_it


for _cls, _describer in (
    (
        losses.NLLLoss,
        _elementwise_loss("NLLLoss({red})", "-sum_n z[n, y_n]{per}", "-Y{per}, Y = onehot(y)", "N"),
    ),
    (
        losses.BCEWithLogitsLoss,
        _elementwise_loss(
            "BCEWithLogitsLoss({red})",
            "{red}(-y log s(z) - (1 - y) log(1 - s(z)))",
            "(s(z) - y){per}, s = sigmoid",
            "z.size",
        ),
    ),
    (
        losses.MSELoss,
        _elementwise_loss("MSELoss({red})", "{red}((z - y)^2)", "2 (z - y){per}", "z.size"),
    ),
    (
        losses.L1Loss,
        _elementwise_loss("L1Loss({red})", "{red}(|z - y|)", "sign(z - y){per}", "z.size"),
    ),
):
    register_loss_formula(_cls)(_describer)


@register_loss_formula(losses.HuberLoss)
def _huber(loss: losses.HuberLoss, z: np.ndarray, y: np.ndarray) -> Description:
    red = "mean" if loss.reduction == "mean" else "sum"
    return Description(
        f"HuberLoss({loss.reduction}, delta={loss.delta:g})",
        (
            Step("L", f"{red}(d^2 / 2 if |d| < delta else delta (|d| - delta/2))", ""),
            Step("d", "z - y", f"{shape(z)} -> scalar"),
        ),
        (Step("dz", f"clip(d, -delta, delta){_per(loss, 'z.size')}", f"{shape(z)} -> {shape(z)}"),),
    )


@register_loss_formula(losses.MultiMarginLoss)
def _multi_margin(loss: losses.MultiMarginLoss, z: np.ndarray, y: np.ndarray) -> Description:
    power = "^2" if loss.p == 2 else ""
    return Description(
        f"MultiMarginLoss(p={loss.p}, margin={loss.margin:g}, {loss.reduction})",
        (
            Step("h", f"max(0, {loss.margin:g} - z[n, y_n] + z[n, j]){power}, j != y_n", shape(z)),
            Step("L", f"sum_j h[n, j] / C, summed over n{_per(loss, 'N')}", "-> scalar"),
        ),
        (
            Step("dz_j", f"dh/dz_j / C{_per(loss, 'N')} (j != y_n)", f"{shape(z)} -> {shape(z)}"),
            Step("dz_y", "-(sum of the other dz_j of the row)", ""),
        ),
    )


@register_loss_formula(losses.FocalLoss)
def _focal(loss: losses.FocalLoss, z: np.ndarray, y: np.ndarray) -> Description:
    return Description(
        f"FocalLoss(gamma={loss.gamma:g}, {loss.reduction})",
        (
            Step("p", "softmax(z), p_t = p[n, y_n]", shape(z)),
            Step("L", f"-sum_n (1 - p_t)^gamma log p_t{_per(loss, 'N')}", "-> scalar"),
        ),
        (
            Step("dz", f"A (p - Y){_per(loss, 'N')}, Y = onehot(y)", f"{shape(z)} -> {shape(z)}"),
            Step("A", "(1-p_t)^g - g p_t (1-p_t)^(g-1) log p_t", ""),
        ),
        _softmax_values,
    )
