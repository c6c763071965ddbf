"""What a sweep found: the table of its best trials and its figures.

The figures (matplotlib, headless, as :mod:`handgrad.plots`) show the validation
*error*, 1 - accuracy, on a log scale: 2% and 3% stay apart while a diverged trial's
90% still fits on the same axis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

try:
    from optuna import Study
    from optuna.trial import FrozenTrial, TrialState
except ImportError as _exc:  # pragma: no cover - depends on the environment
    from handgrad._install import install_hint

    raise ImportError(f"handgrad sweep needs optuna: {install_hint('sweep')}") from _exc

from handgrad.sweep_space import LABELS, SearchSpace, show
from handgrad.sweep_study import ranked

__all__ = ["counts", "plot_curves", "plot_history", "plot_importance", "table"]


def counts(study: Study) -> str:
    """``20 trials: 14 complete, 6 pruned`` (and failed or running ones, if any)."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    parts = [
        f"{states.count(state)} {state.name.lower()}"
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
        if states.count(state) or state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    return f"{len(states)} trials: {', '.join(parts)}"


def table(study: Study, space: SearchSpace, top: int = 10) -> str:
    """The ``top`` complete trials, best first: their searched parameters, validation
    accuracy, epochs and seconds, as aligned text."""
    names = space.searched()
    head = ["rank", "trial", "val acc", *(LABELS.get(n, n) for n in names)]
    head += ["epochs", "seconds"]
    rows = []
    for rank, t in enumerate(ranked(study)[:top], start=1):
        row = [str(rank), str(t.number), f"{float(t.value or 0.0):.2%}"]
        row += [show(n, t.params[n]) if n in t.params else "-" for n in names]
        row += [str(t.user_attrs.get("epochs", "-")), f"{t.user_attrs.get('seconds', 0.0):.1f}"]
        rows.append(row)
    left = [False] * 3 + [n in ("hidden", "optimizer") for n in names] + [False] * 2
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = []
    for row in [head, *rows]:
        cells = [
            c.ljust(w) if is_left else c.rjust(w)
            for c, w, is_left in zip(row, widths, left, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _error_axis(ax: Any) -> None:
    """A log-scale y axis of errors, labelled in percent (1%, 2%, 5%, 10%, ...)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("validation error (1 - accuracy)")
    ax.grid(alpha=0.3, which="both")


def _curve(t: FrozenTrial) -> tuple[list[int], list[float]]:
    steps = sorted(t.intermediate_values)
    return steps, [max(1.0 - t.intermediate_values[s], 1e-4) for s in steps]


def plot_history(study: Study, path: str | os.PathLike[str]) -> Path:
    """Each trial's final validation error by trial number (pruned ones at the epoch
    they stopped), and the best so far."""
    from handgrad.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax.plot(
        [t.number for t in pruned], [_curve(t)[1][-1] for t in pruned], "x", color="0.6",
        label="pruned (error when stopped)",
    )  # fmt: skip
    errors = [max(1.0 - float(t.value or 0.0), 1e-4) for t in done]
    ax.plot([t.number for t in done], errors, "o", color="C0", label="complete", markersize=4)
    best, line = 1.0, []
    for error in errors:
        best = min(best, error)
        line.append(best)
    ax.step([t.number for t in done], line, where="post", color="C3", label="best so far")
    _error_axis(ax)
    ax.set_xlabel("trial")
    ax.set_title("Optimisation history")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_curves(study: Study, path: str | os.PathLike[str]) -> Path:
    """Every trial's validation error after each epoch: where the pruner stopped the
    weak ones, and the best trial in red."""
    from handgrad.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    top = ranked(study)[:1]
    best = top[0].number if top else None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        steps, errors = _curve(t)
        if t.number == best:
            continue
        style = ("--", "0.65") if t.state == TrialState.PRUNED else ("-", "C0")
        ax.plot(steps, errors, style[0], color=style[1], alpha=0.7, linewidth=1)
    if top:
        ax.plot(*_curve(top[0]), "-o", color="C3", markersize=3, label=f"best: trial {best}")
    ax.plot([], [], "--", color="0.65", label="pruned")
    ax.plot([], [], "-", color="C0", label="complete")
    _error_axis(ax)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Validation error per epoch, every trial")
    ax.legend(fontsize=8)
    return _save(fig, path)


def importances(study: Study) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances over the complete trials, and the evaluator's name."""
    import warnings

    import optuna

    evaluator: Any = None
    name = "fANOVA"
    if hasattr(optuna.importance, "PedAnovaImportanceEvaluator"):  # optuna >= 3.6, no sklearn
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        name = "PED-ANOVA"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning
        return optuna.importance.get_param_importances(study, evaluator=evaluator), name


def plot_importance(study: Study, path: str | os.PathLike[str]) -> Path:
    """A bar per searched parameter: how much of the variation in validation accuracy
    it explains (:func:`importances`)."""
    from handgrad.plots import _pyplot, _save

    values, evaluator = importances(study)
    order = sorted(values, key=lambda n: values[n])  # the most important on top
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 0.5 + 0.45 * max(len(order), 1)), layout="constrained")
    ax.barh([LABELS.get(n, n) for n in order], [values[n] for n in order], color="C0")
    for i, n in enumerate(order):
        ax.text(values[n], i, f" {values[n]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max([*values.values(), 0.01]) * 1.2)
    ax.set_xlabel(f"importance ({evaluator}, sums to 1)")
    ax.set_title(f"Parameter importance ({len(ranked(study))} complete trials)")
    return _save(fig, path)
