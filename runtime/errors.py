"""One root error for everything the user can get wrong.

A message says what was received, what is allowed and one way to fix it. The CLI prints it
as one `error:` line, without a traceback, and exits with the error's documented status:

    0  success
    1  an unexpected internal failure (a bug: please report it with the traceback)
    2  bad input: arguments, files or data the command cannot use (EdgeXrayError)
    3  integrity: an artifact's files do not match what was verified (IntegrityError)
    4  a check ran and failed: parity, budgets, device verification (CheckFailed)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeXrayError(Exception):
    """Bad input or an unmet requirement, explained for the user."""

    exit_code = 2


class IntegrityError(EdgeXrayError):
    """An artifact's files, manifest or labels differ from what was hashed and verified."""

    exit_code = 3


class CheckFailed(EdgeXrayError):
    """A check ran to the end and its result is a failure (not bad input)."""

    exit_code = 4


def first_line(e: BaseException) -> str:
    """`TypeName: first line of the message` (at most 200 characters), for one-line errors."""
    text = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> EdgeXrayError:
    """`unknown model 'resnt18'; did you mean 'resnet18'? valid: ...`."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return EdgeXrayError(f"unknown {kind} {name!r}{hint} valid: {', '.join(choices)}")
