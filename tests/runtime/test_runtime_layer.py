"""The runtime layer (runtime/ = edgexray.runtime): what it may import, what run.py is made of,
and that run.py, parity and bench run exported files through the very same runner classes."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
from pathlib import Path

import numpy as np
import pytest
from model_factories import CLASSES, REPO, SIZE

import edgexray.runtime.runners as runtime_runners
from edgexray.export.run_py_render import render_run_py, runtime_layer_order
from edgexray.runtime import registry

RUNTIME_DIR = REPO / "runtime"
LAYER = sorted(RUNTIME_DIR.glob("*.py"))
# The documented exception: packages a runner or decoder imports inside a function, when it is
# used, or optionally (in a `try` that handles ImportError), so that run.py needs only numpy plus
# the one runtime its model uses.
LAZY_ONLY = {"onnxruntime", "ai_edge_litert", "onnx", "PIL"}


def _handles_import_error(node: ast.Try) -> bool:
    return any(
        isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
        for h in node.handlers
    )


def _imports(tree: ast.Module):
    """(top-level module name, whole dotted name, lazy or optional?) of every import."""
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
            isinstance(node, ast.Try) and _handles_import_error(node)
        ):
            inner = node.body if isinstance(node, ast.Try) else [node]
            in_function |= {id(n) for part in inner for n in ast.walk(part) if n is not node}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], alias.name, id(node) in in_function
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.module, id(node) in in_function


@pytest.mark.parametrize("path", LAYER, ids=[p.name for p in LAYER])
def test_layer_imports_only_numpy_and_the_standard_library(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for top, name, lazy in _imports(tree):
        if top == "edgexray":
            assert name.startswith("edgexray.runtime."), f"{path.name} imports {name}"
        elif top in LAZY_ONLY:
            assert lazy, (
                f"{path.name} imports {name} at module level; import it where it is "
                "used or in a try/except ImportError"
            )
        else:
            assert top == "numpy" or top in sys.stdlib_module_names or top == "__future__", (
                f"{path.name} imports {name}: the runtime layer needs only numpy and the standard library"
            )


def test_run_py_holds_every_module_of_the_layer():
    order = runtime_layer_order()
    assert set(order) == {p.name for p in LAYER} - {"__init__.py", "run_py.py"}
    assert order.index("errors.py") < order.index("registry.py") < order.index("runners.py")
    source = render_run_py()
    for name in order:
        assert f"inlined from runtime/{name} " in source


def _rendered_run_py(tmp_path: Path, monkeypatch):
    """run.py as an artifact holds it, imported from its file (registered while the test runs)."""
    path = tmp_path / "run.py"
    path.write_text(render_run_py("0" * 64), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("rendered_run_py", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_run_py_bench_and_parity_use_the_same_runner_classes(tiny_models, tmp_path, monkeypatch):
    from edgexray.bench import runtimes as bench_runtimes
    from edgexray.export.parity import parity

    run_py = _rendered_run_py(tmp_path, monkeypatch)
    for info in registry.RUNTIMES.values():
        if info.manifest_runtime:  # what an artifact's run.py runs
            ours = runtime_runners.RUNNER_CLASSES[info.runner]
            assert inspect.getsource(getattr(run_py, info.runner)) == inspect.getsource(ours)
            assert bench_runtimes.RUNNER_CLASSES[info.runner] is ours
    for name in ("Runner", "TensorSpec", "quantize", "dequantize"):
        from edgexray.runtime import runner_base

        assert inspect.getsource(getattr(run_py, name)) == inspect.getsource(getattr(runner_base, name))

    used = []
    original = runtime_runners.Runner.predict_all

    def spy(self, x, batch_size=32):
        used.append(type(self))
        return original(self, x, batch_size)

    monkeypatch.setattr(runtime_runners.Runner, "predict_all", spy)
    x = np.random.default_rng(0).normal(size=(4, 1, SIZE, SIZE)).astype(np.float32)
    labels = np.array([0, 1, 0, 1])
    for key, cls in (("tflite_fp32", runtime_runners.LiteRTRunner), ("onnx", runtime_runners.OrtRunner)):
        used.clear()
        logits = bench_runtimes.runner_for_file(tiny_models[key], threads=1).predict(x)
        result = parity(logits, labels, tiny_models[key], x, CLASSES, threads=1)
        assert used == [cls] and result["max_abs_diff"] < 1e-5
        assert type(bench_runtimes.runner_for_file(tiny_models[key], threads=1)) is cls
