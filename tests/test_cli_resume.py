"""``handgrad train`` interrupted by a real signal, then ``--resume``d: the weights end bit
for bit as an uninterrupted run's; failed runs and failed saves lose nothing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad.checkpoint import load_checkpoint
from handgrad.cli import main
from handgrad.data.idx import read_idx, write_idx

# Runs the command line in a child that sends itself SIGNAL after its STEP-th training
# step (counted over the run), from inside training, as a user's Ctrl-C would land.
SIGNALLER = """
import os, signal, sys
from handgrad.callbacks import ProgressBar
from handgrad.cli import main
sig, at = getattr(signal, sys.argv[1]), int(sys.argv[2])
done = 0
def on_train_batch_end(self, batch, logs):
    global done
    done += 1
    if done == at:
        os.kill(os.getpid(), sig)
        if len(sys.argv) > 3 and sys.argv[3] == "twice":
            os.kill(os.getpid(), sig)
ProgressBar.on_train_batch_end = on_train_batch_end
sys.exit(main([a for a in sys.argv[3:] if a != "twice"]))
"""
STEPS = 22  # steps an epoch: 2,700 training images of small_mnist, batch 128


def _python(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=300, env=env
    )


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = handgrad.load(a).state_dict(), handgrad.load(b).state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def straight(small_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "straight.npz"
    done = _python("-m", "handgrad", "train", *_options(small_mnist), "--output", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _options(data: Path) -> list[str]:
    return ["--data-dir", str(data), "--epochs", "3", "--quiet", "--dropout", "0.1"]


@pytest.mark.parametrize(
    ("sig", "at", "code"),
    [("SIGINT", STEPS, 130), ("SIGINT", STEPS + 9, 130), ("SIGTERM", 2 * STEPS + 5, 143)],
    ids=["SIGINT-at-an-epoch-boundary", "SIGINT-mid-epoch", "SIGTERM-mid-epoch"],
)
def test_a_signalled_run_resumes_bit_for_bit(
    small_mnist: Path, straight: Path, tmp_path: Path, sig: str, at: int, code: int
) -> None:
    out, ckpt = tmp_path / "model.npz", tmp_path / "run.ckpt.npz"
    argv = [*_options(small_mnist), "--output", str(out), "--checkpoint", str(ckpt)]
    stopped = _python("-c", SIGNALLER, sig, str(at), "train", *argv)
    assert stopped.returncode == code, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert f"interrupted by {sig}" in stopped.stderr
    assert f"checkpoint saved to {ckpt}" in stopped.stderr
    command = stopped.stderr.split("resume with: ")[1].strip()
    assert command.startswith(f"handgrad train --resume {ckpt} --output {out} --quiet")
    assert not out.exists()  # an interrupted run is not a trained model
    state = load_checkpoint(ckpt)
    assert (state.epoch, state.step) == divmod(at, STEPS)
    where = f"after {state.epoch} epoch(s)" + (
        f" and {state.step} step(s) of the next:" if state.step else ":"
    )
    assert where in stopped.stderr

    resumed = _python("-m", "handgrad", *command.split()[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert _same_weights(out, straight)
    assert (
        handgrad.serialization.load_metadata(out)["history"]["loss"]
        == (handgrad.serialization.load_metadata(straight)["history"]["loss"])
    )


def test_without_checkpoint_option_an_interrupt_still_keeps_one(
    small_mnist: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.npz"
    stopped = _python(
        "-c", SIGNALLER, "SIGINT", "5", "train", *_options(small_mnist), "--output", str(out)
    )
    assert stopped.returncode == 130, stopped.stderr
    assert load_checkpoint(tmp_path / "m-checkpoint.npz").step == 5


def test_a_second_signal_stops_at_once_and_keeps_the_last_epochs_checkpoint(
    small_mnist: Path, tmp_path: Path
) -> None:
    """The second Ctrl-C does not wait for the step: the run stops mid-step, and the
    checkpoint written at the last epoch's end is left whole and named."""
    out, ckpt = tmp_path / "m.npz", tmp_path / "c.npz"
    argv = [*_options(small_mnist), "--output", str(out), "--checkpoint", str(ckpt)]
    stopped = _python("-c", SIGNALLER, "SIGINT", str(STEPS + 9), "twice", "train", *argv)
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert "SIGINT twice: stopped at once; the checkpoint of epoch 1, " in stopped.stderr
    assert f"resume with: handgrad train --resume {ckpt}" in stopped.stderr
    assert (load_checkpoint(ckpt).epoch, load_checkpoint(ckpt).step) == (1, 0)
    assert not out.exists()


def test_resume_refuses_other_settings_and_other_data(
    small_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "c.npz"
    argv = ["train", *_options(small_mnist), "--epochs", "1", "--checkpoint", str(ckpt)]
    assert main([*argv, "--output", str(tmp_path / "m.npz")]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(ckpt), "--lr", "0.1", "--no-save"]) == 2
    assert "--lr 0.1 differs from the checkpoint's (the default)" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "m.npz"), "--no-save"]) == 2
    assert "not a training checkpoint" in capsys.readouterr().err
    # the same --data-dir whose files changed since: refused, not trained on
    data = tmp_path / "data"
    shutil.copytree(small_mnist, data)
    argv = ["train", *_options(data), "--epochs", "1", "--checkpoint", str(ckpt), "--no-save"]
    assert main(argv) == 0
    labels = data / "t10k-labels-idx1-ubyte"  # the test set is not fingerprinted ...
    labels.write_bytes(labels.read_bytes())
    assert main(["train", "--resume", str(ckpt), "--no-save"]) == 0
    images = data / "train-images-idx3-ubyte.gz"  # ... the training set is
    write_idx(images, read_idx(images)[::-1].copy())
    capsys.readouterr()
    assert main(["train", "--resume", str(ckpt), "--no-save"]) == 2
    assert f"{ckpt}: the training data differ from the run's" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("optimizer", "lr"), [("sgd", "1000"), ("adam", "1e6"), ("rmsprop", "1e4"), ("lion", "1e5")]
)
def test_a_failed_run_exits_1_and_keeps_the_good_model(
    small_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], optimizer: str, lr: str
) -> None:
    """Runaway learning rates used to end "test accuracy 10.28% ... saved", exit 0,
    over the good model. Now: said plainly, exit 1, the old file untouched."""
    good = tmp_path / "model.npz"
    assert main(["train", *_options(small_mnist), "--epochs", "1", "--output", str(good)]) == 0
    before = good.read_bytes()
    capsys.readouterr()
    argv = ["train", *_options(small_mnist), "--output", str(good), "--optimizer", optimizer]
    assert main([*argv, "--lr", lr]) == 1
    err = capsys.readouterr().err
    said = re.search(
        r"handgrad train: training (stopped: non-finite .*lower learning rate|failed: test "
        r"accuracy [\d.]+% is chance level \(1 in 10: 10%\); the learning rate is likely far "
        r"too high|failed: the training loss ended at .* far above)",
        err,
    )
    assert said, err
    assert f"handgrad train: the model was not saved; {good} was left as it was" in err
    assert good.read_bytes() == before


def test_a_failed_final_save_names_the_path_and_the_checkpoint(
    small_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import handgrad.serialization as serialization

    real = serialization.save

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(serialization, "save", disk_full)
    ckpt = tmp_path / "c.npz"
    argv = ["train", *_options(small_mnist), "--epochs", "1", "--checkpoint", str(ckpt)]
    assert main([*argv, "--output", str(tmp_path / "m.npz")]) == 1
    err = capsys.readouterr().err
    assert f"could not save the trained model to {tmp_path / 'm.npz'}" in err
    assert "No space left on device" in err and f"the last checkpoint, {ckpt}" in err
    monkeypatch.setattr(serialization, "save", real)
    assert load_checkpoint(ckpt).epoch == 1


def test_signal_handlers_are_restored_after_training(small_mnist: Path, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["train", *_options(small_mnist), "--epochs", "1", "--no-save"]) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
