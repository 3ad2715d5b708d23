"""The torch-free runtime layer: exactly the code inside every artifact's run.py.

numpy and the standard library only (tests/runtime/test_runtime_layer.py reads the imports). Host-side
parity, bench and the pipeline run exported files through these runners, so what is checked is
what ships. run_py.py is run.py's own source; edgexray.export.run_py_render inlines every other
module here into it, each after the modules it imports. registry.py holds the facts of every
runtime (suffix, format, manifest name, pip package and pin, device).
"""
