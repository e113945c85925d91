"""SpecGAN (Donahue, McAuley and Puckette, "Adversarial Audio Synthesis", ICLR 2019).

WaveGAN's recipe in two dimensions, on 128 x 128 normalised log-magnitude
spectrograms (n_fft 256, hop 128 at 16 kHz, the Nyquist bin dropped): a dense
layer to 4 x 4 x 16d, then five transposed convolutions of kernel 5 and stride
2, each doubling both axes, and tanh. The critic mirrors it with strided
convolutions and LeakyReLU 0.2; the paper trains it with WGAN-GP. Other sizes
work when both axes are multiples of 32: the dense layer starts at 1/32 of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .condition import Conditioning
from .spectrogram import SpectrogramFrontEnd, SpectrogramGenerator

KERNEL = 5
LAYERS = 5  # stride-2 layers: the first feature map is 1/32 of the spectrogram on each axis


@dataclass
class SpecGANConfig(SpectrogramFrontEnd, Conditioning):
    kind: str = "specgan"
    latent_dim: int = 100
    latent_dist: str = "uniform"  # uniform in [-1, 1] (the paper) | normal
    width: int = 64  # "d" in the paper

    def validate(self) -> None:
        self.validate_front_end()
        self.validate_condition()
        if self.latent_dist not in ("uniform", "normal"):
            raise ValueError(f"latent_dist: 'uniform' or 'normal', not {self.latent_dist!r}")
        if self.width < 1 or self.latent_dim < 1:
            raise ValueError("width and latent_dim must be positive")
        if self.bins % 2**LAYERS or self.frames % 2**LAYERS:
            raise ValueError(f"SpecGAN needs bins and frames that are multiples of {2**LAYERS}, not {self.bins} x {self.frames}")

    def channel_plan(self) -> list[int]:
        """Channels entering each layer of the generator, ending with the one output channel: 16d ... d, 1."""
        return [self.width * 16 // 2**i for i in range(LAYERS)] + [1]


class SpecGANGenerator(SpectrogramGenerator):
    def __init__(self, cfg: SpecGANConfig):
        super().__init__(cfg)
        self.cfg = cfg
        chans = cfg.channel_plan()
        self.start = (chans[0], cfg.bins // 2**LAYERS, cfg.frames // 2**LAYERS)
        self.dense = nn.Linear(cfg.latent_dim, chans[0] * self.start[1] * self.start[2])
        layers: list[nn.Module] = []
        for i in range(LAYERS):
            # padding 2 and output_padding 1 double each axis exactly, like TensorFlow's 'same'.
            layers.append(nn.ConvTranspose2d(chans[i], chans[i + 1], KERNEL, 2, padding=2, output_padding=1))
            if i < LAYERS - 1:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)

    def _first(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, 16d, bins / 32, frames / 32): the dense layer, reshaped and rectified."""
        return torch.relu(self.dense(z).view(z.shape[0], *self.start))

    def early_features(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, 16d * bins/32 * frames/32): the dense layer's output as the first transposed convolution reads it."""
        return self._first(z).flatten(1)

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, 1, bins, frames) normalised log-magnitude in [-1, 1]."""
        return torch.tanh(self.body(self._first(z)))


class SpecGANCritic(nn.Module):
    def __init__(self, cfg: SpecGANConfig):
        super().__init__()
        self.cfg = cfg
        chans = list(reversed(cfg.channel_plan()))  # 1, d, 2d, ... 16d
        layers: list[nn.Module] = []
        for i in range(LAYERS):
            layers += [nn.Conv2d(chans[i], chans[i + 1], KERNEL, 2, padding=2), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(chans[-1] * (cfg.bins // 2**LAYERS) * (cfg.frames // 2**LAYERS), 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, bins, frames) -> (B,) unbounded scores, higher for real."""
        return self.out(self.body(x).flatten(1)).squeeze(1)
