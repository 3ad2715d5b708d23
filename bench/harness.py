"""Build an artifact's run.py: runtime/run_py.py with the modules it names inlined.

The template imports what it needs from edgexray (preprocess, metrics, runners, latency...);
here those imports are replaced by the modules' source text, so run.py is one file that needs
only numpy and a runtime, and runs the very code the host runs. Nothing is duplicated by hand.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import edgexray
import edgexray.runtime

PACKAGE_DIRS = {"edgexray": Path(edgexray.__file__).parent, "bench": Path(__file__).parent,
                "runtime": Path(edgexray.runtime.__file__).parent}
TEMPLATE = Path(edgexray.runtime.__file__).parent / "run_py.py"
INLINE_START, INLINE_END = "# >>> inline:", "# <<< inline"
HOST_START, HOST_END = "# >>> host only", "# <<< host only"
FUTURE = "from __future__ import annotations"


def _module_file(spec: str) -> Path:
    top, _, rest = spec.partition("/")
    if top not in PACKAGE_DIRS or not rest.endswith(".py"):
        raise ValueError(f"inline entry {spec!r} must be edgexray/NAME.py or bench/NAME.py")
    return PACKAGE_DIRS[top] / rest


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
            raise ValueError(f"{origin}: inlined modules may only import edgexray at top level "
                             f"with `from edgexray.x import y`; found {line.strip()!r}")
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


def _cut(text: str, start: str, end: str) -> tuple:
    """-> (before, the start line, between, after) around a marked block."""
    i = text.index(start)
    line_end = text.index("\n", i) + 1
    j = text.index(end, line_end)
    after = text.index("\n", j) + 1
    return text[:i], text[i:line_end], text[line_end:j], text[after:]


def render_run_py(manifest_sha256: str | None = None) -> str:
    """The complete source of run.py for the installed edgexray version.

    manifest_sha256: the seal, sha256 of the artifact's manifest.json (export.bundle.seal_artifact
    passes it); a run.py without it refuses to run (integrity failure).
    """
    if manifest_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", manifest_sha256):
        raise ValueError(f"manifest_sha256 must be 64 lowercase hex digits, got {manifest_sha256!r}")
    template = TEMPLATE.read_text(encoding="utf-8")
    before, _, _, after = _cut(template, HOST_START, HOST_END)
    template = before + after
    head, marker, _, body = _cut(template, INLINE_START, INLINE_END)
    specs = marker[len(INLINE_START):].split()
    body = body.replace("EDGEXRAY_VERSION = None  # set by render_run_py",
                        f"EDGEXRAY_VERSION = {edgexray.__version__!r}")
    body = body.replace("MANIFEST_SHA256 = None  # set by render_run_py",
                        f"MANIFEST_SHA256 = {manifest_sha256!r}")
    parts, owner = [head], {}
    for spec in specs + ["runtime/run_py.py"]:
        text = body if spec == "runtime/run_py.py" else \
            _strip_edgexray_imports(_module_file(spec).read_text(encoding="utf-8"), spec)
        for name in _top_level_names(text):
            if name in owner:
                raise ValueError(f"run.py would define {name!r} twice ({owner[name]} and {spec}); "
                                 "rename one of them")
            owner[name] = spec
        if spec != "runtime/run_py.py":
            parts.append(f"# {'=' * 20} inlined from {spec} (edgexray {edgexray.__version__}) "
                         f"{'=' * 20}\n{text}\n")
    parts.append(f"# {'=' * 20} harness {'=' * 20}\n{body}")
    source = "".join(parts)
    compile(source, "run.py", "exec")
    return source
