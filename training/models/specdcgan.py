"""The spectrogram DCGAN of the DCGAN article in shared/reference ("DCGAN and spectrograms").

Two generators, chosen by `architecture`:

- `square`: DCGAN (Radford et al.) with one more layer for 128 x 128, as the
  article's second experiment: a 4 x 4 map of 16 ngf from the latent, then
  transposed convolutions of kernel 4 and stride 2 that double both axes and
  halve the channels, BatchNorm and ReLU between, tanh at the end.
- `own`: the article's "own architecture", its third and best experiment. It
  grows along time only, with transposed convolutions one bin high (kernel 1 x 4,
  stride 1 x 2), and expands to the full frequency height in its last layer
  (kernel bins x 4). The channels start at the same 16 ngf and stop halving
  after two layers (16, 8, 4, 4, 4 ngf at 128 frames), as the article's code
  does. Its listing shows BatchNorm and ReLU after the first two layers only;
  without them the next three would collapse into one linear map, so every
  layer but the last has them here.

Both share DCGAN's discriminator, grown by one layer the same way: strided
convolutions of kernel 4 with BatchNorm (not on the first) and LeakyReLU 0.2,
then one convolution over the last map that gives a logit, for BCE with logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from .spectrogram import SpectrogramFrontEnd, SpectrogramGenerator

ARCHITECTURES = ("own", "square")


def _doublings(size: int) -> int:
    """How many stride-2 steps grow 4 into `size`; -1 when `size` is not 4 x 2^k with k >= 1."""
    k = int(round(math.log2(size / 4))) if size >= 8 else -1
    return k if k >= 1 and 4 * 2**k == size else -1


@dataclass
class SpecDCGANConfig(SpectrogramFrontEnd):
    kind: str = "specdcgan"
    architecture: str = "own"  # own (the article's: grows along time) | square (DCGAN)
    latent_dim: int = 196  # the article tried 196 and 512
    latent_dist: str = "normal"  # normal (DCGAN) | uniform in [-1, 1]
    ngf: int = 64  # generator feature maps; the first layer has 16 ngf at 128 frames in both architectures
    ndf: int = 64  # discriminator feature maps of its first layer

    def validate(self) -> None:
        self.validate_front_end()
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture: 'own' or 'square', not {self.architecture!r}")
        if self.latent_dist not in ("uniform", "normal"):
            raise ValueError(f"latent_dist: 'uniform' or 'normal', not {self.latent_dist!r}")
        if self.ngf < 1 or self.ndf < 1 or self.latent_dim < 1:
            raise ValueError("ngf, ndf and latent_dim must be positive")
        if _doublings(self.frames) < 0:
            raise ValueError(f"frames: 4 x 2^k (8, 16, ... 128, 256), not {self.frames}")
        if self.architecture == "square" and self.bins != self.frames:
            raise ValueError(f"the square architecture makes square spectrograms; bins {self.bins} != frames {self.frames}")
        low, high = sorted((self.bins, self.frames))
        if _doublings(low) < 0 or high % 2 ** _doublings(low):
            raise ValueError(f"the discriminator halves both axes down to 4: {self.bins} x {self.frames} does not divide")

    def generator_channels(self) -> list[int]:
        """Channels out of each generator layer, ending with the one output channel."""
        n = _doublings(self.frames)
        top = self.ngf * 2 ** (n - 1)  # 16 ngf at 128 frames
        if self.architecture == "square":
            hidden = [top // 2**i for i in range(n)]
        else:
            hidden = ([top, top // 2] + [top // 4] * (n - 2))[:n]
        return [max(c, 1) for c in hidden] + [1]


def _norm_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU()]


class SpecDCGANGenerator(SpectrogramGenerator):
    def __init__(self, cfg: SpecDCGANConfig):
        super().__init__(cfg)
        self.cfg = cfg
        chans = cfg.generator_channels()
        layers: list[nn.Module] = []
        if cfg.architecture == "square":
            layers += [nn.ConvTranspose2d(cfg.latent_dim, chans[0], 4, 1, bias=False), *_norm_relu(chans[0])]  # 4 x 4
            for i in range(len(chans) - 1):
                layers.append(nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, padding=1, bias=False))
                layers += _norm_relu(chans[i + 1]) if i < len(chans) - 2 else []
        else:
            # Height is frequency, width is time: (1, 4) kernels and (1, 2) strides leave the height at 1.
            layers += [nn.ConvTranspose2d(cfg.latent_dim, chans[0], (1, 4), 1, bias=False), *_norm_relu(chans[0])]  # 1 x 4
            for i in range(len(chans) - 2):
                layers += [nn.ConvTranspose2d(chans[i], chans[i + 1], (1, 4), (1, 2), padding=(0, 1), bias=False), *_norm_relu(chans[i + 1])]
            layers.append(nn.ConvTranspose2d(chans[-2], 1, (cfg.bins, 4), (1, 2), padding=(0, 1), bias=False))  # bins x frames
        self.main = nn.Sequential(*layers, nn.Tanh())

    def early_features(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, C * 4) ("own": a 1 x 4 map) or (B, C * 16) ("square": 4 x 4), C = generator_channels()[0]
        (16 ngf at 128 frames): the first block's output (the transposed convolution from the latent, BatchNorm, ReLU)."""
        return self.main[:3](z[:, :, None, None]).flatten(1)

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, 1, bins, frames) normalised log-magnitude in [-1, 1]."""
        return self.main(z[:, :, None, None])


class SpecDCGANCritic(nn.Module):
    def __init__(self, cfg: SpecDCGANConfig):
        super().__init__()
        self.cfg = cfg
        n = _doublings(min(cfg.bins, cfg.frames))
        chans = [1] + [cfg.ndf * 2**i for i in range(n)]
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 4, 2, padding=1, bias=False))
            layers += [nn.BatchNorm2d(chans[i + 1])] if i > 0 else []
            layers.append(nn.LeakyReLU(0.2))
        # One logit from the last map (4 x 4 for square input): DCGAN's final convolution without its sigmoid.
        layers.append(nn.Conv2d(chans[-1], 1, (cfg.bins // 2**n, cfg.frames // 2**n), bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, bins, frames) -> (B,) logits, higher for real."""
        return self.main(x).flatten(1).squeeze(1)
