"""Training a spectrogram GAN (models/specgan.py, specdcgan.py; progressive.py builds on it).

`SpectralRun` is `loop.Run` with spectrogram data: every batch of waveform
segments goes through the spectral front end (data/spectrograms.py), the per-bin
moments of the training split go into the generator's buffers before step 1
(so every checkpoint, the EMA copy included, carries them, and export reads
them with `generator.norm()`). Previews are the generated spectrograms as
images, and audio from them by fast Griffin-Lim (core/phase.py).

The evaluation (evaluate.py, with `train.eval_every`) scores audio, which a
spectral GAN makes only through a phase reconstruction: it scores the audio of
`griffin_lim_audio`, so its figures hold the reconstruction's artefacts as much
as the GAN's (the trained reconstruction network makes the sound of an exported
bundle). The progressive GAN is not evaluated: its early stages make smaller
spectrograms than its front end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ganstream.core.phase import GRIFFIN_LIM, PhaseReconstructor
from ganstream.core.spectral import BinNorm, SpectralParams

from .config import ConfigError
from .data.spectrograms import SpectrogramSegments, spectrogram_norm
from .gan import GANTrainer
from .loop import Run
from .monitor import figure_grid

PREVIEW_GL_ITERS = 32


class SpectralRun(Run):
    """`loop.Run` for the spectrogram GANs: model configs with a spectral front end (`spectral()`)."""

    def _load_data(self) -> SpectrogramSegments:
        m = self.cfg.model
        if m.sample_rate != self.cfg.data.sample_rate:
            raise ConfigError(f"model.sample_rate ({m.sample_rate}) must equal data.sample_rate ({self.cfg.data.sample_rate})")
        audio = super()._load_data()
        params = m.spectral()
        return SpectrogramSegments(audio, params, spectrogram_norm(audio, params, m.norm_clip), m.frames)

    def _make_trainer(self, grad_sync: Any) -> GANTrainer:
        return self._with_norm(GANTrainer(self.cfg, self.device, grad_sync=grad_sync))

    def _with_norm(self, trainer: GANTrainer) -> GANTrainer:
        """The trainer, its generators holding the training data's per-bin moments."""
        trainer.generator.set_norm(self.data.norm)
        if trainer.ema is not None:
            trainer.ema.module.set_norm(self.data.norm)
        return trainer

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        # The run's own moments win over a recomputation: the data stays normalised as it was trained.
        self.data.norm = self.trainer.generator.norm()

    @torch.no_grad()
    def spectrograms(self, z: torch.Tensor) -> np.ndarray:
        """(N, latent_dim) -> (N, bins, frames) from the EMA generator."""
        g = self.trainer.export_generator.eval()
        return g(z)[:, 0].float().cpu().numpy()

    def generate_previews(self) -> np.ndarray:
        """(preview_count, bins, frames) from the fixed preview latents."""
        return self.spectrograms(self.preview_inputs)

    def write_previews(self) -> None:
        """previews/step_NNNNNNNN.wav and .png: the preview spectrograms made audible by Griffin-Lim (`Monitor`),
        and step_NNNNNNNN_generated.png: the spectrograms as the generator made them."""
        if not self.dist.main:
            return
        specs = self.generate_previews()
        self.monitor.previews(self.step, self.preview_audio(specs))
        fig = spectrogram_grid(specs, f"step {self.step}: generated")
        fig.savefig(self.run_dir / "previews" / f"step_{self.step:08d}_generated.png", dpi=80)
        if self.monitor.writer is not None:
            self.monitor.writer.add_figure("generated", fig, self.step)
        import matplotlib.pyplot as plt

        plt.close(fig)

    def preview_audio(self, specs: np.ndarray) -> np.ndarray:
        """(N, bins, frames) normalised spectrograms -> (N, frames * hop) audio: a quick listen, not the
        bundle's sound, which the trained reconstruction network makes."""
        return griffin_lim_audio(specs, self.cfg.model.spectral(), self.data.norm)


def griffin_lim_audio(specs: np.ndarray, params: SpectralParams, norm: BinNorm, iters: int = PREVIEW_GL_ITERS) -> np.ndarray:
    """(N, bins, frames) normalised log-magnitude spectrograms -> (N, frames * hop) float32 audio by
    fast Griffin-Lim (core/phase.py): previews, and what the evaluation scores of a spectral GAN."""
    audio = PhaseReconstructor(params, norm, specs.shape[-1], GRIFFIN_LIM, iters).reconstruct(specs)
    # Inconsistent phases can overshoot the real clip's peak: scale such clips down rather than clip them.
    return (audio / np.maximum(np.abs(audio).max(axis=1, keepdims=True), 1.0)).astype(np.float32)


def spectrogram_grid(specs: np.ndarray, title: str) -> Any:
    """A grid of (N, bins, frames) normalised spectrograms, low frequencies at the bottom, [-1, 1] as the colour range."""

    def draw(ax: Any, spec: np.ndarray) -> None:
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=-1.0, vmax=1.0, interpolation="nearest")

    return figure_grid(specs, title, draw, row_height=2.6)
