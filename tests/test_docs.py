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
