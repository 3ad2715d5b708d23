"""docs/ARCHITECTURE.md's import-direction table is the rule: every module's imports of the
project (function-level ones included) stay within what its layer may import."""

from __future__ import annotations

import ast
import configparser
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "ARCHITECTURE.md"
TABLE_HEADING = "### Import direction"
NOTHING = {"-", "—", "nothing", ""}


@dataclass(frozen=True)
class Layer:
    name: str
    prefixes: tuple[str, ...]  # dotted module prefixes that belong to the layer
    may_import: frozenset[str]


@dataclass(frozen=True)
class ImportEdge:
    source: str  # importing module
    target: str  # imported project module
    path: Path
    line: int


def doc2layers(text: str) -> dict[str, Layer]:
    """The first markdown table after TABLE_HEADING: layer | `module prefixes` | may import."""
    lines = text[text.index(TABLE_HEADING) :].splitlines()[1:]
    rows = []
    for line in lines:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    layers = {}
    for name, modules, may_import in rows[2:]:  # header and separator first
        allowed = (
            frozenset() if may_import in NOTHING else frozenset(v.strip() for v in may_import.split(","))
        )
        layers[name] = Layer(name, tuple(re.findall(r"`([\w.]+)`", modules)), allowed)
    return layers


def package_folders() -> dict[Path, str]:
    """setup.cfg's package_dir: folder -> the package name it is installed as."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    pairs = (line.split("=") for line in cfg["options"]["package_dir"].strip().splitlines())
    return {REPO / folder.strip(): package.strip() for package, folder in pairs}


def project_modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name (folders mapped as setup.cfg maps them)."""
    modules = {}
    for folder, package in package_folders().items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def module2imports(name: str, path: Path, known: set[str]) -> list[ImportEdge]:
    """The project modules `name` imports anywhere in its source (ast, so inside functions too)."""
    is_package = path.name == "__init__.py"
    edges = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            # `from pkg import mod` imports the submodule pkg.mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        edges += [
            ImportEdge(name, t, path, node.lineno)
            for t in dict.fromkeys(targets)
            if t == "edgexray" or t.startswith("edgexray.")
        ]
    return edges


def layer_of(module: str, layers: dict[str, Layer]) -> Layer:
    matches = [
        (len(p), layer)
        for layer in layers.values()
        for p in layer.prefixes
        if module == p or module.startswith(p + ".")
    ]
    assert matches, f"{module} is in no layer of {DOC.name}'s import table"
    return max(matches, key=lambda m: m[0])[1]


def violations(layers: dict[str, Layer]) -> list[str]:
    modules = project_modules()
    found = []
    for name, path in modules.items():
        source = layer_of(name, layers)
        for edge in module2imports(name, path, set(modules)):
            target = layer_of(edge.target, layers)
            if target.name != source.name and target.name not in source.may_import:
                found.append(
                    f"{edge.path.relative_to(REPO)}:{edge.line}: {edge.source} ({source.name}) "
                    f"imports {edge.target} ({target.name})"
                )
    return found


def test_the_table_is_well_formed():
    layers = doc2layers(DOC.read_text())
    assert {"runtime", "export", "bench", "pipeline", "cli"} <= set(layers)
    assert not layers["runtime"].may_import  # run.py carries nothing of the rest
    for layer in layers.values():
        assert layer.prefixes, layer.name
        assert layer.may_import <= set(layers), (layer.name, layer.may_import - set(layers))
    # a direction, not a tangle: no layer may import one that may import it back
    order = []
    remaining = dict(layers)
    while remaining:
        ready = [n for n, layer in remaining.items() if layer.may_import <= set(order)]
        assert ready, f"cycle among {sorted(remaining)}"
        order += ready
        for n in ready:
            del remaining[n]
    # every module of setup.cfg's folders falls in some layer
    for name in project_modules():
        layer_of(name, layers)


def test_relative_and_function_level_imports_are_read(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text(
        "from .formats import FORMATS\nfrom . import parity\n"
        "def f():\n    from edgexray.bench import runtimes\n    import edgexray.runtime.errors\n"
    )
    known = {"edgexray.export.formats", "edgexray.export.parity", "edgexray.bench.runtimes"}
    targets = {e.target for e in module2imports("edgexray.export.mod", src, known)}
    assert targets == {
        "edgexray.export.formats",
        "edgexray.export.parity",
        "edgexray.bench.runtimes",
        "edgexray.runtime.errors",
    }


def test_every_import_follows_the_documented_direction():
    found = violations(doc2layers(DOC.read_text()))
    for line in found:
        print(line)
    assert not found, f"{len(found)} imports against docs/ARCHITECTURE.md's table:\n" + "\n".join(found)
