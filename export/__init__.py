"""Export: a training run's generator as a self-describing bundle (docs/bundle.md).

- `onnx.py`: `export_graph`, the ONNX export of any network with its parity check, and
  the wrappers of each graph a bundle holds (waveform and spectral generators, the
  reconstruction network, the fused latent -> audio graph).
- `controls.py`: GANSpace and audio-descriptor directions for the knobs.
- `bundle.py`: `export_run`, which writes and verifies a bundle (waveform, spectral or
  reconstruction), and `export_spectral`; the schema itself is core/manifest.py.
- `cli.py`: the `ganstream export` command.

Export imports the generator families, the config and the checkpoint reader from
`ganstream.training`, never its training loop.
"""
