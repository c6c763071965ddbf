"""The tutorial in docs/tutorial runs, and prints exactly what it shows.

Each chapter is a Markdown file. Its ```python blocks run in order in one
namespace per chapter, and each block's printed output must equal, character for
character, the ```text block that immediately follows it (a block with no text
block after it must print nothing). So every number the tutorial shows comes
from the code beside it, and a changed formula in the library breaks this test
rather than a reader's trust: ``test_a_changed_formula_breaks_its_chapter``
changes one library function per chapter and checks that the chapter fails.

Also checked: every ``handgrad.x.y`` named in backticks imports; every decimal
number in the prose appears in the chapter's code or output; every image and
relative link resolves; the index links every chapter.

To rewrite the output blocks and the images after a deliberate change, run
``python tests/test_tutorial.py --write`` and read the diff (prose numbers are
not rewritten: the prose-number test will name the ones that moved).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import io
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial"
CHAPTERS = sorted(p for p in TUTORIAL.glob("[0-9][0-9]-*.md"))
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@dataclass
class Block:
    code: str
    line: int  # line of the code's first line in the Markdown file
    expected: str | None  # the text block right after it, if any
    expected_span: tuple[int, int] | None  # where that text block's body sits in the file


def parse(text: str, where: str) -> list[Block]:
    """The chapter's python blocks, each with the text block that shows its output."""
    fences = list(FENCE.finditer(text))
    blocks: list[Block] = []
    claimed: set[int] = set()
    for k, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        expected, span = None, None
        nxt = fences[k + 1] if k + 1 < len(fences) else None
        if (
            nxt is not None
            and nxt.group(1) == "text"
            and not text[fence.end() : nxt.start()].strip()
        ):
            expected, span = nxt.group(2), nxt.span(2)
            claimed.add(k + 1)
        line = text.count("\n", 0, fence.start(2)) + 1
        blocks.append(Block(fence.group(2), line, expected, span))
    for k, fence in enumerate(fences):
        if fence.group(1) == "text" and k not in claimed:
            line = text.count("\n", 0, fence.start()) + 1
            raise AssertionError(
                f"{where}:{line}: a text block that follows no python block; every output "
                "shown must be printed by the code right above it"
            )
    return blocks


def needs_matplotlib(code: str) -> bool:
    return "matplotlib" in code


@contextlib.contextmanager
def _isolated() -> Iterator[None]:
    """Leave NumPy's print options and error state as they were."""
    with np.printoptions(), np.errstate():
        yield


def run_chapter(path: Path) -> Iterator[tuple[Block, str]]:
    """Run every python block of ``path`` in order in a fresh namespace.

    Yields each block with what it printed, as soon as it has run. The plotting
    blocks write ``img/*.png`` below the current directory.
    """
    text = path.read_text(encoding="utf-8")
    namespace: dict[str, Any] = {"__name__": "__main__"}  # as when run as a script
    with _isolated():
        for block in parse(text, path.name):
            if needs_matplotlib(block.code) and not HAS_MATPLOTLIB:
                continue
            # pad with newlines so that a traceback names the Markdown file's own line
            code = compile("\n" * (block.line - 1) + block.code, str(path), "exec")
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(code, namespace)
            yield block, out.getvalue()


def check_chapter(path: Path) -> None:
    """Run the chapter; raise AssertionError at the first block whose output differs."""
    for block, printed in run_chapter(path):
        expected = block.expected if block.expected is not None else ""
        if printed != expected:
            where = f"{path.name}:{block.line}"
            if block.expected is None:
                raise AssertionError(
                    f"{where}: the block printed output but no text block follows it:\n{printed}"
                )
            diff = "\n".join(
                difflib.unified_diff(
                    expected.splitlines(), printed.splitlines(), "shown", "printed", lineterm=""
                )
            )
            raise AssertionError(f"{where}: printed output differs from the text block:\n{diff}")


def test_chapters_one_to_nine_and_the_index_exist() -> None:
    numbers = [p.name[:2] for p in CHAPTERS]
    assert [f"{i:02d}" for i in range(1, 10)] == [n for n in numbers if n <= "09"]
    assert (TUTORIAL / "README.md").exists()


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_prints_what_it_shows(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = parse(path.read_text(encoding="utf-8"), path.name)
    assert blocks, f"{path.name} has no python block"
    check_chapter(path)
    # the figures the chapter draws are the ones it shows, and they are committed
    shown = set(re.findall(r"!\[[^\]]*\]\((img/[^)]+)\)", path.read_text(encoding="utf-8")))
    drawn = {p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("img/*")}
    if HAS_MATPLOTLIB:
        assert drawn == shown, f"{path.name} draws {sorted(drawn)} but shows {sorted(shown)}"
    for name in shown:
        assert (TUTORIAL / name).is_file(), f"{path.name} shows {name}, which is not committed"


def _prose(text: str) -> str:
    """The Markdown outside fenced blocks."""
    return FENCE.sub("", text)


NUMBER = re.compile(r"(?<![\w.])-?(?:\d+\.\d+(?:e[-+]?\d+)?|\d+e[-+]?\d+)(?![\w.])")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_numbers_in_the_prose_are_printed_or_in_the_code(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    shown = set()
    for fence in FENCE.finditer(text):
        for number in NUMBER.findall(fence.group(2)):
            shown.add(number)
            shown.add(number.split("e")[0])  # 1.8e+308 is shown as 1.8 x 10^308 in prose
    prose_numbers = {n.lstrip("-") for n in NUMBER.findall(_prose(text))}
    shown = {n.lstrip("-") for n in shown}
    missing = sorted(prose_numbers - shown)
    assert not missing, f"{path.name}: numbers in the prose that no block prints: {missing}"


REFERENCE = re.compile(r"`(handgrad(?:\.[A-Za-z_]\w*)+)")


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and get the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_named_function_exists() -> None:
    names = set()
    for path in [*CHAPTERS, TUTORIAL / "README.md"]:
        names.update(REFERENCE.findall(path.read_text(encoding="utf-8")))
    assert len(names) > 20
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, f"the tutorial names what handgrad does not have: {missing}"


def test_links_and_images_resolve() -> None:
    missing = []
    for path in [*CHAPTERS, TUTORIAL / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _prose(path.read_text("utf-8"))):
            if "://" not in target and not (path.parent / target).exists():
                missing.append(f"{path.name} -> {target}")
    assert not missing, f"links to files that do not exist: {missing}"


def test_the_index_links_every_chapter() -> None:
    index = (TUTORIAL / "README.md").read_text(encoding="utf-8")
    for path in CHAPTERS:
        assert f"]({path.name})" in index, f"README.md does not link {path.name}"
    assert "](10-custom-layer.md)" in index


# -- a changed formula breaks its chapter ------------------------------------------------
# One wrong formula per chapter, each a classic slip, patched into the library
# function that the chapter compares its own from-scratch version with.


def _mse_backward_without_the_2(self: Any, dloss: float = 1.0) -> np.ndarray:
    d = self._cached()
    return d * (dloss / d.size)  # d/dx (x - y)^2 is 2 (x - y)


def _tanh_backward_with_a_sign_slip(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dout * (1 + y * y)  # 1 - y^2


def _sigmoid_backward_without_1_minus_y(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    return dout * y  # y (1 - y)


def _softmax_backward_without_the_sum(
    dout: np.ndarray, y: np.ndarray, axis: int = -1
) -> np.ndarray:
    return y * dout  # y * (dout - sum(dout * y))


def _relu_backward_left_out(
    dout: np.ndarray, y: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    return np.multiply(dout, 1, out=out)  # the lab's most common bug


def _kaiming_uniform_divided(
    shape: tuple[int, ...], rng: np.random.Generator, **kwargs: Any
) -> np.ndarray:
    bound = np.sqrt(3.0) / np.sqrt(2.0 / shape[1])  # divides by the He factor
    return rng.uniform(-bound, bound, size=shape).astype(kwargs.get("dtype", np.float32))


def _adam_without_bias_correction(
    p: np.ndarray, g: np.ndarray, state: dict[str, Any], **kw: Any
) -> None:
    if "step" not in state:
        state.update(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
    state["step"] += 1
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m[...] = kw["beta1"] * m + (1 - kw["beta1"]) * g
    v[...] = kw["beta2"] * v + (1 - kw["beta2"]) * g * g
    p -= kw["lr"] * m / (np.sqrt(v) + kw["eps"])


def _normalize_backward_without_the_variance_term(
    dxhat: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray, axes: tuple[int, ...]
) -> np.ndarray:
    return inv_std * (dxhat - dxhat.mean(axis=axes, keepdims=True))


def _col2im_that_assigns(
    dcols: np.ndarray,
    padded_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    out_hw: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> np.ndarray:
    from handgrad.nn._spatial import offset_view

    n, _, _, c = padded_shape
    d6 = dcols.reshape(n, *out_hw, *kernel, c)
    dxp = np.zeros(padded_shape, dtype=dcols.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            # = where += belongs: overlapping windows keep only the last contribution
            offset_view(dxp, i, j, out_hw, stride, dilation)[...] = d6[:, :, :, i, j, :]
    return dxp


MUTATIONS = [
    ("01", "handgrad.nn.losses.MSELoss.backward", _mse_backward_without_the_2),
    ("02", "handgrad.nn.functional.tanh_backward", _tanh_backward_with_a_sign_slip),
    ("03", "handgrad.nn.functional.sigmoid_backward", _sigmoid_backward_without_1_minus_y),
    ("04", "handgrad.nn.functional.softmax_backward", _softmax_backward_without_the_sum),
    ("05", "handgrad.nn.functional.relu_backward", _relu_backward_left_out),
    ("06", "handgrad.nn.init.kaiming_uniform", _kaiming_uniform_divided),
    ("07", "handgrad.optim.adam.adam_update", _adam_without_bias_correction),
    (
        "08",
        "handgrad.nn.normalization.normalize_backward",
        _normalize_backward_without_the_variance_term,
    ),
    ("09", "handgrad.nn.conv.col2im", _col2im_that_assigns),
]


def test_every_chapter_has_a_mutation() -> None:
    assert sorted(m[0] for m in MUTATIONS) == [p.name[:2] for p in CHAPTERS if p.name < "10"]


@pytest.mark.parametrize(
    ("chapter", "target", "wrong"), MUTATIONS, ids=[m[1].split(".", 2)[-1] for m in MUTATIONS]
)
def test_a_changed_formula_breaks_its_chapter(
    chapter: str,
    target: str,
    wrong: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (path,) = [p for p in CHAPTERS if p.name.startswith(chapter)]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(target, wrong)
    with pytest.raises(AssertionError, match="printed output differs"):
        check_chapter(path)


# -- rewriting the output blocks ---------------------------------------------------------


def write_outputs(path: Path, image_dir: Path) -> None:
    """Rewrite ``path``'s text blocks with what its code prints now; images into ``image_dir``."""
    text = path.read_text(encoding="utf-8")
    cwd = Path.cwd()
    os.chdir(image_dir.parent)
    try:
        results = list(run_chapter(path))
    finally:
        os.chdir(cwd)
    edits = []
    for block, printed in results:
        if block.expected_span is not None:
            edits.append((block.expected_span, printed))
        elif printed:
            raise SystemExit(f"{path.name}:{block.line}: prints, but has no text block after it")
    for (start, end), printed in sorted(edits, reverse=True):
        text = text[:start] + printed + text[end:]
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/test_tutorial.py --write")
    for chapter in CHAPTERS:
        print(chapter.name)
        write_outputs(chapter, TUTORIAL / "img")
