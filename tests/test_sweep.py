"""``handgrad sweep``: workers sharing one study, the trial budget, pruning, the table and the
best model, the search space, and bad input. On a 3,000-image MNIST slice with tiny networks."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from handgrad._install import install_hint
from handgrad.cli import main

optuna = pytest.importorskip(
    "optuna",
    reason='handgrad sweep needs optuna: pip install -e ".[sweep]" (the test extra has it)',
)

from optuna.trial import TrialState  # noqa: E402

from handgrad import sweep  # noqa: E402
from handgrad.serialization import load, load_metadata  # noqa: E402
from handgrad.sweep_space import Choice, Range, SearchSpace, SweepError, load_space  # noqa: E402

# A tiny network and one fixed batch size: a trial takes a fraction of a second.
TINY = ["--hidden", "16", "--batch-size", "32", "--quiet"]


def _argv(data: Path, tmp: Path, *options: str) -> list[str]:
    """A sweep on the slice in ``data``, its study and outputs in ``tmp``."""
    return [
        "sweep", "--data-dir", str(data), "--storage", str(tmp / "study.journal"),
        "--output", str(tmp / "best.npz"), *options,
    ]  # fmt: skip


def _study(tmp: Path, name: str = "handgrad-sweep") -> optuna.Study:
    return optuna.load_study(
        study_name=name, storage=sweep.open_storage(str(tmp / "study.journal"))
    )


def _states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


# -- several workers, one study ------------------------------------------------------------


def test_two_commands_share_one_study_and_run_exactly_the_trials(
    small_mnist: Path, tmp_path: Path
) -> None:
    # Two commands on one machine, as several machines would run them against a database:
    # the second joins the study the first created, while the first is still running.
    # trials long enough (half a second) that the second joins before the first is done
    argv = _argv(small_mnist, tmp_path, "--trials", "9", "--epochs", "3", "--no-save", "--quiet")
    argv += ["--hidden", "64", "--batch-size", "16"]
    command = [sys.executable, "-m", "handgrad", *argv]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while first.poll() is None and time.monotonic() < deadline:  # its first trial is done
        journal = tmp_path / "study.journal"
        if journal.exists() and _study(tmp_path).get_trials(states=(TrialState.COMPLETE,)):
            break
        time.sleep(0.05)
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    out_first, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, out_first + second.stderr
    trials = _study(tmp_path).get_trials()
    # exactly the budget, numbered 0..8, all finished, none failed
    assert sorted(t.number for t in trials) == list(range(9))
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, f"one command ran every trial: {second.stdout}"
    # both printed a table of the same study: the one that ended first may miss trials
    # the other was still running, never differ on one both show (rank column aside)
    tables = [out.split("\nrank")[1].split("\nbest:")[0] for out in (out_first, second.stdout)]
    rows = [{line.split()[1]: line.split()[2:] for line in t.strip().splitlines()[1:]}
            for t in tables]  # fmt: skip
    small, big = sorted(rows, key=len)
    assert all(big[trial] == cells for trial, cells in small.items())
    complete = {str(t.number) for t in trials if t.state == TrialState.COMPLETE}
    assert set(big) == complete and len(big) > 1


def test_n_jobs_processes_the_table_and_the_best_model(
    small_mnist: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # trials long enough (half a second) that the started process joins before the end
    argv = _argv(small_mnist, tmp_path, "--trials", "10", "--epochs", "3", "--n-jobs", "2")
    argv += ["--hidden", "48", "96", "--lr", "1e-3:3e-2", "--optimizer", "adam", "--quiet"]
    argv += ["--batch-size", "16", "--weight-decay", "0"]
    assert main(argv) == 0
    out = capfd.readouterr().out
    study = _study(tmp_path)
    trials = study.get_trials()
    assert len(trials) == 10 and set(_states(study)) <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # this process and one started
    best = sweep.ranked(study)[0]
    assert best.value == max(t.value for t in trials if t.state == TrialState.COMPLETE)

    # The table: a header, then the complete trials best first, with their parameters.
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    assert lines[head].split() == [
        "rank",
        "trial",
        "val",
        "acc",
        "lr",
        "hidden",
        "epochs",
        "seconds",
    ]
    first = lines[head + 1].split()
    assert first[:4] == ["1", str(best.number), f"{best.value:.2%}", f"{best.params['lr']:.3g}"]
    assert first[4:6] == [best.params["hidden"], str(best.user_attrs["epochs"])]
    assert len(lines[head + 1 :]) >= len(sweep.ranked(study))

    # The best model is saved, scores its trial's validation accuracy, and is the model that
    # the printed `handgrad train` command trains, bit for bit.
    model = load(tmp_path / "best.npz")
    meta = load_metadata(tmp_path / "best.npz")
    assert meta["trial"] == best.number and meta["val_accuracy"] == best.value
    command = next(line for line in lines if line.startswith("the same model: "))
    train = command.removeprefix("the same model: handgrad ").split()
    assert main([*train, "--output", str(tmp_path / "again.npz"), "--quiet"]) == 0
    again = load(tmp_path / "again.npz").state_dict()
    assert all(np.array_equal(v, again[k]) for k, v in model.state_dict().items())


def test_pruning_stops_weak_trials_a_third_of_the_way(small_mnist: Path, tmp_path: Path) -> None:
    # lr from 1e-5: the sampler's first ten trials are random, and the slow ones fall
    # below the median of the trials completed before them
    argv = _argv(small_mnist, tmp_path, "--trials", "10", "--epochs", "6", "--lr", "1e-5:1e-1")
    argv += ["--optimizer", "adam", "--weight-decay", "0", "--no-save"]
    argv += ["--plots", str(tmp_path / "plots")]
    assert main([*argv, *TINY]) == 0
    assert sweep.prune_epoch(6) == 2 and sweep.prune_epoch(3) == 1 and sweep.prune_epoch(1) is None
    study = _study(tmp_path)
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    complete = sweep.ranked(study)
    assert pruned and len(pruned) + len(complete) == 10
    for t in pruned:  # judged once, after epoch 2, against the trials completed before it
        assert sorted(t.intermediate_values) == [1, 2] and t.user_attrs["epochs"] == 2
        earlier = [c.intermediate_values[2] for c in complete if c.number < t.number]
        assert len(earlier) >= 5 and t.intermediate_values[2] < np.median(earlier)
    for t in complete:  # never judged again: every epoch ran
        assert sorted(t.intermediate_values) == list(range(1, 7))
        assert t.value == t.intermediate_values[6]
    # the figures, with the pruned trials in them
    for name in ("optimization_history", "val_curves", "param_importances"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_the_same_command_continues_the_study_and_refuses_other_settings(
    small_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(small_mnist, tmp_path, "--epochs", "1", "--no-save", *TINY)
    assert main([*argv, "--trials", "2"]) == 0
    assert main([*argv, "--trials", "3"]) == 0
    assert len(_study(tmp_path).get_trials()) == 3
    capsys.readouterr()
    assert main([*argv, "--trials", "3", "--epochs", "2"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "was made with another settings" in line
    assert "--study-name" in line and len(_study(tmp_path).get_trials()) == 3


def test_sigterm_fails_the_trials_under_way_and_the_same_command_continues(
    small_mnist: Path, tmp_path: Path
) -> None:
    argv = _argv(small_mnist, tmp_path, "--trials", "40", "--epochs", "3", "--n-jobs", "2")
    argv += ["--no-save", "--hidden", "64", "--batch-size", "16", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "handgrad", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:  # both processes in a trial
        journal = tmp_path / "study.journal"
        if journal.exists() and len(_study(tmp_path).get_trials(states=(TrialState.RUNNING,))) == 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.count("\n") == 1 and "interrupted" in err and "same command continues" in err
    states = _states(_study(tmp_path))
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 2
    # the failed trials do not count: the same command runs the budget, not more
    finished = len(states) - 2
    assert main([*argv, "--trials", str(finished + 1), "--epochs", "3"]) == 0
    states = _states(_study(tmp_path))
    assert len(states) == finished + 3 and states.count(TrialState.FAIL) == 2


def test_trials_left_running_by_a_killed_process_are_marked_failed(tmp_path: Path) -> None:
    study = optuna.create_study(storage=sweep.open_storage(str(tmp_path / "study.journal")))
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    for worker in (f"{host}:{gone.pid}", f"{host}:{os.getpid()}", f"elsewhere:{gone.pid}"):
        study.ask().set_user_attr("worker", worker)
    assert sweep.fail_orphans(study) == 1
    assert _states(study) == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]


# -- the search space ----------------------------------------------------------------------


def test_a_space_file_in_toml_or_json_and_flags_over_it(tmp_path: Path) -> None:
    toml = tmp_path / "space.toml"
    toml.write_text(
        "lr = {low = 1e-4, high = 0.1}\nbatch-size = [64, 128]\n"
        'hidden = [128, "256,128", [512, 256]]\noptimizer = "adam"\nweight_decay = "0,1e-4"\n'
    )
    as_json = tmp_path / "space.json"
    as_json.write_text(json.dumps({"lr": "1e-4:0.1", "batch_size": [64, 128],
        "hidden": [128, "256,128", [512, 256]], "optimizer": ["adam"],
        "weight-decay": [0, 1e-4]}))  # fmt: skip
    space = load_space(toml)
    assert space == load_space(as_json)
    assert space["lr"] == Range(1e-4, 0.1, log=True)
    assert space["hidden"] == Choice(("128", "256,128", "512,256"))
    full = SearchSpace(**space)
    assert full.searched() == ["lr", "batch_size", "hidden", "weight_decay"]
    assert full.fixed() == {"optimizer": "adam"}


def test_the_readmes_space_file_is_the_default_space(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Hyper-parameter sweeps") :]
    block = re.search(r"^```toml\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert block is not None
    (tmp_path / "space.toml").write_text(block.group(1))
    assert SearchSpace(**load_space(tmp_path / "space.toml")) == SearchSpace()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('lr = "0.1:1e-4"', "empty range"),
        ("learning_rate = [0.1]", "unknown parameter 'learning_rate'"),
        ('optimizer = ["adam", "adamm"]', "unknown optimizer 'adamm'"),
        ("hidden = {low = 1, high = 9}", "hidden takes a list of choices"),
        ("batch_size = [64, 0.5]", "whole number"),
        ("weight_decay = []", "no values"),
        ("lr = {low = 0.1}", "a range is {low, high, log}"),
        ("lr = [", "not valid TOML"),
    ],
)
def test_a_bad_space_file_is_named_with_the_reason(
    content: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "space.toml"
    path.write_text(content)
    with pytest.raises(SweepError, match=r"space\.toml") as info:
        load_space(path)
    assert message in str(info.value)


# -- bad input: one line, exit code 2 ------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--optimizer", "adam,nadam"], "unknown optimizer 'nadam'; choose from adagrad, adam"),
        (["--lr", "1e-1:1e-4"], "argument --lr: empty range 1e-1:1e-4"),
        (["--batch-size", "64,,128"], "has an empty value"),
        (["--weight-decay", "0:1e-3"], "log scale, so its low end must be above 0"),
        (["--hidden", "128", "0"], "layer sizes must be positive"),
        (["--storage", "sqlite:////no/such/dir/sweep.db"], "--storage sqlite:////no/such/dir"),
        (["--storage", "postgresql://me:s3cret@127.0.0.1:1/sweeps"], "cannot open it"),
        (["--storage", "{tmp}/missing/study.journal"], "does not exist"),
        (["--space", "{tmp}/space.yaml"], "give a .json or .toml file"),
        (["--storage", "{tmp}/space.yaml"], "space.yaml, line 1: not a sweep journal"),
        (["--storage", "{tmp}/other.json"], "other.json, line 1: not a sweep journal (a record"),
        (["--val-fraction", "0"], "val_fraction must be in (0, 1)"),
        (["--study-name", ""], "argument --study-name: expected a name such as mnist-sweep"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    options: list[str],
    message: str,
    small_mnist: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "space.yaml").write_text("lr: 0.1\n")
    (tmp_path / "other.json").write_text('{"a": 1}\n')  # JSON, but not optuna's journal
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    argv = [*_argv(small_mnist, tmp_path, "--trials", "1", "--epochs", "1", "--quiet"), *options]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's error: the value's own check
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0] and "s3cret" not in lines[0]
    assert not (tmp_path / "best.npz").exists()


def test_without_optuna_the_command_names_its_install(
    small_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import handgrad

    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` fails
    for module in ("handgrad.sweep", "handgrad.sweep_report"):  # imported afresh
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.delattr(handgrad, "sweep", raising=False)
    assert main(_argv(small_mnist, tmp_path, "--trials", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert install_hint("sweep") in err and "pip install optuna" in err and "\n" not in err


def test_the_command_line_does_not_import_optuna_until_a_sweep_runs() -> None:
    code = (
        "import sys; import handgrad; from handgrad.cli import build_parser; "
        "build_parser().parse_args(['sweep', '--lr', '1e-3:1e-1', '--optimizer', 'adam,sgd']); "
        "print('optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
