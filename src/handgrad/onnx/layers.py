"""One converter per handgrad layer type: the ONNX nodes and initializers of that layer.

Each converter is ``f(graph, layer, x, in_shape, out_shape, path) -> y``: it appends
the nodes that compute the layer's output from the tensor named ``x`` and returns the
name of that output. The shapes (batch axis first) are those of a one-sample batch that
went through handgrad alongside; ``path`` is the layer's place in the model (``"3.1"``),
which names its nodes (``"3.1/Gemm"``) and its weights (``"3.1.weight"``, as in
``state_dict()``). :data:`CONVERTERS` is the registry, by exact type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from handgrad.nn import activations as act
from handgrad.nn import functional as F
from handgrad.nn.conv import Conv2d, resolve_padding
from handgrad.nn.layers import Dropout, Dropout2d, Flatten, Identity, Linear, Unflatten
from handgrad.nn.module import Module
from handgrad.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from handgrad.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, adaptive_bins

Shape = tuple[int, ...]


class ExportError(ValueError):
    """The model (or the input shape) cannot be written as ONNX; the message says where."""


class Graph:
    """The nodes and initializers of the graph being built, in one dtype."""

    def __init__(self, onnx: Any, dtype: np.dtype, input_shape: Shape) -> None:
        self.onnx = onnx
        self.dtype = dtype
        self.input_shape = input_shape
        self.elem_type = onnx.helper.np_dtype_to_tensor_dtype(dtype)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = {"input", "output"}
        self._scalars: dict[float, str] = {}

    def _unique(self, name: str) -> str:
        base, k = name, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        """An initializer holding ``array`` in the graph's dtype."""
        name = self._unique(name)
        value = np.asarray(array, dtype=self.dtype, order="C")  # 0-d stays 0-d
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def param(self, path: str, name: str, array: np.ndarray) -> str:
        """:meth:`weight` named after the layer's state-dict entry (``"3.weight"``)."""
        return self.weight(join_path(path, name), array)

    def ints(self, name: str, values: Sequence[int]) -> str:
        name = self._unique(name)
        array = np.asarray(values, dtype=np.int64)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def scalar(self, value: float) -> str:
        """A shared 0-d constant (``0.5``, ``1.0``, ``sqrt(1/2)``, ...)."""
        if value not in self._scalars:
            self._scalars[value] = self.weight(f"const_{value:g}", np.asarray(value))
        return self._scalars[value]

    def op(self, op_type: str, inputs: Sequence[str], path: str, **attrs: Any) -> str:
        """Append one node; returns the name of its (only) output, ``PATH/OpType``."""
        out = self._unique(f"{path}/{op_type}")
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], out, **attrs))
        return out


def join_path(path: str, name: str) -> str:
    """The state-dict name of a layer's array: ``"3.weight"`` (``"weight"`` at the root)."""
    return f"{path}.{name}" if path else name


# -- the converters ------------------------------------------------------------------------

Converter = Callable[[Graph, Any, str, Shape, Shape, str], str]


def _linear(g: Graph, m: Linear, x: str, ins: Shape, outs: Shape, path: str) -> str:
    w = m.weight.data  # (D_out, D_in)
    b = None if m.bias is None else g.param(path, "bias", m.bias.data)
    if len(ins) == 2:  # (N, D_in): one Gemm, y = x W^T + b
        inputs = [x, g.param(path, "weight", w)] + ([b] if b is not None else [])
        return g.op("Gemm", inputs, path, transB=1)
    y = g.op("MatMul", [x, g.param(path, "weight.T", w.T)], path)  # (N, *, D_out)
    return y if b is None else g.op("Add", [y, b], path)


def _elementwise(op_type: str, **attrs: Callable[[Any], Any]) -> Converter:
    def convert(g: Graph, m: Any, x: str, ins: Shape, outs: Shape, path: str) -> str:
        return g.op(op_type, [x], path, **{k: f(m) for k, f in attrs.items()})

    return convert


def _gelu(g: Graph, m: act.GELU, x: str, ins: Shape, outs: Shape, path: str) -> str:
    """``x * gate(x)``, the gate as handgrad computes it (opset 20's Gelu is not here)."""
    if m.approximate == "tanh":  # gate = (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
        x3 = g.op("Mul", [g.op("Mul", [x, x], path), x], path)
        inner = g.op("Add", [x, g.op("Mul", [x3, g.scalar(0.044715)], path)], path)
        t = g.op("Tanh", [g.op("Mul", [inner, g.scalar(math.sqrt(2 / math.pi))], path)], path)
    else:  # gate = (1 + erf(x / sqrt(2))) / 2
        t = g.op("Erf", [g.op("Mul", [x, g.scalar(math.sqrt(0.5))], path)], path)
    gate = g.op("Mul", [g.op("Add", [t, g.scalar(1.0)], path), g.scalar(0.5)], path)
    return g.op("Mul", [x, gate], path)


def _leaky_relu(g: Graph, m: act.LeakyReLU, x: str, ins: Shape, outs: Shape, path: str) -> str:
    if g.dtype == np.float32:
        return g.op("LeakyRelu", [x], path, alpha=m.negative_slope)
    # ONNX attributes are float32: a float64 graph takes the slope as a double tensor
    return g.op("PRelu", [x, g.scalar(m.negative_slope)], path)


def _elu(g: Graph, m: act.ELU | act.SELU, x: str, ins: Shape, outs: Shape, path: str) -> str:
    """ELU, and SELU = scale * ELU(alpha) with PyTorch's constants."""
    alpha, scale = (m.alpha, 1.0) if isinstance(m, act.ELU) else (F.SELU_ALPHA, F.SELU_SCALE)
    if g.dtype == np.float32:
        if isinstance(m, act.ELU):
            return g.op("Elu", [x], path, alpha=alpha)
        return g.op("Selu", [x], path, alpha=alpha, gamma=scale)
    # float64: the constants as double tensors (ONNX attributes are float32), and only
    # operators that onnxruntime runs in double: where(x > 0, x, alpha (exp(min(x, 0)) - 1))
    zero = g.scalar(0.0)
    tail = g.op("Sub", [g.op("Exp", [g.op("Min", [x, zero], path)], path), g.scalar(1.0)], path)
    negative = g.op("Mul", [tail, g.scalar(alpha)], path)
    y = g.op("Where", [g.op("Greater", [x, zero], path), x, negative], path)
    return y if scale == 1.0 else g.op("Mul", [y, g.scalar(scale)], path)


def _silu(g: Graph, m: act.SiLU, x: str, ins: Shape, outs: Shape, path: str) -> str:
    return g.op("Mul", [x, g.op("Sigmoid", [x], path)], path)


def _same(g: Graph, m: Module, x: str, ins: Shape, outs: Shape, path: str) -> str:
    """Dropout in evaluation mode, Identity: no node at all."""
    return x


def _unflatten(g: Graph, m: Unflatten, x: str, ins: Shape, outs: Shape, path: str) -> str:
    if (m.dim if m.dim >= 0 else len(ins) + m.dim) == 0:
        raise ExportError(f"{path or 'the model'}: Unflatten({m.dim}, ...) splits the batch axis")
    # 0 copies the input's (dynamic) batch size; the other sizes are the layer's
    return g.op("Reshape", [x, g.ints(join_path(path, "shape"), [0, *outs[1:]])], path)


def _batchnorm(g: Graph, m: BatchNorm1d, x: str, ins: Shape, outs: Shape, path: str) -> str:
    c = m.num_features
    if m.track_running_stats:  # evaluation mode: the running statistics
        scale = m.weight.data if m.weight is not None else np.ones(c)
        shift = m.bias.data if m.bias is not None else np.zeros(c)
        names = ("weight", "bias") if m.weight is not None else ("ones", "zeros")
        inputs = [g.param(path, n, a) for n, a in zip(names, (scale, shift), strict=True)]
        stats = [g.param(path, n, m._buffers[n]) for n in ("running_mean", "running_var")]
        return g.op("BatchNormalization", [x, *inputs, *stats], path, epsilon=m.eps)
    # no running statistics: handgrad normalises with the batch's, in evaluation too
    axes = [0, *range(2, len(ins))]
    mean = g.op("ReduceMean", [x], path, axes=axes, keepdims=1)
    centred = g.op("Sub", [x, mean], path)
    var = g.op("ReduceMean", [g.op("Mul", [centred, centred], path)], path, axes=axes, keepdims=1)
    std = g.op("Sqrt", [g.op("Add", [var, g.scalar(m.eps)], path)], path)
    y = g.op("Mul", [centred, g.op("Reciprocal", [std], path)], path)
    if m.weight is None or m.bias is None:
        return y
    per_channel = (c,) + (1,) * (len(ins) - 2)  # (C, 1, ...): broadcasts over (N, C, ...)
    y = g.op("Mul", [y, g.param(path, "weight", m.weight.data.reshape(per_channel))], path)
    return g.op("Add", [y, g.param(path, "bias", m.bias.data.reshape(per_channel))], path)


def _layernorm(g: Graph, m: LayerNorm, x: str, ins: Shape, outs: Shape, path: str) -> str:
    k = len(m.normalized_shape)
    scale = m.weight.data if m.weight is not None else np.ones(m.normalized_shape)
    inputs = [x, g.param(path, "weight" if m.weight is not None else "ones", scale)]
    if m.bias is not None:
        inputs.append(g.param(path, "bias", m.bias.data))
    # stash_type: the statistics in the model's own precision (the default is float32)
    return g.op("LayerNormalization", inputs, path, axis=-k, epsilon=m.eps, stash_type=g.elem_type)


def _conv2d(g: Graph, m: Conv2d, x: str, ins: Shape, outs: Shape, path: str) -> str:
    top, bottom, left, right = resolve_padding(
        m.padding, m.kernel_size, m.stride, m.dilation, "Conv2d"
    )
    inputs = [x, g.param(path, "weight", m.weight.data)]
    if m.bias is not None:
        inputs.append(g.param(path, "bias", m.bias.data))
    return g.op(
        "Conv",
        inputs,
        path,
        kernel_shape=list(m.kernel_size),
        strides=list(m.stride),
        pads=[top, left, bottom, right],  # ONNX: all the starts, then all the ends
        dilations=list(m.dilation),
        group=m.groups,
    )


def _pool_attrs(m: MaxPool2d | AvgPool2d) -> dict[str, Any]:
    (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, m.stride, m.padding
    # floor mode (ceil_mode=0), as handgrad; MaxPool pads with -inf in both
    return {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": [ph, pw, ph, pw], "ceil_mode": 0}


def _maxpool2d(g: Graph, m: MaxPool2d, x: str, ins: Shape, outs: Shape, path: str) -> str:
    return g.op("MaxPool", [x], path, dilations=list(m.dilation), **_pool_attrs(m))


def _avgpool2d(g: Graph, m: AvgPool2d, x: str, ins: Shape, outs: Shape, path: str) -> str:
    if m.divisor_override is None:
        include = int(m.count_include_pad)
        return g.op("AveragePool", [x], path, count_include_pad=include, **_pool_attrs(m))
    # no such attribute in ONNX: the window's sum is AveragePool's mean times KH*KW
    y = g.op("AveragePool", [x], path, count_include_pad=1, **_pool_attrs(m))
    kh, kw = m.kernel_size
    return g.op("Mul", [y, g.scalar(kh * kw / m.divisor_override)], path)


def _adaptive_avgpool2d(
    g: Graph, m: AdaptiveAvgPool2d, x: str, ins: Shape, outs: Shape, path: str
) -> str:
    (h, w), (oh, ow) = ins[2:], outs[2:]
    if (oh, ow) == (1, 1):
        return g.op("GlobalAveragePool", [x], path)
    if h % oh == 0 and w % ow == 0:  # equal bins: a plain pooling
        kernel = [h // oh, w // ow]
        return g.op("AveragePool", [x], path, kernel_shape=kernel, strides=kernel)
    # bins of unequal sizes: the mean over bins is linear, out = P_h @ x @ P_w^T
    p_h, p_w = (np.zeros((o, n)) for o, n in ((oh, h), (ow, w)))
    for p, n in ((p_h, h), (p_w, w)):
        for i, (lo, hi) in enumerate(adaptive_bins(n, p.shape[0])):
            p[i, lo:hi] = 1 / (hi - lo)
    y = g.op("MatMul", [x, g.param(path, "bins_w", p_w.T)], path)  # (N, C, H, OW)
    return g.op("MatMul", [g.param(path, "bins_h", p_h), y], path)  # (N, C, OH, OW)


CONVERTERS: dict[type, Converter] = {
    Linear: _linear,
    act.ReLU: _elementwise("Relu"),
    act.LeakyReLU: _leaky_relu,
    act.ELU: _elu,
    act.SELU: _elu,
    act.GELU: _gelu,
    act.SiLU: _silu,
    act.Sigmoid: _elementwise("Sigmoid"),
    act.Tanh: _elementwise("Tanh"),
    act.Softmax: _elementwise("Softmax", axis=lambda m: m.dim),
    act.LogSoftmax: _elementwise("LogSoftmax", axis=lambda m: m.dim),
    Dropout: _same,
    Dropout2d: _same,
    Identity: _same,
    Flatten: _elementwise("Flatten", axis=lambda m: 1),
    Unflatten: _unflatten,
    BatchNorm1d: _batchnorm,
    BatchNorm2d: _batchnorm,
    LayerNorm: _layernorm,
    Conv2d: _conv2d,
    MaxPool2d: _maxpool2d,
    AvgPool2d: _avgpool2d,
    AdaptiveAvgPool2d: _adaptive_avgpool2d,
}
"""Layer types :func:`export` writes (exact types: a subclass may compute something else)."""
