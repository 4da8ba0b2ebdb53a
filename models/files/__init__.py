"""Model files: what to download and where, checking them, reading weight files safely, ONNX providers and
the pack's own data files."""
