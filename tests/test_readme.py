"""The README's "Using the library" runs as written, and prints what it shows.

Its python blocks run in order in one namespace, in a scratch directory (they write
``mnist.npz`` and ``training_log.csv``), with ``load_mnist`` serving a 600-image
slice of MNIST so the 15-epoch example takes a second: the code itself runs
unchanged. A block followed by a ```text block must print exactly that text.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

import handgrad.data
from handgrad.data import MNISTData, load_mnist

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _using_the_library() -> list[tuple[str, str | None, int]]:
    """``(code, the text block right after it or None, line)`` for each python block
    of the section (up to its input-policy subsection, tested in test_input_policy)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Using the library")
    end = text.index("### What fit and predict take", start)
    fences = list(FENCE.finditer(text, start, end))
    blocks = []
    for k, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        nxt = fences[k + 1] if k + 1 < len(fences) else None
        shown = None
        if nxt is not None and nxt.group(1) == "text":
            assert not text[fence.end() : nxt.start()].strip(), "prose between code and output"
            shown = nxt.group(2)
        blocks.append((fence.group(2), shown, text.count("\n", 0, fence.start(2)) + 1))
    return blocks


@pytest.fixture
def small_data(monkeypatch: pytest.MonkeyPatch) -> MNISTData:
    full = load_mnist()
    small = MNISTData(full.x_train[:600], full.y_train[:600], full.x_test[:200], full.y_test[:200])
    monkeypatch.setattr(handgrad.data, "load_mnist", lambda *args, **kwargs: small)
    return small


def test_using_the_library_runs_and_prints_what_it_shows(
    small_data: MNISTData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = _using_the_library()
    assert len(blocks) == 3, "the fit example, the summary, the manual loop"
    assert any(shown is not None and "Total params" in shown for _, shown, _ in blocks)
    namespace: dict[str, object] = {"__name__": "__main__"}
    printed = []
    for code, shown, line in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile("\n" * (line - 1) + code, str(ROOT / "README.md"), "exec"), namespace)
        printed.append(out.getvalue())
        if shown is not None:
            assert out.getvalue() == shown, f"README.md:{line}: printed\n{out.getvalue()}"
    # the fit example: validation_split held out the last 10%, the schedule fit its steps
    history = namespace["history"]
    assert len(history["val_loss"]) == 15  # type: ignore[index]
    rows = (tmp_path / "training_log.csv").read_text().splitlines()
    assert rows[0] == "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds" and len(rows) == 16
    assert (tmp_path / "mnist.npz").exists()
    # the manual loop: two epochs of batches, then a model that learned something
    epochs = [line for line in printed[2].splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2
    assert float(re.findall(r"'accuracy': ([\d.]+)", epochs[-1])[0]) > 0.6
    assert isinstance(namespace["xb"], np.ndarray) and namespace["xb"].dtype == np.float32


def test_the_manual_loop_takes_the_batches_fit_takes() -> None:
    """``batches(x, y, B, rng=g)`` per epoch gives the order ``fit(..., batch_size=B,
    rng=g)`` trains on (both draw ``g.permutation(N)`` each epoch)."""
    from handgrad import nn, optim
    from handgrad.callbacks import Callback
    from handgrad.data import batches
    from handgrad.train import fit

    x = np.random.default_rng(0).normal(size=(25, 2)).astype(np.float32)
    y = np.arange(25) % 3
    seen: list[np.ndarray] = []

    class Spy(Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
            order = self.trainer.order
            assert order is not None
            seen.append(order[batch * 4 : (batch + 1) * 4].copy())

    model = nn.Sequential(nn.Linear(2, 3, rng=0))
    opt = optim.SGD(model.parameters(), lr=0.1)
    fit(model, nn.CrossEntropyLoss(), opt, (x, y), epochs=3, batch_size=4,
        rng=np.random.default_rng(7), callbacks=[Spy()], verbose=0)  # fmt: skip
    rng = np.random.default_rng(7)
    mine = [yb for _ in range(3) for _, yb in batches(np.arange(25), np.arange(25), 4, rng=rng)]
    assert len(mine) == len(seen) == 21
    for a, b in zip(mine, seen, strict=True):
        np.testing.assert_array_equal(a, b)
