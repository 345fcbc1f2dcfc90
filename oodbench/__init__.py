"""oodbench: a reproducible OOD-detection benchmark as a DVC pipeline.

One module per pipeline stage (materialize, extract, fc, score, evaluate, report) and
the small libraries they share (errors, atomic, store, params, metrics, methods/).
"""

__version__ = "0.1.0"
