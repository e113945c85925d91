"""What every spectrogram GAN shares: the front end its output lives in, and the statistics it was normalised with.

A spectrogram generator outputs (B, 1, bins, frames): one channel, like an
image, and like the (B, 1, T) of the waveform generators; frequency runs down
the height (bin 0 first) and time along the width. The values are normalised
log-magnitudes (core/spectral.py: per-bin z-scores clipped at `norm_clip`
standard deviations and scaled to [-1, 1]). `[:, 0]` gives the (B, bins, frames)
that the reconstruction network and the bundle take.

The per-bin statistics are buffers of the generator, so they travel in every
checkpoint with the weights and export reads them with `generator.norm()`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from ganstream.core.spectral import BinNorm, SpectralParams


@dataclass
class SpectrogramFrontEnd:
    """Model-config fields of the spectral front end (core/spectral.py's SpectralParams) and the clip length."""

    sample_rate: int = 16000
    n_fft: int = 256
    hop: int = 128
    window: str = "hann"
    log_floor: float = 1e-5
    mel_bins: int = 0  # 0: linear-frequency bins; N: N mel bands
    drop_nyquist: bool = True  # n_fft 256 gives 128 bins, not 129 (SpecGAN)
    norm_clip: float = 3.0  # per-bin z-scores are clipped at this many standard deviations, then scaled to [-1, 1]
    frames: int = 128  # STFT frames per generated spectrogram

    def spectral(self) -> SpectralParams:
        """The front end's parameters for these fields."""
        return SpectralParams(**{f.name: getattr(self, f.name) for f in fields(SpectralParams)})

    @property
    def bins(self) -> int:
        """Frequency rows of a generated spectrogram."""
        return self.spectral().bins

    @property
    def segment(self) -> int:
        """Samples of audio per training clip: what the data loader cuts before the STFT."""
        return self.spectral().samples(self.frames)

    def validate_front_end(self) -> None:
        self.spectral()  # the front end raises ValueError on inconsistent settings
        if self.frames < 1:
            raise ValueError(f"frames: at least 1, not {self.frames}")
        if self.norm_clip <= 0:
            raise ValueError(f"norm_clip: > 0, not {self.norm_clip}")


class SpectrogramGenerator(nn.Module):
    """Base of the spectrogram generators: the BinNorm of the training data, as buffers."""

    def __init__(self, cfg: SpectrogramFrontEnd):
        super().__init__()
        self.norm_clip = cfg.norm_clip
        bins = cfg.bins
        # Identity statistics until the trainer sets the training data's, before step 1.
        self.register_buffer("norm_mean", torch.zeros(bins))
        self.register_buffer("norm_std", torch.ones(bins))

    def set_norm(self, norm: BinNorm) -> None:
        """Takes the per-bin statistics the training spectrograms were normalised with."""
        mean, std = norm.to_arrays()
        if mean.shape != self.norm_mean.shape or std.shape != self.norm_std.shape:
            raise ValueError(f"BinNorm has {mean.shape[0]} bins, the generator {self.norm_mean.shape[0]}")
        if norm.clip != self.norm_clip:
            raise ValueError(f"BinNorm clips at {norm.clip} std, model.norm_clip is {self.norm_clip}")
        self.norm_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.norm_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def norm(self) -> BinNorm:
        """The BinNorm this generator's output is normalised with."""
        return BinNorm.from_arrays(self.norm_mean.cpu().numpy(), self.norm_std.cpu().numpy(), clip=self.norm_clip)
