"""The torch-free runtime layer: exactly the code inside every artifact's run.py.

numpy and the standard library only (a test reads the imports). Host-side parity, bench and the
pipeline run exported files through these runners, so what is checked is what ships.
"""
