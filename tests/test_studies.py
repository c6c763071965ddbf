"""``handgrad study``: the registry, the command, the report, and the single-neuron study.

Each other study has its own ``tests/test_study_<name>.py`` that runs it with
``--quick`` and asserts the numbers of its table.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from handgrad.cli import main
from handgrad.studies import STUDIES, Context, Table, find, run_study
from handgrad.studies.single_neuron import perceptron

pytest.importorskip("matplotlib")


TESTS = Path(__file__).resolve().parent


def test_registry_entries_are_complete() -> None:
    names = [s.name for s in STUDIES]
    assert len(names) == len(set(names))
    for study in STUDIES:
        module = importlib.import_module(study.module)
        assert callable(module.run), study.name
        assert module.__doc__ and module.__doc__.startswith(f"{study.name}:"), study.name
        assert study.summary and study.full_time and study.quick_time
        assert (TESTS / f"test_study_{study.name.replace('-', '_')}.py").exists() or (
            study.name == "single-neuron"  # tested below
        ), f"{study.name} has no test file"


def test_unknown_study_names_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KeyError, match="did you mean 'single-neuron'"):
        find("single_neuron")
    assert main(["study", "singel-neuron"]) == 2
    err = capsys.readouterr().err
    assert "unknown study 'singel-neuron' (did you mean 'single-neuron'?)" in err
    assert "Traceback" not in err


def test_list_shows_every_study_with_its_times(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["study", "full", "--quick", "what", "it", "shows"]
    assert [line.split()[0] for line in out[1:]] == [s.name for s in STUDIES]


def test_missing_dependency_is_named_with_its_install_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert main(["study", "single-neuron", "--quick", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    from handgrad._install import install_hint  # this copy's command (a checkout's here)

    assert f"needs matplotlib, not installed (matplotlib: {install_hint('plots')})" in err
    assert not (tmp_path / "s").exists()


def test_table_alignment_and_markdown() -> None:
    table = Table(["model", "accuracy", "time"], [["mlp", "98.2%", "1.5 s"], ["knn", "97%", "-"]])
    assert table.numeric() == [False, True, True]
    assert table.text().splitlines() == [
        "model  accuracy   time",
        "mlp       98.2%  1.5 s",
        "knn         97%      -",
    ]
    assert table.markdown().splitlines()[1] == "| --- | ---: | ---: |"
    with pytest.raises(ValueError, match="has 2 cells, head 3"):
        Table(["a", "b", "c"], [["1", "2"]])


def test_perceptron_learns_and_or_and_provably_cycles_on_xor() -> None:
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    for outputs in ([0, 0, 0, 1], [0, 1, 1, 1]):
        result = perceptron(x, np.array(outputs))
        assert result.learned and result.cycle is None
        assert [int(xi @ result.w + result.b > 0) for xi in x] == outputs
    xor = perceptron(x, np.array([0, 1, 1, 0]), max_epochs=1000)
    assert not xor.learned and xor.cycle is not None
    first, again = xor.cycle
    assert first < again < 1000  # found the repetition long before the epoch limit


def test_single_neuron_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "neuron"
    assert main(["study", "single-neuron", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "XOR   w = [-1, 0], b = 1  after epoch 3 as after 2: cycles forever" in printed
    report = (out / "report.md").read_text()
    assert report.startswith("# One neuron")
    assert "`handgrad study single-neuron --quick`" in report
    assert "![perceptron](perceptron.png)" in report
    assert (out / "perceptron.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = run_study("single-neuron", Context(seed=0, quick=True, out=tmp_path / "again"))
    assert result.numbers["AND"].learned and result.numbers["OR"].learned
    assert not result.numbers["XOR"].learned
    assert result.numbers["logistic_gap"] < 1e-6  # gradient descent = Newton's solution
    assert result.numbers["linear_gap"] < 1e-6  # = numpy.linalg.lstsq, the bar


def test_same_seed_same_table(tmp_path: Path) -> None:
    tables = [
        run_study("single-neuron", Context(seed=5, quick=True, out=tmp_path / str(i))).text()
        for i in range(2)
    ]
    assert tables[0] == tables[1]
    other = run_study("single-neuron", Context(seed=6, quick=True, out=tmp_path / "6")).text()
    assert other != tables[0]  # the seed reaches the data


def test_the_docs_show_every_study_with_its_figure() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs"
    text = (docs / "studies.md").read_text(encoding="utf-8")
    for i, study in enumerate(STUDIES, 1):
        assert f"\n## {i}. {study.name}\n" in text, study.name
        assert f"`handgrad study {study.name}`, " in text, study.name
        assert f"| [{study.name}](#{i}-{study.name}) | {study.summary} |" in text, study.name
        assert (docs / "studies" / f"{study.name}.png").is_file(), study.name


def test_out_never_overwrites_a_report_md_it_did_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--out .` in a project with its own report.md must not replace the user's file
    notes = tmp_path / "report.md"
    notes.write_text("# My notes\n\nimportant\n")
    monkeypatch.chdir(tmp_path)
    assert main(["study", "single-neuron", "--quick", "--out", "."]) == 2
    err = capsys.readouterr().err
    assert "report.md exists and is not a report of handgrad study; not overwriting" in err
    assert notes.read_text() == "# My notes\n\nimportant\n"
    assert not (tmp_path / "perceptron.png").exists()  # refused before running
    # a report of an earlier study in the same folder is replaced, as before
    out = tmp_path / "again"
    assert main(["study", "single-neuron", "--quick", "--out", str(out)]) == 0
    assert main(["study", "single-neuron", "--quick", "--out", str(out)]) == 0
    assert (out / "report.md").read_text().startswith("# One neuron")
