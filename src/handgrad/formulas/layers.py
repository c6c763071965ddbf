"""The formulas of every module of :mod:`handgrad.nn`: layers, activations,
normalisation, convolution and pooling."""

from __future__ import annotations

import math

import numpy as np

from handgrad.formulas._registry import (
    Describer,
    Description,
    Step,
    Values,
    register_formula,
    same_shapes,
    shape,
)
from handgrad.nn import activations as act
from handgrad.nn.conv import Conv2d, conv_geometry
from handgrad.nn.fused import ConvMaxPool
from handgrad.nn.layers import Dropout, Dropout2d, Flatten, Identity, Linear, Unflatten
from handgrad.nn.module import Module
from handgrad.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from handgrad.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d


@register_formula(Linear)
def _linear(m: Linear, x: np.ndarray, out: np.ndarray) -> Description:
    d_in, d_out = m.in_features, m.out_features
    rows = math.prod(x.shape[:-1])  # every leading axis acts as a batch axis
    bias = m.bias is not None
    fwd = f"{shape(x)} @ {shape((d_in, d_out))}" + (f" + {shape((d_out,))}" if bias else "")
    steps = [
        Step("dx", "dout W", f"{shape(out)} @ {shape((d_out, d_in))} -> {shape(x)}"),
        Step(
            "dW",
            "dout^T x",
            f"{shape((d_out, rows))} @ {shape((rows, d_in))} -> {shape((d_out, d_in))}",
            param="weight",
        ),
    ]
    if bias:
        steps.append(Step("db", "sum_n dout", f"{shape(out)} -> {shape((d_out,))}", param="bias"))
    return Description(
        f"Linear({d_in} -> {d_out}{'' if bias else ', no bias'})",
        (Step("out", "x W^T + b" if bias else "x W^T", f"{fwd} -> {shape(out)}"),),
        tuple(steps),
    )


def _pointwise(title: str, forward: str, backward: str, values: Values | None = None) -> Describer:
    """A module whose input and output shapes need no formula of their own.

    ``{m.attr}`` in the texts is the module's attribute, ``{out}`` the output's shape.
    """

    def describe_it(m: Module, x: np.ndarray, out: np.ndarray) -> Description:
        fwd, bwd = same_shapes(x, out)
        fields = {"m": m, "out": shape(out)}
        return Description(
            title.format(**fields),
            (Step("out", forward.format(**fields), fwd),),
            (Step("dx", backward.format(**fields), bwd),),
            values,
        )

    return describe_it


def _relu_mask(x: np.ndarray, out: np.ndarray) -> dict[str, np.ndarray]:
    return {"x > 0": (x > 0).astype(np.int64)}


for _cls, _describer in (
    (act.ReLU, _pointwise("ReLU", "max(0, x)", "dout * (x > 0)", _relu_mask)),
    (
        act.LeakyReLU,
        _pointwise(
            "LeakyReLU(a={m.negative_slope:g})",
            "x if x > 0 else a x",
            "dout * (1 if x > 0 else a)",
        ),
    ),
    (
        act.ELU,
        _pointwise(
            "ELU(alpha={m.alpha:g})",
            "x if x > 0 else alpha (e^x - 1)",
            "dout * (1 if x > 0 else out + alpha)",
        ),
    ),
    (
        act.SELU,
        _pointwise(
            "SELU",
            "s (x if x > 0 else a (e^x - 1)), s=1.0507, a=1.6733",
            "dout * s (1 if x > 0 else a e^x)",
        ),
    ),
    (act.SiLU, _pointwise("SiLU", "x s(x), s = sigmoid", "dout * s(x) (1 + x (1 - s(x)))")),
    (act.Sigmoid, _pointwise("Sigmoid", "1 / (1 + e^-x)", "dout * out (1 - out)")),
    (act.Tanh, _pointwise("Tanh", "tanh(x)", "dout * (1 - out^2)")),
    (
        act.Softmax,
        _pointwise(
            "Softmax(dim={m.dim})",
            "e^(x - max x) / sum_j e^(x_j - max x)",
            "out * (dout - sum_j dout_j out_j)",
        ),
    ),
    (
        act.LogSoftmax,
        _pointwise("LogSoftmax(dim={m.dim})", "x - log sum_j e^x_j", "dout - e^out * sum_j dout_j"),
    ),
    (Flatten, _pointwise("Flatten", "x.reshape(N, -1)", "dout.reshape(x.shape)")),
    (
        Unflatten,
        _pointwise(
            "Unflatten({m.dim}, {m.unflattened_size})",
            "x.reshape{out}",
            "dout.reshape(x.shape)",
        ),
    ),
    (Identity, _pointwise("Identity", "x", "dout")),
):
    register_formula(_cls)(_describer)


@register_formula(act.GELU)
def _gelu(m: act.GELU, x: np.ndarray, out: np.ndarray) -> Description:
    fwd, bwd = same_shapes(x, out)
    if m.approximate == "tanh":
        gate = "P(x) = (1 + tanh(0.79788 (x + 0.044715 x^3))) / 2"
        grad = "dout * (P(x) + x P'(x))"
    else:
        gate = "P = normal CDF"
        grad = "dout * (P(x) + x p(x)), p = normal pdf"
    return Description(
        f"GELU(approximate={m.approximate!r})",
        (Step("out", f"x P(x), {gate}", fwd),),
        (Step("dx", grad, bwd),),
    )


@register_formula(Dropout, Dropout2d)
def _dropout(m: Dropout, x: np.ndarray, out: np.ndarray) -> Description:
    fwd, bwd = same_shapes(x, out)
    name = type(m).__name__
    if not m.training or m.p == 0.0:
        return Description(
            f"{name}(p={m.p:g}), evaluation mode",
            (Step("out", "x (the identity)", fwd),),
            (Step("dx", "dout", bwd),),
        )
    forward = [Step("out", f"x * m, m = (u >= {m.p:g}) / {1 - m.p:g}, u ~ U(0, 1)", fwd)]
    if isinstance(m, Dropout2d):  # the mask's shape first: the last step gives out's
        mask = shape((*x.shape[:2], 1, 1))
        forward.insert(0, Step("m", "one entry per sample and channel", mask))
    return Description(
        f"{name}(p={m.p:g})", tuple(forward), (Step("dx", "dout * m (the same mask)", bwd),)
    )


# -- normalisation ---------------------------------------------------------------------


def _normalisation(
    title: str,
    x: np.ndarray,
    out: np.ndarray,
    over: str,
    param_shape: tuple[int, ...],
    affine: tuple[bool, bool],
    running: bool,
) -> Description:
    """Batch and layer norm: ``xhat = (x - mean) / std``, ``out = gamma xhat + beta``."""
    fwd, bwd = same_shapes(x, out)
    ps = shape(param_shape)
    gamma, beta = affine
    stats = "running_mean, running_var" if running else f"mean, var over {over}"
    forward = [Step("xhat", "(x - mean) / sqrt(var + eps)", f"{stats} {ps}")]
    out_formula = "gamma xhat" if gamma else "xhat"
    forward.append(Step("out", out_formula + (" + beta" if beta else ""), fwd))
    g = "gamma dout" if gamma else "dout"
    if running:  # the statistics are constants
        backward = [Step("dx", f"{g} / sqrt(running_var + eps)", bwd)]
    else:
        backward = [
            Step("dx", "(g - mean(g) - xhat mean(g xhat)) / std", bwd),
            Step("", f"g = {g}, means over {over}", ""),
        ]
    if gamma:
        backward.append(
            Step("dgamma", f"sum of dout * xhat over {over}", f"{shape(x)} -> {ps}", "weight")
        )
    if beta:
        backward.append(Step("dbeta", f"sum of dout over {over}", f"{shape(x)} -> {ps}", "bias"))
    return Description(title, tuple(forward), tuple(backward))


@register_formula(BatchNorm1d, BatchNorm2d)
def _batchnorm(m: BatchNorm1d, x: np.ndarray, out: np.ndarray) -> Description:
    over = "N, H, W" if x.ndim == 4 else ("N, L" if x.ndim == 3 else "N")
    running = not m.training and m.track_running_stats
    return _normalisation(
        f"{type(m).__name__}({m.num_features}){', evaluation mode' if running else ''}",
        x,
        out,
        over,
        (m.num_features,),
        (m.weight is not None, m.bias is not None),
        running,
    )


@register_formula(LayerNorm)
def _layernorm(m: LayerNorm, x: np.ndarray, out: np.ndarray) -> Description:
    k = len(m.normalized_shape)
    over = f"the last {k} axes" if k > 1 else "the last axis"
    return _normalisation(
        f"LayerNorm({m.normalized_shape})",
        x,
        out,
        over,
        m.normalized_shape,
        (m.weight is not None, m.bias is not None),
        False,
    )


# -- convolution and pooling ----------------------------------------------------------


def _conv_steps(
    m: Conv2d, x: np.ndarray, conv_out: tuple[int, ...], prefix: str = ""
) -> tuple[list[Step], list[Step]]:
    n, _, oh, ow = conv_out
    g = m.groups
    kh, kw = m.kernel_size
    k = m.in_channels // g * kh * kw  # one patch
    rows = n * oh * ow
    c_out = m.out_channels // g
    per = f"per group (x{g}): " if g > 1 else ""
    bias = m.bias is not None
    forward = [
        Step(
            "cols",
            f"im2col(x): one {kh}x{kw} patch per row",
            f"{per}{shape(x)} -> {shape((rows, k))}",
        ),
        Step(
            "out",
            "cols W^T + b" if bias else "cols W^T",
            f"{shape((rows, k))} @ {shape((k, c_out))} -> {shape(conv_out)}",
        ),
    ]
    w = shape(m.weight.data)
    backward = [
        Step(
            "dW",
            "dout^T cols",
            f"{shape((c_out, rows))} @ {shape((rows, k))} -> {w}",
            prefix + "weight",
        ),
    ]
    if bias:
        backward.append(
            Step(
                "db",
                "sum of dout over n, h, w",
                f"{shape((n, m.out_channels, oh, ow))} -> {shape((m.out_channels,))}",
                prefix + "bias",
            )
        )
    backward.append(
        Step("dx", "col2im(dout W)", f"{shape((rows, c_out))} @ {shape((c_out, k))} -> {shape(x)}")
    )
    return forward, backward


def _conv_title(m: Conv2d) -> str:
    kh, kw = m.kernel_size
    s = f"Conv2d({m.in_channels} -> {m.out_channels}, {kh}x{kw}"
    if m.stride != (1, 1):
        s += f", stride {m.stride[0] if m.stride[0] == m.stride[1] else m.stride}"
    pads = m._pads
    if any(pads):
        s += f", pad {pads[0] if len(set(pads)) == 1 else pads}"
    if m.dilation != (1, 1):
        s += f", dilation {m.dilation}"
    if m.groups != 1:
        s += f", groups {m.groups}"
    return s + ("" if m.bias is not None else ", no bias") + ")"


@register_formula(Conv2d)
def _conv2d(m: Conv2d, x: np.ndarray, out: np.ndarray) -> Description:
    forward, backward = _conv_steps(m, x, out.shape)
    return Description(_conv_title(m), tuple(forward), tuple(backward))


def _window(kernel: tuple[int, int], stride: tuple[int, int]) -> str:
    k = f"{kernel[0]}x{kernel[1]}"
    return k if stride == kernel else f"{k}, stride {stride[0]}x{stride[1]}"


@register_formula(MaxPool2d)
def _maxpool(m: MaxPool2d, x: np.ndarray, out: np.ndarray) -> Description:
    fwd, bwd = same_shapes(x, out)
    return Description(
        f"MaxPool2d({_window(m.kernel_size, m.stride)})",
        (Step("out", "max of each window", fwd),),
        (Step("dx", "dout to each window's (first) max, 0 elsewhere", bwd),),
    )


@register_formula(AvgPool2d)
def _avgpool(m: AvgPool2d, x: np.ndarray, out: np.ndarray) -> Description:
    fwd, bwd = same_shapes(x, out)
    return Description(
        f"AvgPool2d({_window(m.kernel_size, m.stride)})",
        (Step("out", "mean of each window", fwd),),
        (Step("dx", "dout / window size, to every pixel of it", bwd),),
    )


@register_formula(AdaptiveAvgPool2d)
def _adaptive(m: AdaptiveAvgPool2d, x: np.ndarray, out: np.ndarray) -> Description:
    fwd, bwd = same_shapes(x, out)
    return Description(
        f"AdaptiveAvgPool2d({m.output_size})",
        (Step("out", f"mean of each of {out.shape[2]}x{out.shape[3]} bins", fwd),),
        (Step("dx", "dout / bin size, to every pixel of its bin", bwd),),
    )


@register_formula(ConvMaxPool)
def _conv_maxpool(m: ConvMaxPool, x: np.ndarray, out: np.ndarray) -> Description:
    conv, pool = m.conv, m.pool
    pads = conv._pads
    oh, ow = conv_geometry(x.shape[2:], conv.kernel_size, conv.stride, pads, conv.dilation, "")
    conv_out = (x.shape[0], conv.out_channels, oh, ow)
    forward, backward = _conv_steps(conv, x, conv_out, prefix="conv.")
    relu = m.relu is not None
    pooled = f"{shape(conv_out)} -> {shape(out)}"
    forward.append(Step("out", "max of each window" + (", then ReLU" if relu else ""), pooled))
    route = "dout" + (" * (out > 0)" if relu else "") + " to each window's max"
    backward.insert(0, Step("dout", route, f"{shape(out)} -> {shape(conv_out)}"))
    title = _conv_title(conv) + f" + MaxPool2d({_window(pool.kernel_size, pool.stride)})"
    return Description(title + (" + ReLU" if relu else ""), tuple(forward), tuple(backward))
