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


def test_the_suite_tests_this_checkout() -> None:
    """The README's test command installs handgrad editable (``pip install -e``), so
    ``pytest`` imports the files of this checkout: a plain ``pip install .`` would
    test a copy in site-packages, and a learner's edit to ``src/`` would go unseen."""
    from pathlib import Path

    import handgrad

    root = Path(__file__).resolve().parents[1]
    where = Path(handgrad.__file__).resolve()
    assert where.is_relative_to(root / "src"), (
        f"the tests import handgrad from {where}, not from this checkout's src/: "
        f"install it editable (pip install -e '{root}[test]')"
    )
    readme = (root / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert quickstart[1] == 'pip install -e ".[test]" && pytest'
