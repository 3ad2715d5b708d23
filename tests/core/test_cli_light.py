"""The CLI answers --help, `devices list` and `verify` without loading torch or TensorFlow: a
command's module is imported only when that command is used (edgexray/cli.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from edgexray.cli import COMMANDS, load_command, main

HEAVY = ("torch", "torchvision", "torch_pruning", "tensorflow")

# runs the click main with ARGS as `edgexray ARGS` would, then reports what was imported
PROBE = """
import json, sys
from edgexray.cli import main
try:
    main({args!r}, prog_name="edgexray")
except SystemExit as e:
    status = e.code
print(json.dumps({{"status": status, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def _probe(args: list[str]) -> dict:
    code = PROBE.format(args=args, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["build", "--help"],
        ["prune", "--help"],
        ["export", "--help"],
        ["devices", "list"],
        ["verify", "--help"],
    ],
    ids=" ".join,
)
def test_light_commands_never_import_torch_or_tensorflow(args):
    result = _probe(args)
    assert result["status"] in (0, None)
    assert result["heavy"] == [], f"edgexray {' '.join(args)} imported {result['heavy']}"


def test_verify_error_without_torch(tmp_path):
    """A verify run that stops at its first check (no manifest) also stays light."""
    result = _probe(["verify", str(tmp_path)])
    assert result["status"] not in (0, None)
    assert result["heavy"] == []


def test_listing_the_commands_imports_none():
    code = (
        "import json, sys; from edgexray.cli import main; "
        "names = sorted(main.commands); assert 'build' in main.commands; "
        f"print(json.dumps([names, [m for m in {HEAVY!r} if m in sys.modules]]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    names, heavy = json.loads(proc.stdout)
    assert names == sorted(e.name for e in COMMANDS) and heavy == []


def test_registry_matches_the_commands():
    """Every entry loads; its name and summary are the command's own, so the lazily written
    `edgexray --help` table is the one click would write from the loaded commands."""
    assert len({e.name for e in COMMANDS}) == len(COMMANDS)
    for entry in COMMANDS:
        cmd = load_command(entry)
        assert cmd.name == entry.name, entry
        assert cmd.short_help is None, f"{entry.name}: short_help would bypass the summary"
        assert cmd.help.split("\n\n")[0] == entry.summary, entry.name
        placeholder = click.Command(entry.name, help=entry.summary)
        for limit in (30, 45, 60, 200):
            assert placeholder.get_short_help_str(limit) == cmd.get_short_help_str(limit), entry.name


def test_every_command_answers_help():
    runner = CliRunner()
    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(e.name for e in COMMANDS)
    r = runner.invoke(main, ["--help"])
    assert r.exit_code == 0
    for entry in COMMANDS:
        assert f"  {entry.name} " in r.output
        r_cmd = runner.invoke(main, [entry.name, "--help"])
        assert r_cmd.exit_code == 0 and "Usage" in r_cmd.output, entry.name
        cmd = main.get_command(ctx, entry.name)
        for sub in getattr(cmd, "commands", {}):
            assert runner.invoke(main, [entry.name, sub, "--help"]).exit_code == 0, (entry.name, sub)
    assert main.get_command(ctx, "no-such-command") is None
