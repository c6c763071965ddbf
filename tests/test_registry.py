"""Every Module and Loss subclass in the package must have a case in the registry."""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np

import handgrad
from handgrad.nn.loss import Loss
from handgrad.nn.module import Module
from tests.cases import LOSS_CASES, MODULE_CASES

# The studies' own layers are exhibits, some broken on purpose (sanity's inverted ReLU
# mask, worst's naive softmax): their tests show what each does, not a gradient check.
STUDIES = "handgrad.studies."


def _package_subclasses(base: type) -> set[type]:
    for info in pkgutil.walk_packages(handgrad.__path__, prefix="handgrad."):
        if not info.name.endswith("__main__"):  # importing it would run the command line
            importlib.import_module(info.name)
    found: set[type] = set()
    stack = [base]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            if (
                sub.__module__.startswith("handgrad.")
                and not sub.__module__.startswith(STUDIES)
                and not sub.__name__.startswith("_")
            ):
                found.add(sub)
    return found


def test_every_module_has_a_case() -> None:
    rng = np.random.default_rng(0)
    covered = {type(case.make(rng)) for case in MODULE_CASES}
    missing = sorted(c.__qualname__ for c in _package_subclasses(Module) - covered)
    assert not missing, f"Module subclasses with no case in tests/cases: {missing}"


def test_every_loss_has_a_case() -> None:
    covered = {type(case.make()) for case in LOSS_CASES}
    missing = sorted(c.__qualname__ for c in _package_subclasses(Loss) - covered)
    assert not missing, f"Loss subclasses with no case in tests/cases: {missing}"


def test_every_case_without_torch_says_why() -> None:
    for case in [*MODULE_CASES, *LOSS_CASES]:
        assert case.torch is not None or case.no_torch, f"{case.name}: no torch twin and no reason"
