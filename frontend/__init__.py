"""Importers: ONNX models into the IR (and, later, `.hw` target descriptions)."""
