"""The core pulls in nothing but NumPy and the standard library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CORE = [
    "handgrad",
    "handgrad.nn",
    "handgrad.optim",
    "handgrad.gradcheck",
    "handgrad.train",
    "handgrad.augment",
    "handgrad.data",
    "handgrad.metrics",
    "handgrad.serialization",
    "handgrad.callbacks",
    "handgrad.lab",
]


@pytest.mark.parametrize("module", CORE)
def test_core_imports_only_numpy_and_stdlib(module: str) -> None:
    code = (
        "import sys, json; before = set(sys.modules); "
        f"import {module}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    top_level = set(json.loads(out.stdout))
    foreign = sorted(top_level - set(sys.stdlib_module_names) - {"numpy", "handgrad"})
    assert not foreign, f"importing {module} pulled in {foreign}"
    assert "numpy" in top_level or module != "handgrad.nn"
