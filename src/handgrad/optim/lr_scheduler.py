"""Learning-rate schedules with PyTorch's semantics and numbers, step for step.

Build a scheduler after its optimizer, call ``scheduler.step()`` after each
``optimizer.step()`` (per epoch or per batch, as the schedule intends).
Construction sets each group's ``initial_lr`` and applies the epoch-0 rate.
Rates come from closed forms of ``last_epoch``, except :class:`ReduceLROnPlateau`'s,
which follow a metric: ``step(val_loss)`` once per epoch.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

from handgrad.optim.optimizer import Optimizer


class LRScheduler:
    """Base class: subclasses implement ``_lr_at(base_lr, group_index, epoch)``."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__} needs an Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr: list[float] = []
        self.step()

    def _lr_at(self, base_lr: float, i: int, epoch: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        return [self._lr_at(base, i, self.last_epoch) for i, base in enumerate(self.base_lrs)]

    def _apply(self, lrs: Sequence[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def step(self) -> None:
        self.last_epoch += 1
        self._apply(self.get_lr())

    def get_last_lr(self) -> list[float]:
        """The rates set by the last ``step()``."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer" and not callable(v)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)``."""

    def __init__(
        self, optimizer: Optimizer, lr_lambda: Callable[[int], float], last_epoch: int = -1
    ) -> None:
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr: float, i: int, epoch: int) -> float:
        return base_lr * self.lr_lambda(epoch)


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``."""

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr: float, i: int, epoch: int) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """``lr = base_lr * gamma ** (number of milestones <= epoch)``."""

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        self.milestones, self.gamma = sorted(int(m) for m in milestones), float(gamma)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr: float, i: int, epoch: int) -> float:
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class ExponentialLR(LRScheduler):
    """``lr = base_lr * gamma ** epoch``."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr: float, i: int, epoch: int) -> float:
        return base_lr * self.gamma**epoch


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing (SGDR without restarts).

    ``lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2``.
    """

    def __init__(
        self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        if T_max < 1:
            raise ValueError(f"T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr: float, i: int, epoch: int) -> float:
        cos = 1 + math.cos(math.pi * epoch / self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * cos / 2


class LinearLR(LRScheduler):
    """Linear warm-up: the factor goes from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps, then stays."""

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError(
                f"start_factor must be in (0, 1] and end_factor in [0, 1], got "
                f"{start_factor} and {end_factor}"
            )
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr: float, i: int, epoch: int) -> float:
        frac = min(self.total_iters, epoch) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class SequentialLR(LRScheduler):
    """Run ``schedulers[k]`` from ``milestones[k - 1]`` on, each restarting at its epoch 0
    (e.g. ``LinearLR`` warm-up, then ``CosineAnnealingLR``)."""

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: Sequence[LRScheduler],
        milestones: Sequence[int],
        last_epoch: int = -1,
    ) -> None:
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR needs len(schedulers) - 1 = {len(schedulers) - 1} milestones, "
                f"got {len(milestones)}"
            )
        for s in schedulers:
            if s.optimizer is not optimizer:
                raise ValueError("every scheduler in SequentialLR must use the same optimizer")
        self.schedulers = list(schedulers)
        self.milestones = [int(m) for m in milestones]
        super().__init__(optimizer, last_epoch)

    def step(self) -> None:
        self.last_epoch += 1
        k = bisect.bisect_right(self.milestones, self.last_epoch)
        offset = self.milestones[k - 1] if k > 0 else 0
        active = self.schedulers[k]
        active.last_epoch = self.last_epoch - offset
        self._apply(active.get_lr())
        active._last_lr = list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedulers")}
        state["schedulers"] = [s.state_dict() for s in self.schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        for s, sd in zip(self.schedulers, state.pop("schedulers"), strict=True):
            s.load_state_dict(sd)
        self.__dict__.update(state)


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin): warm up to ``max_lr`` over ``pct_start`` of the
    steps, then anneal to ``max_lr / (div_factor * final_div_factor)``; the momentum (or
    Adam's beta1) cycles the opposite way between ``max_momentum`` and ``base_momentum``.
    Step it once per batch.

    The length is ``total_steps``, or ``epochs * steps_per_epoch``. In
    :func:`handgrad.train.fit`, let fit supply its own steps per epoch by passing a
    function of the optimizer and that number:
    ``fit(..., scheduler=lambda opt, steps_per_epoch: OneCycleLR(opt, max_lr=0.01,
    epochs=10, steps_per_epoch=steps_per_epoch), scheduler_interval="batch")``; fit
    refuses, before the first step, a schedule built with another ``steps_per_epoch``
    or one too short for the run.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | Sequence[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        # Kept to check a run against (fit refuses a steps_per_epoch that is not its own).
        self.steps_per_epoch: int | None = None
        if total_steps is None:
            if not epochs or not steps_per_epoch or epochs < 1 or steps_per_epoch < 1:
                raise ValueError(
                    "OneCycleLR needs total_steps, or epochs and steps_per_epoch (in fit, "
                    "scheduler=lambda opt, steps_per_epoch: OneCycleLR(opt, ..., "
                    "steps_per_epoch=steps_per_epoch) lets fit supply it)"
                )
            total_steps = int(epochs) * int(steps_per_epoch)
            self.steps_per_epoch = int(steps_per_epoch)
        if total_steps < 1 or not 0 <= pct_start <= 1:
            raise ValueError(
                f"need total_steps >= 1 and pct_start in [0, 1], got {total_steps} and {pct_start}"
            )
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.total_steps = int(total_steps)
        self.anneal_strategy = anneal_strategy
        self.cycle_momentum = cycle_momentum
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, Sequence) else [max_lr] * len(groups)
        if self.cycle_momentum:
            first = groups[0]
            if "betas" in first:
                self._momentum_key = "betas"
            elif "momentum" in first:
                self._momentum_key = "momentum"
            else:
                raise ValueError("cycle_momentum needs an optimizer with momentum or betas")
        for group, peak in zip(groups, max_lrs, strict=True):
            group["initial_lr"] = peak / div_factor
            group["max_lr"] = peak
            group["min_lr"] = group["initial_lr"] / final_div_factor
            if self.cycle_momentum:
                group["max_momentum"], group["base_momentum"] = max_momentum, base_momentum
                self._set_momentum(group, max_momentum)
        end1 = float(pct_start * self.total_steps) - 1
        if three_phase:
            self._phases = [
                (end1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (
                    float(2 * pct_start * self.total_steps) - 2,
                    "max_lr",
                    "initial_lr",
                    "base_momentum",
                    "max_momentum",
                ),
                (self.total_steps - 1.0, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            self._phases = [
                (end1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (self.total_steps - 1.0, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group: dict[str, Any], value: float) -> None:
        if self._momentum_key == "betas":
            group["betas"] = (value, *tuple(group["betas"])[1:])
        else:
            group["momentum"] = value

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"OneCycleLR stepped {step} times, more than total_steps={self.total_steps}"
            )
        lrs = []
        for group in self.optimizer.param_groups:
            start = 0.0
            for i, (end, lr0, lr1, m0, m1) in enumerate(self._phases):
                if step <= end or i == len(self._phases) - 1:
                    pct = (step - start) / (end - start)
                    lrs.append(self._anneal(group[lr0], group[lr1], pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(group[m0], group[m1], pct))
                    break
                start = end
        return lrs


class ReduceLROnPlateau(LRScheduler):
    """Multiply the learning rate by ``factor`` when a metric stops improving.

    PyTorch's rule, with its arguments: ``step(metric)`` once per epoch; a metric
    better than ``best`` by more than ``threshold`` (relative: ``best * (1 - threshold)``
    in ``"min"`` mode, ``best * (1 + threshold)`` in ``"max"``; absolute: ``best -
    threshold`` / ``best + threshold``) becomes the new best, any other counts as a bad
    epoch. After ``patience + 1`` bad epochs in a row every group's rate becomes
    ``max(lr * factor, min_lr)`` (unless that lowers it by ``eps`` or less), and the
    next ``cooldown`` epochs count no bad epochs.

    In :func:`handgrad.train.fit`, pass it as ``scheduler=`` and fit steps it after
    every epoch with the logged metric named by ``scheduler_monitor`` (default
    ``"val_loss"``).

    Parameters
    ----------
    optimizer : Optimizer
    mode : {"min", "max"}
        Whether the metric should fall (a loss) or rise (an accuracy).
    factor : float
        ``new_lr = lr * factor``, in ``[0, 1)``.
    patience : int
        Bad epochs tolerated; the rate falls on the ``patience + 1``-th in a row.
    threshold : float
    threshold_mode : {"rel", "abs"}
    cooldown : int
        Epochs after a reduction in which bad epochs are not counted.
    min_lr : float or sequence of float
        A floor for every group's rate, or one per group.
    eps : float
        A reduction of ``eps`` or less is skipped.

    Examples
    --------
    >>> from handgrad import nn, optim
    >>> opt = optim.SGD(nn.Linear(2, 1, rng=0).parameters(), lr=0.1)
    >>> plateau = optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    >>> for val_loss in [1.0, 0.9, 0.9, 0.9, 0.9, 0.9]:
    ...     plateau.step(val_loss)
    >>> plateau.get_last_lr()  # halved after the 2nd bad epoch in a row, then again
    [0.025]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau needs an Optimizer, got {type(optimizer).__name__}")
        if not 0.0 <= factor < 1.0:
            raise ValueError(f"factor must be in [0, 1), got {factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if patience < 0 or cooldown < 0:
            raise ValueError(f"patience and cooldown must be >= 0, got {patience} and {cooldown}")
        groups = optimizer.param_groups
        if isinstance(min_lr, Sequence):
            if len(min_lr) != len(groups):
                raise ValueError(
                    f"min_lr has {len(min_lr)} values for {len(groups)} parameter groups"
                )
            self.min_lrs = [float(v) for v in min_lr]
        else:
            self.min_lrs = [float(min_lr)] * len(groups)
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.eps = int(cooldown), float(eps)
        self.last_epoch = 0
        self._last_lr = [float(group["lr"]) for group in groups]
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def is_better(self, value: float, best: float) -> bool:
        """Whether ``value`` beats ``best`` by more than the threshold."""
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return value < best * (1.0 - self.threshold)
            return value < best - self.threshold
        if self.threshold_mode == "rel":
            return value > best * (1.0 + self.threshold)
        return value > best + self.threshold

    def step(self, metrics: float | None = None) -> None:
        """Count one epoch whose monitored metric was ``metrics``."""
        if metrics is None:
            raise TypeError(
                "ReduceLROnPlateau.step needs the monitored metric: step(val_loss) "
                "(fit passes the one named by scheduler_monitor)"
            )
        current = float(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in the cooldown do not count
        if self.num_bad_epochs > self.patience:
            for group, floor in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
                old = float(group["lr"])
                new = max(old * self.factor, floor)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        return list(self._last_lr)
