"""Quantization (INT8 Q/DQ, FP16), quality gate, TensorRT engine build and cache."""
