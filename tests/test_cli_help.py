"""Every option of the commands people script with says what it does and its default."""

from __future__ import annotations

import argparse

import pytest

from handgrad.cli import build_parser


def _subparser(parser: argparse.ArgumentParser, path: list[str]) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("command", [["lab", "grade"], ["kaggle"], ["train"]], ids=" ".join)
def test_every_option_has_help_with_its_default(command: list[str]) -> None:
    parser = _subparser(build_parser(), command)
    missing = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)):
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            continue
        if not action.help or "default" not in action.help:
            missing.append(action.option_strings[-1])
    assert not missing, f"handgrad {' '.join(command)}: no default in the help of {missing}"
