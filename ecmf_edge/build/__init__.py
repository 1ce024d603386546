"""Build: ONNX export with parity checks, quantization, TensorRT engines and calibration sets (needs the ``build`` extra)."""
