"""How a :class:`handgrad.explain.Trace` reads: the text ``handgrad explain`` prints
(no line wider than the terminal's 80 columns) and the histograms of ``--plot``."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from handgrad.explain import (
    ROUND_OFF,
    SATURATION,
    THRESHOLD,
    LayerRecord,
    ParamRecord,
    Stats,
    Trace,
)
from handgrad.formulas import Step

INDENT = "    "
LABEL = 8  # width of the label column of statistics lines ("out", "dW", "dgamma")


class _Lines:
    """Lines no wider than ``width``: long ones wrap with a deeper indent."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.lines: list[str] = []

    def add(self, line: str, hang: int = 6) -> None:
        if len(line) <= self.width:
            self.lines.append(line)
            return
        lead = len(line) - len(line.lstrip(" "))
        self.lines.extend(
            textwrap.wrap(
                line.strip(),
                self.width,
                initial_indent=" " * lead,
                subsequent_indent=" " * (lead + hang),
                break_on_hyphens=False,
            )
        )

    def step(self, s: Step) -> None:
        head = f"{s.lhs} = {s.formula}" if s.lhs and s.formula else (s.lhs or s.formula)
        line = INDENT + head + (f": {s.shapes}" if s.shapes else "")
        if len(line) <= self.width or not s.shapes:
            self.add(line)
        else:  # the shapes on a line of their own
            self.add(INDENT + head + ":")
            self.add(INDENT + "      " + s.shapes)

    def field(self, label: str, text: str) -> None:
        wrapped = textwrap.wrap(text, self.width - 9, break_on_hyphens=False) or [""]
        self.lines.append(f"{label:<9}{wrapped[0]}")
        self.lines.extend(" " * 9 + rest for rest in wrapped[1:])

    def rule(self, text: str) -> None:
        head = f"== {text} "
        if len(head) + 2 <= self.width:
            self.lines.append(head + "=" * (self.width - len(head)))
        else:  # too narrow: the text wrapped, then a rule of its own
            self.add(head.rstrip(), hang=3)
            self.lines.append("=" * self.width)


def number(v: float, scale: float | None = None) -> str:
    """Three significant digits; 0 for a value that is zero up to round-off of ``scale``."""
    if scale is not None and abs(v) <= 1e-6 * scale:
        return "0"
    text = f"{v:.3g}"
    return sci(v, 2) if "e" in text else text


def stats_text(s: Stats) -> str:
    return f"mean {number(s.mean, s.max_abs)}  std {number(s.std)}  max|.| {number(s.max_abs)}"


def sci(v: float, digits: int = 1) -> str:
    """``4.0e-7``: scientific notation without the exponent's leading zero."""
    if not np.isfinite(v):  # "nan", "inf": a diverged model's numbers
        return str(float(v))
    mantissa, exponent = f"{v:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def error_text(error: float) -> str:
    return f"< {sci(ROUND_OFF, 0)}" if error < ROUND_OFF else sci(error)


def check_text(p: ParamRecord) -> str:
    """``rel. error < 1e-8 over 20 sampled entries of 1,280 (3.weight)``."""
    tried = p.checked + p.kinks
    where = (
        f"all {p.size:,} entries" if tried == p.size else f"{tried} sampled entries of {p.size:,}"
    )
    if p.rel_error is None:
        return f"not checked: {where} at a kink ({p.name})"
    if p.kinks:
        where = f"{p.checked} of {where}"
    text = f"rel. error {error_text(p.rel_error)} over {where} ({p.name})"
    if p.rel_error >= THRESHOLD:
        text += "  <- WRONG?"
    return text + (f"; {p.kinks} at a kink left out" if p.kinks else "")


def _decimals(a: np.ndarray) -> int:
    if not np.issubdtype(a.dtype, np.floating):
        return 0
    for d in range(5):
        if np.all(np.abs(a - np.round(a, d)) < 1e-9):
            return d
    return 4


def matrix(label: str, a: np.ndarray) -> list[str]:
    """``label = [[1.0 -0.5] ...`` with aligned columns, one line per row (an array of
    more than two axes as rows of its last axis)."""
    d = _decimals(a)
    a2 = np.asarray(a, dtype=np.float64)
    a2 = a2.reshape(-1, a2.shape[-1]) if a2.ndim > 2 else np.atleast_2d(a2)
    cells = [[f"{round(v, d) + 0.0:.{d}f}" for v in row] for row in a2]  # + 0.0: no "-0.0"
    w = max(len(c) for row in cells for c in row)
    rows = [" ".join(c.rjust(w) for c in row) for row in cells]
    head = f"{INDENT}{label:<5} = "
    if np.ndim(a) <= 1:
        return [f"{head}[{rows[0]}]"]
    pad = " " * len(head)
    lines = [f"{head}[[{rows[0]}]" + ("]" if len(rows) == 1 else "")]
    for i, row in enumerate(rows[1:], start=2):
        lines.append(f"{pad} [{row}]" + ("]" if i == len(rows) else ""))
    if np.ndim(a) > 2:
        lines.append(f"{pad} (rows of the last axis of {tuple(np.shape(a))})")
    return lines


def _dtype(a: np.ndarray) -> str:
    return str(a.dtype)


def _activity(layer: LayerRecord) -> str | None:
    if layer.zero_fraction is not None:
        text = f"0 in {layer.zero_fraction:.0%} of outputs"
        if layer.dead_units is not None:
            n = layer.out.shape[0]
            text += f"; dead (0 for all {n} samples): {layer.dead_units} of {layer.units} units"
        return text
    if layer.saturated_fraction is not None:
        return f"saturated (within {SATURATION:g} of a bound): {layer.saturated_fraction:.0%}"
    return None


def _forward(out: _Lines, layer: LayerRecord, first: bool, values: bool) -> None:
    out.add(f"[{layer.name}] {layer.description.title}")
    for s in layer.description.forward:
        out.step(s)
    if values:
        if first:
            out.lines.extend(matrix("x", layer.x))
        for p in layer.params:
            out.lines.extend(matrix(p.symbol.removeprefix("d"), p.value))
        if layer.description.values is not None:
            for label, a in layer.description.values(layer.x, layer.out).items():
                out.lines.extend(matrix(label, a))
        out.lines.extend(matrix("out", layer.out))
    else:
        out.add(f"{INDENT}{'out':<{LABEL}}{stats_text(layer.out_stats)}")
    activity = _activity(layer)
    if activity:
        out.add(INDENT + " " * LABEL + activity)


def _backward(out: _Lines, layer: LayerRecord, values: bool) -> None:
    out.add(f"[{layer.name}] {layer.description.title}")
    for s in layer.description.backward:
        out.step(s)
    if values:
        out.lines.extend(matrix("dx", layer.dx))
    else:
        out.add(f"{INDENT}{'dx':<{LABEL}}{stats_text(layer.dx_stats)}")
    for p in layer.params:
        if values:
            out.lines.extend(matrix(p.symbol, p.grad))
        else:
            out.add(f"{INDENT}{p.symbol:<{LABEL}}{stats_text(p.grad_stats)}")
        if p.rel_error is not None or p.kinks:
            out.add(INDENT + " " * LABEL + check_text(p))


def render(
    trace: Trace,
    width: int,
    values: bool,
    title: str | None,
    about: Sequence[tuple[str, str]],
) -> str:
    out = _Lines(width)
    out.add(title or "explain: one forward and one backward pass, layer by layer")
    for label, text in about:
        out.field(label, text)
    first = trace.layers[0] if trace.layers else None
    count = sum(p.size for p in trace.params)
    mode = "training" if trace.training else "evaluation"
    out.field(
        "model",
        f"{len(trace.layers)} layers, {count:,} parameters, {trace.dtype}, {mode} mode",
    )
    if first is not None:
        y = trace.loss.y
        out.field("input", f"x {first.input_shape} {_dtype(first.x)}, y {y.shape} {_dtype(y)}")
    if trace.checked:
        entries = trace.entries
        if entries is None or all(p.size <= entries for p in trace.params):
            sample = "every entry of each parameter"
        else:
            sample = f"up to {entries} entries of each parameter, sampled with seed {trace.seed}"
        out.field(
            "check",
            f"a float64 copy against central differences (h = {sci(trace.eps, 0)}), {sample}",
        )
    out.lines.append("")
    out.rule("forward")
    for layer in trace.layers:
        out.lines.append("")
        _forward(out, layer, layer is first, values)
    loss = trace.loss
    out.lines.append("")
    out.add(f"loss {loss.description.title}")
    for s in loss.description.forward:
        out.step(s)
    if values and loss.description.values is not None:
        for label, a in loss.description.values(loss.z, loss.y).items():
            out.lines.extend(matrix(label, a))
    out.add(f"{INDENT}L = {loss.value:.4f}")
    out.lines.append("")
    out.rule("backward: last layer first; a layer's dout is the next layer's dx")
    out.lines.append("")
    out.add(f"loss {loss.description.title}")
    for s in loss.description.backward:
        out.step(s)
    if values:
        out.lines.extend(matrix("dz", loss.dz))
    else:
        out.add(f"{INDENT}{'dz':<{LABEL}}{stats_text(loss.dz_stats)}")
    for layer in reversed(trace.layers):
        out.lines.append("")
        _backward(out, layer, values)
    if trace.checked:
        out.lines.append("")
        out.rule("numeric check")
        _summary(out, trace)
    return "\n".join(out.lines) + "\n"


def _summary(out: _Lines, trace: Trace) -> None:
    params = trace.params
    if not params:
        out.add("the model has no parameters to check")
        return
    checked = [p for p in params if p.rel_error is not None]
    bad = [p for p in checked if not (p.rel_error or 0.0) < THRESHOLD]  # NaN is bad
    if not np.isfinite(trace.loss.value):
        out.add(
            f"the loss is {trace.loss.value}: the weights or the batch hold NaN or inf "
            "(a diverged training run?), so no gradient can be checked",
            hang=0,
        )
    elif bad:
        out.add(f"{len(bad)} of {len(params)} parameter gradients disagree with central")
        out.add(f"differences (rel. error {sci(THRESHOLD, 0)} or more):")
        for p in bad:
            out.add(f"{INDENT}{p.name}: {error_text(p.rel_error or 0.0)}")
        out.add("Look at the backward formula of the first layer (from the bottom) whose")
        out.add("gradients disagree.")
    elif checked:
        everything = "all" if len(checked) == len(params) else f"{len(checked)} of"
        out.add(f"{everything} {len(params)} parameter gradients agree with central differences:")
        out.add(
            f"largest rel. error {error_text(trace.max_rel_error)}, threshold {sci(THRESHOLD, 0)}"
        )
    kinks = sum(p.kinks for p in params)
    if kinks:
        out.add(
            f"{kinks} entries were left out: within 2h of each lies a kink (a ReLU input "
            "crossing 0, a tie in a max-pool window), where the loss has no derivative "
            "and central differences are wrong.",
            hang=0,
        )


def plot_trace(trace: Trace, path: str | os.PathLike[str]) -> Path:
    """One row per layer that changes its input: a histogram of its output and of
    the gradient of the loss with respect to that output."""
    from handgrad.plots import _pyplot, _save

    plt = _pyplot()
    from matplotlib.ticker import NullFormatter

    rows = [
        layer
        for layer in trace.layers
        if not (
            layer.out.size == layer.x.size
            and np.array_equal(layer.out.reshape(-1), layer.x.reshape(-1))
        )
    ] or list(trace.layers)
    fig, axes = plt.subplots(
        len(rows), 2, figsize=(8, 1.6 * len(rows) + 0.6), squeeze=False, layout="constrained"
    )
    for ax_row, layer in zip(axes, rows, strict=True):
        for ax, a, what in ((ax_row[0], layer.out, "out"), (ax_row[1], layer.dout, "dout")):
            ax.hist(np.asarray(a, dtype=np.float64).reshape(-1), bins=50, color="tab:blue")
            ax.set_title(f"[{layer.name}] {layer.description.title}: {what}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())  # no 6x10^0 labels
    fig.suptitle("activations (left) and their gradients (right), one row per layer")
    return _save(fig, path)
