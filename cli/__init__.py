"""ganstream: train GANs on audio, export them to ONNX, play them live.

This top-level package holds only the version and the `ganstream` command's
dispatcher; the work lives in `ganstream.training`, `ganstream.export` and
`ganstream.realtime`.
"""

__version__ = "0.1.0"
