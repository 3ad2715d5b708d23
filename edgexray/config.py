"""The one rule every config follows: a dict with an unknown key is an error, not ignored."""

from __future__ import annotations

import dataclasses

from edgexray.runtime.errors import EdgeXrayError


def config_from_dict(cls, d: dict, what: str):
    """`cls(**d)` for a frozen config dataclass, naming unknown keys and the allowed ones."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise EdgeXrayError(f"unknown {what} key(s) {unknown}; allowed: {', '.join(allowed)}")
    return cls(**d)
