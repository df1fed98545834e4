"""Exports of LIIF models for other runtimes: :mod:`liif.export.onnx` (ONNX graphs, run with ONNX
Runtime through ``liif.load(..., backend="onnxruntime")``). Importing this package loads nothing heavy."""
