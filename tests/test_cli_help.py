"""`--help` of every command: the first thing a user runs must never crash.

Help texts are rendered as rich markup, so a docstring with square brackets
(``ROOT[/UNDER]``) crashed `oodbench datalists --help` with a MarkupError. The tree is
walked from the click command typer builds, so a command added later is covered too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from oodbench.cli.app import app
from tests.conftest import ROOT
from tests.faults_catalogue import catalogue


def command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `command`, the root itself included (``()``). A group
    has ``commands`` (typer ships its own copy of click, so no isinstance check)."""
    paths = [prefix]
    for name in sorted(getattr(command, "commands", None) or {}):
        paths += command_paths(command.commands[name], (*prefix, name))
    return paths


ROOT_COMMAND = typer.main.get_command(app)
COMMANDS = command_paths(ROOT_COMMAND)
STAGES = sorted(p.name for p in (ROOT / "stages").glob("*.py"))


def test_the_walk_finds_every_command() -> None:
    """The parametrization below covers the sub-commands, not only the top level."""
    assert ("datalists", "from-folder") in COMMANDS
    assert ("datalists", "classes") in COMMANDS
    assert {("report",), ("predict",), ("tune",), ("pipeline",)} <= set(COMMANDS)
    assert len(STAGES) >= 7 and "extract.py" in STAGES


def _resolve(path: tuple[str, ...]) -> Any:
    command = ROOT_COMMAND
    for name in path:
        command = command.commands[name]
    return command


@catalogue(
    "params",
    "a user asks for `--help` of any `oodbench` command or sub-command",
    "the help is printed, exit 0 (help texts are checked to render as rich markup)",
)
@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "oodbench")
def test_help_of_every_command(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command = _resolve(path)
    summary = (command.help or "").strip().splitlines()
    if summary:  # the first words of the docstring are shown
        assert " ".join(summary[0].split()[:3]) in " ".join(result.output.split())


def test_help_through_the_installed_entry_point() -> None:
    """The real `oodbench` process (rich rendering on a pipe, no test runner around it)."""
    for args in (["--help"], ["datalists", "--help"], ["datalists", "from-folder", "--help"]):
        result = subprocess.run(
            ["oodbench", *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "Usage: oodbench" in result.stdout and not result.stderr
    assert "ROOT/UNDER" in result.stdout


@pytest.mark.parametrize("script", STAGES)
def test_help_of_every_stage_script(script: str, tmp_path: Path) -> None:
    """`python stages/<kind>.py --help` works anywhere (no params.yaml needed)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / script), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ") and script in result.stdout.splitlines()[0]
    assert not list(tmp_path.iterdir())  # asking for help writes nothing
