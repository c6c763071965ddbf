"""The course's experiments, one short module each: ``handgrad study NAME``.

Each study is a module of this package with a function ``run(ctx) -> Report``
built on handgrad's public API only, so its code can be copied into a script of
one's own. :data:`STUDIES` is the one registry: the name, the module, a line of
description, how long the full and the ``--quick`` runs take (measured), and the
optional packages it needs.

>>> from handgrad.studies import STUDIES, find
>>> find("single-neuron").module
'handgrad.studies.single_neuron'
"""

from __future__ import annotations

import difflib
import importlib
import time
from dataclasses import dataclass
from pathlib import Path

from handgrad.studies._base import Context, Report, Table, write_report

__all__ = [
    "STUDIES",
    "Context",
    "Report",
    "StudyInfo",
    "Table",
    "find",
    "run_study",
    "write_report",
]

# The optional packages studies may need: import name -> what installs it.
INSTALL = {"matplotlib": 'pip install "handgrad[plots]"'}


@dataclass(frozen=True)
class StudyInfo:
    """One entry of the registry."""

    name: str
    module: str
    summary: str
    full_time: str  # wall time of the full run, measured on the idle 2-core machine
    quick_time: str
    needs: tuple[str, ...] = ("matplotlib",)


STUDIES: tuple[StudyInfo, ...] = (
    StudyInfo(
        "baselines",
        "handgrad.studies.baselines",
        "majority class, nearest centroid, kNN, softmax regression vs the 784-128-10 MLP",
        "42 s",
        "7 s",
    ),
    StudyInfo(
        "sanity",
        "handgrad.studies.sanity",
        "XOR, moons and spirals with decision boundaries; overfit one batch catches broken nets",
        "8 s",
        "5 s",
    ),
    StudyInfo(
        "single-neuron",
        "handgrad.studies.single_neuron",
        "a perceptron learns AND and OR and cannot learn XOR; sigmoid and linear neurons",
        "2 s",
        "2 s",
    ),
    StudyInfo(
        "course-mlp",
        "handgrad.studies.course_mlp",
        "the course's 784-256-128-10 MLP: SGD lr 0.1, momentum 0.9, learning rates 0.001 to 10",
        "99 s",
        "5 s",
    ),
    StudyInfo(
        "activations",
        "handgrad.studies.activations",
        "8 activations in a 6-layer net, matching vs mismatched init; vanishing gradients",
        "88 s",
        "7 s",
    ),
    StudyInfo(
        "init-scale",
        "handgrad.studies.init_scale",
        "He vs He divided (explodes), too small (vanishes), zero and constant (symmetry)",
        "35 s",
        "4 s",
    ),
    StudyInfo(
        "optimizers",
        "handgrad.studies.optimizers",
        "SGD, momentum, Nesterov, RMSprop, Adagrad, Adam, AdamW, Lion: same start, same batches",
        "9 s",
        "2 s",
    ),
    StudyInfo(
        "learning-rate",
        "handgrad.studies.learning_rate",
        "range test, sweep with divergent rates marked, gradient descent on a 2-D quadratic",
        "8 s",
        "3 s",
    ),
    StudyInfo(
        "batch-size",
        "handgrad.studies.batch_size",
        "batch 1 to 4096 at the same samples seen: accuracy, time per epoch, loss noise",
        "50 s",
        "3 s",
    ),
    StudyInfo(
        "losses",
        "handgrad.studies.losses",
        "cross-entropy vs MSE on one-hot vs multiclass hinge vs focal, and why",
        "24 s",
        "2 s",
    ),
    StudyInfo(
        "vectorization",
        "handgrad.studies.vectorization",
        "a Linear forward as Python loops, row by row, broadcast, one matmul: timed, speed-ups",
        "15 s",
        "2 s",
    ),
    StudyInfo(
        "kernels",
        "handgrad.studies.kernels",
        "edge, blur, sharpen, Sobel kernels and 2x2 max pooling on a digit; a CNN's filters",
        "6 s",
        "5 s",
    ),
    StudyInfo(
        "worst",
        "handgrad.studies.worst",
        "how to make it perform worst: 0-255 inputs, no shuffling, naive softmax, lr 10, sums",
        "18 s",
        "3 s",
    ),
)


def find(name: str) -> StudyInfo:
    """The registry entry called ``name``.

    Raises
    ------
    KeyError
        With the valid names and the closest match.
    """
    names = [s.name for s in STUDIES]
    for study in STUDIES:
        if study.name == name:
            return study
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise KeyError(f"unknown study {name!r}{hint}; the studies are: {', '.join(names)}")


def missing_packages(study: StudyInfo) -> list[str]:
    """The optional packages ``study`` needs that are not installed."""
    missing = []
    for package in study.needs:
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    return missing


def run_study(name: str, ctx: Context) -> Report:
    """Run the study ``name`` in ``ctx`` and return its report (``seconds`` filled in)."""
    study = find(name)
    module = importlib.import_module(study.module)
    start = time.perf_counter()
    report: Report = module.run(ctx)
    report.seconds = time.perf_counter() - start
    return report


def default_out(name: str) -> Path:
    return Path(f"study-{name}")
