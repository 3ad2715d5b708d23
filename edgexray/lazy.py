"""Packages whose names load their submodule on first use, so that `--help` stays fast."""

from __future__ import annotations

import importlib


def lazy_names(package: str, names: dict):
    """A module `__getattr__` for `package`: names maps each name to the submodule defining it."""

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
