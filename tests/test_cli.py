"""The ``weightzoo`` command line and the Ray job entry points: one ``main`` per command."""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli

JOBS = Path(__file__).parents[1] / "jobs"


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_explains_itself_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: weightzoo {command}")
    examples = [line for line in out.splitlines() if line.startswith("    ") and ("weightzoo " in line or "serve" in line)]
    assert examples, f"weightzoo {command} --help shows no example"


def test_every_job_entry_point_runs_the_command_of_the_same_code():
    modules = {module for module, _ in cli.COMMANDS.values()}
    for path in sorted(JOBS.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"job_{path.stem}", path)
        job = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(job)
        assert f"pipeline.commands.{path.stem}" in modules, f"jobs/{path.name} is no weightzoo command"
        assert job.main is importlib.import_module(f"pipeline.commands.{path.stem}").main


def test_the_installed_command_lists_every_subcommand_and_refuses_an_unknown_one():
    exe = Path(sys.executable).with_name("weightzoo")
    assert exe.exists(), "the console script is installed with the project (pip install -e .)"
    listed = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert listed.returncode == 0 and all(f"  {c} " in listed.stdout for c in cli.COMMANDS)
    wrong = subprocess.run([str(exe), "embedd"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "unknown command 'embedd'" in wrong.stderr
