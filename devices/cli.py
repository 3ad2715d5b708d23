"""`edgexray devices list` and `edgexray devices show NAME`."""

from __future__ import annotations

import click

from edgexray.devices.profiles import list_profiles, load_profile


@click.group()
def devices() -> None:
    """Device profiles: the targets `edgexray build --target` accepts."""


@devices.command("list")
def list_cmd() -> None:
    """One line per built-in target."""
    rows = [("name", "arch", "cpu core", "runtime", "precisions", "default", "budget ms")]
    for name in list_profiles():
        p = load_profile(name)
        rows.append(
            (
                p.name,
                p.arch,
                p.cpu_core,
                p.runtime,
                ",".join(p.precisions),
                p.default_precision,
                f"{p.latency_budget_ms:g}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@devices.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Every field of one profile (NAME or the path of a TOML file)."""
    d = load_profile(name).to_dict()
    prune = d.pop("prune")
    width = max(map(len, [*d, *("prune." + k for k in prune)]))
    for key, value in d.items():
        click.echo(f"{key.ljust(width)}  {_fmt(value)}")
    for key, value in prune.items():
        click.echo(f"{('prune.' + key).ljust(width)}  {_fmt(value)}")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
