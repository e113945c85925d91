"""The base layer under training/, export/ and realtime/: the DSP they share (spectral front end,
phase reconstruction, resampling) and the bundle schema. numpy only: no torch, no ONNX Runtime."""
