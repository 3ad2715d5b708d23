"""The `edgexray` command line. Each stage's command lives next to its code; this file only
names them, and turns an EdgeXrayError into one line on stderr and its exit status
(runtime/errors.py documents them).

A command's module is imported only when that command runs or shows its own help, so
`edgexray --help`, `edgexray devices list` and `edgexray verify` never load torch."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass

import click

from edgexray import __version__
from edgexray.runtime.errors import EdgeXrayError


@dataclass(frozen=True)
class CommandEntry:
    """Where a subcommand lives, and the first paragraph of its help: `edgexray --help` shows it
    without importing the module (tests/core/test_cli_light.py checks it matches the command's own)."""

    name: str
    target: str  # "module:attribute"
    summary: str


COMMANDS = (
    CommandEntry("data", "edgexray.commands:data", "Data helpers (synthetic X-rays, dataset EDA)."),
    CommandEntry(
        "train",
        "edgexray.commands:train",
        "Train a classifier on an image folder; writes OUT/model.pt and its splits.",
    ),
    CommandEntry(
        "evaluate",
        "edgexray.commands:evaluate",
        "Accuracy, macro F1, per-class sensitivity/specificity, ROC/PR-AUC, plots, Grad-CAM.",
    ),
    CommandEntry(
        "prune",
        "edgexray.prune.cli:prune",
        "Remove whole channels from CHECKPOINT so the network physically shrinks.",
    ),
    CommandEntry(
        "export",
        "edgexray.export.cli:export",
        "Export CHECKPOINT to ONNX / TFLite and check every file against the PyTorch model.",
    ),
    CommandEntry(
        "bench",
        "edgexray.bench.cli:bench",
        "Latency, memory and accuracy of an artifact (folder or .zip) or a model file.",
    ),
    CommandEntry(
        "compare",
        "edgexray.bench.cli:compare",
        "The shipped artifact against what a user would run without edgexray.",
    ),
    CommandEntry(
        "devices",
        "edgexray.devices.cli:devices",
        "Device profiles: the targets `edgexray build --target` accepts.",
    ),
    CommandEntry(
        "build",
        "edgexray.commands:build",
        "Train or load, prune, fine-tune, export, check, benchmark and bundle for a device.",
    ),
    CommandEntry(
        "compare-archs",
        "edgexray.commands:compare_archs",
        "Train several architectures on the same patient-grouped splits; one table and plot.",
    ),
    CommandEntry(
        "verify",
        "edgexray.bench.verify_cli:verify",
        "Run ARTIFACT's run.py on the aarch64 instruction set under QEMU and compare with this host.",
    ),
)


def load_command(entry: CommandEntry) -> click.Command:
    module_name, attr = entry.target.split(":")
    return getattr(importlib.import_module(module_name), attr)


class LazyCommands(MutableMapping):
    """The group's name -> command mapping; a command's module is imported when its value is
    first read, so listing names or testing membership imports nothing."""

    def __init__(self, entries: tuple[CommandEntry, ...]):
        self._entries = {entry.name: entry for entry in entries}
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            self._loaded[name] = load_command(self._entries[name])
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._entries.pop(name, None)
        self._loaded.pop(name, None)

    def get(self, name: str, default=None):
        # not Mapping.get: it would turn a KeyError raised while importing into "no such command"
        return self[name] if name in self else default

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._loaded

    def __iter__(self):
        return iter(dict.fromkeys([*self._entries, *self._loaded]))

    def __len__(self) -> int:
        return len(self._entries.keys() | self._loaded.keys())

    def peek(self, name: str) -> click.Command:
        """The command if loaded, else a stand-in carrying its summary (imports nothing)."""
        if name in self._loaded:
            return self._loaded[name]
        return click.Command(name, help=self._entries[name].summary)


class EdgeXrayGroup(click.Group):
    """Lists its commands without importing them; prints user errors without a traceback and
    exits with their documented status."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's command table, written from the summaries so no command module is imported."""
        commands = [(name, self.commands.peek(name)) for name in self.list_commands(ctx)]
        commands = [(name, cmd) for name, cmd in commands if not cmd.hidden]
        limit = formatter.width - 6 - max(len(name) for name, _ in commands)
        with formatter.section("Commands"):
            formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in commands])

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeXrayError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(
    cls=EdgeXrayGroup,
    commands=LazyCommands(COMMANDS),
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="edgexray")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """edgexray: X-ray classifiers from training to a verified edge artifact.

    \b
    Typical flow:
      edgexray build --target rpi4 --data xrays/      # everything, one command
      edgexray train / prune / export / bench         # or stage by stage
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


if __name__ == "__main__":
    main()
