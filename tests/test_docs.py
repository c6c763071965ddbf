"""The Python in docs/cnn.md and in docstring examples runs: a changed API or formula
breaks this test, not a reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks(name: str) -> list[str]:
    return BLOCK.findall((DOCS / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["cnn.md"])
def test_python_blocks_run(name: str) -> None:
    blocks = _blocks(name)
    assert blocks, f"{name} has no python block"
    namespace: dict[str, object] = {}
    for code in blocks:
        exec(compile(code, f"{DOCS / name}", "exec"), namespace)


def _modules_with_examples() -> list[str]:
    src = Path(__file__).resolve().parents[1] / "src"
    return sorted(
        ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        for path in (src / "handgrad").rglob("*.py")
        if ">>>" in path.read_text(encoding="utf-8")
    )


@pytest.mark.parametrize("module_name", _modules_with_examples())
def test_docstring_examples_run(module_name: str) -> None:
    import doctest
    import importlib

    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, module_name
    assert result.failed == 0, f"{module_name}: {result.failed} failing example(s)"


TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")


def test_robustness_table_names_tests_that_exist() -> None:
    """docs/robustness.md pairs every fault with the test that checks it: each row
    names at least one test, and each named test is a function in that file."""
    root = DOCS.parent
    rows = [
        line
        for line in (DOCS / "robustness.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| ") and not line.startswith("| Fault") and "---" not in line
    ]
    assert len(rows) >= 40, len(rows)
    missing = []
    for row in rows:
        refs = TEST_REF.findall(row.rsplit(" | ", 1)[-1])
        assert refs, f"a row names no test: {row[:100]}"
        for path, name in refs:
            source = (root / path).read_text(encoding="utf-8")
            if not re.search(rf"^(async )?def {name}\(", source, re.MULTILINE):
                missing.append(f"{path}::{name}")
    assert not missing, missing
