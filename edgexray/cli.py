"""The `edgexray` command line. Each stage's command lives next to its code; this file only
collects them, and turns an EdgeXrayError into one line on stderr and its exit status
(runtime/errors.py documents them)."""
from __future__ import annotations

import importlib
import logging
import sys

import click

from edgexray import __version__
from edgexray.runtime.errors import EdgeXrayError

# "module:attribute" of every subcommand, in the order `edgexray --help` lists them.
COMMANDS = (
    "edgexray.commands:data",
    "edgexray.commands:train",
    "edgexray.commands:evaluate",
    "edgexray.prune.cli:prune",
    "edgexray.export.cli:export",
    "edgexray.bench.cli:bench",
    "edgexray.bench.cli:compare",
    "edgexray.devices.cli:devices",
    "edgexray.commands:build",
    "edgexray.bench.verify_cli:verify",
)


class EdgeXrayGroup(click.Group):
    """Prints user errors without a traceback and exits with their documented status."""

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


def _register() -> None:
    for spec in COMMANDS:
        module_name, attr = spec.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # a stage not built yet; never hide a broken import
                continue
            raise
        main.add_command(getattr(module, attr))


_register()

if __name__ == "__main__":
    main()
