"""Click callbacks that check numeric options while the command line is parsed, before any
work: a bad value is one `error:` line (EdgeXrayError, exit 2), not a failure minutes later;
and option groups that several commands share."""

from __future__ import annotations

import math

import click

from edgexray.runtime.errors import EdgeXrayError

MIN_SIZE, MAX_SIZE = 16, 1024  # model input side in pixels; decoded arrays grow with its square
SEED_MAX = 2**32 - 1  # numpy's seeds are unsigned 32-bit


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, example: str = ""):
    """A callback accepting finite numbers in [lo, hi] ((lo, hi] with `lo_open`); None passes."""
    lower = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
    upper = "" if hi is None else f"<= {hi}"
    allowed = " and ".join(b for b in (lower, upper) if b) or "a finite number"

    def check(ctx, param, value):
        if value is None:
            return value
        finite = isinstance(value, int) or math.isfinite(value)  # a huge int overflows a float
        ok = (
            finite
            and (lo is None or (value > lo if lo_open else value >= lo))
            and (hi is None or value <= hi)
        )
        if not ok:
            name = max(param.opts, key=len)
            hint = f", e.g. {name} {example}" if example else ""
            shown = str(value) if len(str(value)) <= 24 else f"{str(value)[:20]}..."
            raise EdgeXrayError(f"{name} {shown}; allowed: {allowed}{hint}")
        return value

    return check


SIZE = number(MIN_SIZE, MAX_SIZE, example="128")
WIDTH = number(0, 4, lo_open=True, example="1.0 (0.25 for a quick test)")
POSITIVE = number(0, lo_open=True)
AT_LEAST_ONE = number(1)
NON_NEGATIVE = number(0)
SEED = number(0, SEED_MAX, example="0")


def ssh_client_options(command):
    """--remote-python, --identity and --ssh-option: how a command that takes --remote reaches
    the device and runs run.py there (bench, build)."""
    for option in reversed(
        (
            click.option(
                "--remote-python",
                default="python3",
                show_default=True,
                help="Python on the device (with numpy and the runtime installed).",
            ),
            click.option(
                "--identity",
                type=click.Path(exists=True, dir_okay=False),
                help="SSH private key for --remote.",
            ),
            click.option(
                "--ssh-option",
                "ssh_options",
                multiple=True,
                metavar="KEY=VALUE",
                help="Extra ssh -o option for --remote (repeatable).",
            ),
        )
    ):
        command = option(command)
    return command
