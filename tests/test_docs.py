"""The Python in docs/cnn.md runs: a changed API or formula breaks this test, not a reader."""

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
