"""The `edgexray` command line. Each stage's command lives next to its code; this file only
names them, and turns an EdgeXrayError into one line on stderr and its exit status
(runtime/errors.py documents them).

A command's module is imported only when that command runs or shows its own help, so
`edgexray --help`, `edgexray devices list` and `edgexray verify` never load torch."""
from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass

import click

from edgexray import __version__
from edgexray.runtime.errors import EdgeXrayError


@dataclass(frozen=True)
class CommandEntry:
    """Where a subcommand lives, and the first paragraph of its help: `edgexray --help` shows it
    without importing the module (tests/test_cli_light.py checks it matches the command's own)."""

    name: str
    target: str  # "module:attribute"
    summary: str


COMMANDS = (
    CommandEntry("data", "edgexray.commands:data", "Data helpers (synthetic X-rays)."),
    CommandEntry("train", "edgexray.commands:train",
                 "Train a classifier on an image folder; writes OUT/model.pt and its splits."),
    CommandEntry("evaluate", "edgexray.commands:evaluate",
                 "Accuracy, macro F1, per-class sensitivity/specificity, ROC/PR-AUC, plots, Grad-CAM."),
    CommandEntry("prune", "edgexray.prune.cli:prune",
                 "Remove whole channels from CHECKPOINT so the network physically shrinks."),
    CommandEntry("export", "edgexray.export.cli:export",
                 "Export CHECKPOINT to ONNX / TFLite and check every file against the PyTorch model."),
    CommandEntry("bench", "edgexray.bench.cli:bench",
                 "Latency, memory and accuracy of an artifact (folder or .zip) or a model file."),
    CommandEntry("compare", "edgexray.bench.cli:compare",
                 "The shipped artifact against what a user would run without edgexray."),
    CommandEntry("devices", "edgexray.devices.cli:devices",
                 "Device profiles: the targets `edgexray build --target` accepts."),
    CommandEntry("build", "edgexray.commands:build",
                 "Train or load, prune, fine-tune, export, check, benchmark and bundle for a device."),
    CommandEntry("verify", "edgexray.bench.verify_cli:verify",
                 "Run ARTIFACT's run.py on the aarch64 instruction set under QEMU and compare with "
                 "this host."),
)
_BY_NAME = {entry.name: entry for entry in COMMANDS}


def load_command(entry: CommandEntry) -> click.Command:
    module_name, attr = entry.target.split(":")
    return getattr(importlib.import_module(module_name), attr)


class EdgeXrayGroup(click.Group):
    """Loads a subcommand on first use; prints user errors without a traceback and exits with
    their documented status."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_BY_NAME})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in _BY_NAME:
            self.add_command(load_command(_BY_NAME[name]), name)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's command table, written from the summaries so no command module is imported."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            cmd = self.commands.get(name) or click.Command(name, help=_BY_NAME[name].summary)
            if not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeXrayError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=EdgeXrayGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
