"""What the study tests share: one BLAS thread, and running a study through the command
line while keeping its Report (so a test asserts numbers, not parsed text)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import handgrad.studies
from handgrad.cli import main
from handgrad.studies import Report


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread() -> Iterator[None]:
    """Small matrix products on a busy machine: one BLAS thread, as `handgrad study` uses."""
    with handgrad.threads(1):  # restored after the module, not kept as a user's choice
        yield


def run_command(name: str, out: Path, *args: str) -> tuple[Report, str]:
    """``handgrad study NAME --quick --out OUT ARGS``: the Report it made and what it printed."""
    reports: list[Report] = []
    original = handgrad.studies.run_study

    def keep(study: str, ctx: Any) -> Report:
        reports.append(original(study, ctx))
        return reports[-1]

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(handgrad.studies, "run_study", keep)
        assert main(["study", name, "--quick", "--out", str(out), *args]) == 0
    (report,) = reports
    return report, printed.getvalue()
