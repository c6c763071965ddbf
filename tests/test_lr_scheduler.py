"""Every schedule gives PyTorch's learning rates, step for step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from handgrad.nn.layers import Linear
from handgrad.optim import SGD, Adam, lr_scheduler

torch = pytest.importorskip("torch")

CASES: list[tuple[str, Callable[[Any, Any], Any], str, int]] = [
    ("StepLR", lambda m, opt: m.StepLR(opt, step_size=7, gamma=0.5), "sgd", 40),
    (
        "MultiStepLR",
        lambda m, opt: m.MultiStepLR(opt, milestones=[5, 12, 30], gamma=0.3),
        "sgd",
        40,
    ),
    ("ExponentialLR", lambda m, opt: m.ExponentialLR(opt, gamma=0.93), "sgd", 60),
    (
        "CosineAnnealingLR",
        lambda m, opt: m.CosineAnnealingLR(opt, T_max=25, eta_min=0.001),
        "sgd",
        60,
    ),
    ("LinearLR", lambda m, opt: m.LinearLR(opt, start_factor=0.1, total_iters=10), "sgd", 30),
    ("LambdaLR", lambda m, opt: m.LambdaLR(opt, lambda e: 1 / (1 + e)), "sgd", 30),
    (
        "OneCycleLR-sgd",
        lambda m, opt: m.OneCycleLR(opt, max_lr=0.5, epochs=4, steps_per_epoch=25),
        "sgd",
        100,
    ),
    (
        "OneCycleLR-adam-linear-3phase",
        lambda m, opt: m.OneCycleLR(
            opt,
            max_lr=0.01,
            total_steps=90,
            anneal_strategy="linear",
            three_phase=True,
            pct_start=0.25,
        ),
        "adam",
        90,
    ),
    (
        "OneCycleLR-no-momentum",
        lambda m, opt: m.OneCycleLR(opt, max_lr=0.01, total_steps=50, cycle_momentum=False),
        "adam",
        50,
    ),
    (
        "SequentialLR-warmup-cosine",
        lambda m, opt: m.SequentialLR(
            opt,
            [m.LinearLR(opt, start_factor=0.01, total_iters=5), m.CosineAnnealingLR(opt, T_max=30)],
            milestones=[5],
        ),
        "sgd",
        40,
    ),
]


def _optimizers(kind: str) -> tuple[Any, Any]:
    ours = [Linear(3, 2, rng=0).weight]
    theirs = [torch.nn.Parameter(torch.zeros(2, 3))]
    if kind == "sgd":
        return SGD(ours, lr=0.1, momentum=0.9), torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    return Adam(ours, lr=0.01), torch.optim.Adam(theirs, lr=0.01)


@pytest.mark.parametrize(("name", "build", "kind", "steps"), CASES, ids=[c[0] for c in CASES])
def test_schedule_matches_torch(name: str, build: Any, kind: str, steps: int) -> None:
    ours_opt, torch_opt = _optimizers(kind)
    ours, theirs = build(lr_scheduler, ours_opt), build(torch.optim.lr_scheduler, torch_opt)
    key = "betas" if kind == "adam" else "momentum"
    for i in range(steps):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(
            torch_opt.param_groups[0]["lr"], rel=1e-10, abs=1e-15
        ), f"step {i}"
        np.testing.assert_allclose(
            ours_opt.param_groups[0][key], torch_opt.param_groups[0][key], rtol=1e-12
        )
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-10, abs=1e-15)
        ours_opt.step()
        torch_opt.step()
        if i < steps - 1 or not name.startswith("OneCycle"):
            ours.step()
            theirs.step()


def test_state_dict_round_trip() -> None:
    opt, _ = _optimizers("sgd")
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    for _ in range(7):
        sched.step()
    state = sched.state_dict()
    opt2, _ = _optimizers("sgd")
    sched2 = lr_scheduler.CosineAnnealingLR(opt2, T_max=20)
    sched2.load_state_dict(state)
    sched.step()
    sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_one_cycle_refuses_to_run_past_its_end() -> None:
    opt, _ = _optimizers("sgd")
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=3)
    for _ in range(2):
        sched.step()
    sched.step()
    with pytest.raises(ValueError, match="more than total_steps=3"):
        sched.step()


def test_bad_arguments_are_named() -> None:
    opt, _ = _optimizers("sgd")
    with pytest.raises(ValueError, match="step_size must be >= 1"):
        lr_scheduler.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="needs total_steps, or epochs and steps_per_epoch"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="milestones"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 3)], milestones=[2])


# -- ReduceLROnPlateau ---------------------------------------------------------------

# A metric that improves, stalls, wobbles inside the threshold, and improves again.
PLATEAU_METRICS = [
    1.0, 0.8, 0.7, 0.7, 0.69995, 0.71, 0.7, 0.7, 0.65, 0.65, 0.66, 0.651, 0.65, 0.6,
    0.6, 0.6, 0.6, 0.6, 0.6, 0.59999, 0.62, 0.61, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
]  # fmt: skip

PLATEAU_CASES: list[tuple[str, dict[str, Any], int]] = [
    ("defaults-patience-2", {"patience": 2}, 1),
    (
        "max-abs-cooldown",
        {
            "mode": "max",
            "threshold_mode": "abs",
            "threshold": 0.01,
            "patience": 1,
            "cooldown": 2,
            "factor": 0.5,
        },
        1,
    ),
    ("min-lr-floor", {"patience": 0, "factor": 0.3, "min_lr": 0.004}, 1),
    ("eps-skips-small-cuts", {"patience": 0, "factor": 0.9, "eps": 0.005}, 1),
    ("per-group-min-lr", {"patience": 1, "factor": 0.5, "min_lr": [0.01, 0.001]}, 2),
]


def _grouped(groups: int) -> tuple[Any, Any]:
    ours = [Linear(3, 2, rng=0).weight, Linear(3, 2, rng=1).weight]
    theirs = [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(2, 3))]
    if groups == 1:
        return SGD(ours, lr=0.1), torch.optim.SGD(theirs, lr=0.1)
    return (
        SGD([{"params": [ours[0]]}, {"params": [ours[1]], "lr": 0.05}], lr=0.1),
        torch.optim.SGD([{"params": [theirs[0]]}, {"params": [theirs[1]], "lr": 0.05}], lr=0.1),
    )


@pytest.mark.parametrize(("kwargs", "groups"), [c[1:] for c in PLATEAU_CASES],
                         ids=[c[0] for c in PLATEAU_CASES])  # fmt: skip
def test_reduce_on_plateau_matches_torch(kwargs: dict[str, Any], groups: int) -> None:
    ours_opt, torch_opt = _grouped(groups)
    ours = lr_scheduler.ReduceLROnPlateau(ours_opt, **kwargs)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, **kwargs)
    metrics = PLATEAU_METRICS if kwargs.get("mode") != "max" else [-m for m in PLATEAU_METRICS]
    lrs = []
    for i, metric in enumerate(metrics):
        ours.step(metric)
        theirs.step(metric)
        assert ours.get_last_lr() == theirs.get_last_lr(), f"epoch {i + 1}"
        assert [g["lr"] for g in ours_opt.param_groups] == [g["lr"] for g in torch_opt.param_groups]
        assert (ours.num_bad_epochs, ours.cooldown_counter, ours.best) == (
            theirs.num_bad_epochs,
            theirs.cooldown_counter,
            theirs.best,
        ), f"epoch {i + 1}"
        lrs.append(ours.get_last_lr()[0])
    assert len(set(lrs)) >= 3, "the case should cut the rate at least twice"


def test_reduce_on_plateau_state_dict_resumes_mid_plateau() -> None:
    ours_opt, torch_opt = _grouped(1)
    kwargs = {"patience": 2, "cooldown": 1, "factor": 0.5}
    ours = lr_scheduler.ReduceLROnPlateau(ours_opt, **kwargs)  # type: ignore[arg-type]
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, **kwargs)
    for metric in PLATEAU_METRICS[:10]:
        ours.step(metric)
        theirs.step(metric)
    state = ours.state_dict()
    assert "optimizer" not in state
    opt2, _ = _grouped(1)
    opt2.param_groups[0]["lr"] = ours_opt.param_groups[0]["lr"]  # the optimizer's own state
    resumed = lr_scheduler.ReduceLROnPlateau(opt2)
    resumed.load_state_dict(state)
    for metric in PLATEAU_METRICS[10:]:
        resumed.step(metric)
        theirs.step(metric)
        assert resumed.get_last_lr() == theirs.get_last_lr()


def test_reduce_on_plateau_refuses_bad_arguments() -> None:
    opt, _ = _optimizers("sgd")
    with pytest.raises(ValueError, match="factor must be in"):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode must be"):
        lr_scheduler.ReduceLROnPlateau(opt, mode="lowest")
    with pytest.raises(ValueError, match="threshold_mode must be"):
        lr_scheduler.ReduceLROnPlateau(opt, threshold_mode="relative")
    with pytest.raises(ValueError, match="2 values for 1 parameter groups"):
        lr_scheduler.ReduceLROnPlateau(opt, min_lr=[0.1, 0.2])
    with pytest.raises(TypeError, match="needs the monitored metric"):
        lr_scheduler.ReduceLROnPlateau(opt).step()
