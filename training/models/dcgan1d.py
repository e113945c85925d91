"""The 1D DCGAN of the waveform article in shared/reference ("1D DCGAN for waveform generation").

DCGAN's strided (transposed) convolutions in one dimension, with the article's
changes from ganhacks: BatchNorm, LeakyReLU 0.2 and Dropout 0.2 in both
networks, and a critic that outputs logits for BCE-with-logits. At the
article's 100 samples the layout is exactly the article's: kernel 4, stride 2,
no padding, a final kernel of 10. Longer segments add stride-2 blocks (channels
halving down to `min_channels`) and crop the centre of the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class DCGAN1DConfig:
    kind: str = "dcgan1d"
    latent_dim: int = 100
    latent_dist: str = "normal"  # normal (the article) | uniform in [-1, 1]
    ngf: int = 512  # generator feature maps of the first layer
    ndf: int = 512  # critic feature maps of the last layer
    segment: int = 100
    channels: int = 1
    dropout: float = 0.2
    min_channels: int = 8  # floor for the halving channel counts of long segments

    def validate(self) -> None:
        if self.latent_dist not in ("uniform", "normal"):
            raise ValueError(f"latent_dist: 'uniform' or 'normal', not {self.latent_dist!r}")
        if self.segment < 100:
            raise ValueError(f"segment: at least 100 samples, not {self.segment}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: in [0, 1), not {self.dropout}")
        if self.ngf < 1 or self.ndf < 1 or self.min_channels < 1:
            raise ValueError("ngf, ndf and min_channels must be positive")

    def generator_blocks(self) -> int:
        """Stride-2 blocks between the first and the last layer: 3 for 100 samples, as in the article."""
        blocks, length = 0, 4
        while 2 * (length - 1) + 10 < self.segment or blocks < 3:
            length = 2 * length + 2
            blocks += 1
        return blocks


def _block(conv: nn.Module, channels: int, dropout: float) -> list[nn.Module]:
    return [conv, nn.BatchNorm1d(channels), nn.LeakyReLU(0.2), nn.Dropout(dropout)]


class DCGAN1DGenerator(nn.Module):
    def __init__(self, cfg: DCGAN1DConfig):
        super().__init__()
        self.cfg = cfg
        n = cfg.generator_blocks()
        chans = [max(cfg.ngf // 2**i, cfg.min_channels) for i in range(n + 1)]
        layers = _block(nn.ConvTranspose1d(cfg.latent_dim, chans[0], 4, 1, bias=False), chans[0], cfg.dropout)
        for i in range(n):
            layers += _block(nn.ConvTranspose1d(chans[i], chans[i + 1], 4, 2, bias=False), chans[i + 1], cfg.dropout)
        layers += [nn.ConvTranspose1d(chans[-1], cfg.channels, 10, 2, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def early_features(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, 4 * ngf): the first block's output (transposed conv, BatchNorm, LeakyReLU, Dropout)."""
        return self.main[:4](z.unsqueeze(-1)).flatten(1)

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, channels, segment) audio in [-1, 1]."""
        x = self.main(z.unsqueeze(-1))
        start = (x.shape[-1] - self.cfg.segment) // 2
        return x[..., start : start + self.cfg.segment]


class DCGAN1DCritic(nn.Module):
    def __init__(self, cfg: DCGAN1DConfig):
        super().__init__()
        self.cfg = cfg
        lengths = [cfg.segment - 3]
        while lengths[-1] > 7:  # stride-2 blocks until a final kernel-4 stride-2 layer leaves 1 or 2 steps
            lengths.append((lengths[-1] - 4) // 2 + 1)
        n = len(lengths) - 1
        chans = [max(cfg.ndf // 2 ** (n - i), cfg.min_channels) for i in range(n + 1)]
        layers = _block(nn.Conv1d(cfg.channels, chans[0], 4, 1, bias=False), chans[0], cfg.dropout)
        for i in range(n):
            layers += _block(nn.Conv1d(chans[i], chans[i + 1], 4, 2, bias=False), chans[i + 1], cfg.dropout)
        layers.append(nn.Conv1d(chans[-1], 1, 4, 2, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, channels, segment) -> (B,) logits, higher for real."""
        return self.main(x).mean(dim=(1, 2))
