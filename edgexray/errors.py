"""One root error for everything the user can get wrong.

A message says what was received, what is allowed and one way to fix it. The CLI prints it
without a traceback and exits with status 2.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class EdgeXrayError(Exception):
    """Bad input or an unmet requirement, explained for the user."""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> EdgeXrayError:
    """`unknown model 'resnt18'; did you mean 'resnet18'? valid: ...`."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return EdgeXrayError(f"unknown {kind} {name!r}{hint} valid: {', '.join(choices)}")
