"""Build an artifact's run.py: runtime/run_py.py with the whole runtime layer inlined.

runtime/run_py.py imports what it needs from edgexray.runtime; here the marked import block is
replaced by the source of every module of runtime/ (each after the modules it imports), so
run.py is one file that needs only numpy and a runtime, and runs the very code the host runs.
Nothing is listed or copied by hand: a new module in runtime/ is in the next run.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import edgexray
import edgexray.runtime

RUNTIME_DIR = Path(edgexray.runtime.__file__).parent
TEMPLATE_NAME = "run_py.py"  # the harness itself: its body comes last
NOT_INLINED = ("__init__.py", TEMPLATE_NAME)
LAYER_START, LAYER_END = "# >>> runtime layer", "# <<< runtime layer"
FUTURE = "from __future__ import annotations"
RUNTIME_IMPORT = re.compile(r"from edgexray\.runtime\.(\w+) import ")


def _strip_edgexray_imports(source: str, origin: str) -> str:
    """Drop `from __future__` and `from edgexray... import ...` (also parenthesized) lines."""
    out, skipping = [], False
    for line in source.splitlines():
        if skipping:
            skipping = ")" not in line
            continue
        if line.strip() == FUTURE:
            continue
        if re.match(r"from edgexray(\.\w+)* import ", line):
            skipping = "(" in line and ")" not in line
            continue
        if re.match(r"\s*(import edgexray|from edgexray)", line):
            raise ValueError(
                f"{origin}: inlined modules may only import edgexray at top level "
                f"with `from edgexray.x import y`; found {line.strip()!r}"
            )
        out.append(line)
    return "\n".join(out) + "\n"


def _top_level_names(source: str) -> set:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _runtime_imports(source: str) -> set:
    """Names of the runtime/ modules that `source` imports (`from edgexray.runtime.x import`)."""
    return {m.group(1) for m in RUNTIME_IMPORT.finditer(source)}


def runtime_layer_order(runtime_dir: Path = RUNTIME_DIR) -> list:
    """The inlined modules of runtime/ (file names), each after every module it imports;
    alphabetical where the imports leave a choice."""
    sources = {
        p.stem: p.read_text(encoding="utf-8")
        for p in sorted(runtime_dir.glob("*.py"))
        if p.name not in NOT_INLINED
    }
    needs = {name: _runtime_imports(text) for name, text in sources.items()}
    for name, wanted in needs.items():
        unknown = wanted - set(sources)
        if unknown:
            raise ValueError(f"runtime/{name}.py imports {sorted(unknown)}, which run.py cannot inline")
    order: list = []
    while len(order) < len(sources):
        ready = [n for n in sorted(sources) if n not in order and needs[n] <= set(order)]
        if not ready:
            left = sorted(set(sources) - set(order))
            raise ValueError(f"runtime/ modules import each other in a cycle: {left}")
        order.append(ready[0])
    return [f"{name}.py" for name in order]


def _cut(text: str, start: str, end: str) -> tuple:
    """-> (before, between, after) around a marked block (the marker lines dropped)."""
    i = text.index(start)
    line_end = text.index("\n", i) + 1
    j = text.index(end, line_end)
    after = text.index("\n", j) + 1
    return text[:i], text[line_end:j], text[after:]


def render_run_py(manifest_sha256: str | None = None) -> str:
    """The complete source of run.py for the installed edgexray version.

    manifest_sha256: the seal, sha256 of the artifact's manifest.json (export.bundle.seal_artifact
    passes it); a run.py without it refuses to run (integrity failure).
    """
    if manifest_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", manifest_sha256):
        raise ValueError(f"manifest_sha256 must be 64 lowercase hex digits, got {manifest_sha256!r}")
    template = (RUNTIME_DIR / TEMPLATE_NAME).read_text(encoding="utf-8")
    head, _, body = _cut(template, LAYER_START, LAYER_END)
    body = _strip_edgexray_imports(body, f"runtime/{TEMPLATE_NAME}")
    body = body.replace(
        "EDGEXRAY_VERSION = None  # set by render_run_py", f"EDGEXRAY_VERSION = {edgexray.__version__!r}"
    )
    body = body.replace(
        "MANIFEST_SHA256 = None  # set by render_run_py", f"MANIFEST_SHA256 = {manifest_sha256!r}"
    )
    parts, owner = [head], {}
    for name in runtime_layer_order() + [TEMPLATE_NAME]:
        origin = f"runtime/{name}"
        text = (
            body
            if name == TEMPLATE_NAME
            else _strip_edgexray_imports((RUNTIME_DIR / name).read_text(encoding="utf-8"), origin)
        )
        for defined in _top_level_names(text):
            if defined in owner:
                raise ValueError(
                    f"run.py would define {defined!r} twice ({owner[defined]} and "
                    f"{origin}); rename one of them"
                )
            owner[defined] = origin
        if name != TEMPLATE_NAME:
            parts.append(
                f"# {'=' * 20} inlined from {origin} (edgexray {edgexray.__version__}) {'=' * 20}\n{text}\n"
            )
    parts.append(f"# {'=' * 20} harness {'=' * 20}\n{body}")
    source = "".join(parts)
    compile(source, "run.py", "exec")
    return source
