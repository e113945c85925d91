"""WaveGAN (Donahue, McAuley and Puckette, "Adversarial Audio Synthesis", ICLR 2019).

The generator is DCGAN flattened to one dimension: a dense layer to 16 x 16d,
then transposed convolutions of kernel 25 and stride 4, each four times longer.
16384 samples take five of them; 32768 and 65536 add a sixth layer and end with
stride 2 or 4, as the authors' code does. The critic mirrors it with strided
convolutions, LeakyReLU 0.2 and phase shuffle, which keeps it from judging
by the periodic artefacts of transposed convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .condition import Conditioning

KERNEL = 25

# segment length -> (strides of the up/down-sampling stack, channel multiplier of the first layer)
_LAYOUTS: dict[int, tuple[tuple[int, ...], int]] = {
    16384: ((4, 4, 4, 4, 4), 16),
    32768: ((4, 4, 4, 4, 4, 2), 32),
    65536: ((4, 4, 4, 4, 4, 4), 32),
}


@dataclass
class WaveGANConfig(Conditioning):
    kind: str = "wavegan"
    latent_dim: int = 100
    latent_dist: str = "uniform"  # uniform in [-1, 1] (the paper) | normal
    width: int = 64  # "d" in the paper
    segment: int = 16384  # 16384, 32768 or 65536 samples
    channels: int = 1
    upsample: str = "transpose"  # transpose | nearest (nearest-neighbour upsampling then convolution)
    post_filter: int = 0  # length of the learned post-processing filter; 0 disables (the paper tried 512)
    batchnorm: bool = False  # the paper uses none with WGAN-GP
    phase_shuffle: int = 2  # the critic's phase shuffle radius; 0 disables

    def validate(self) -> None:
        self.validate_condition()
        if self.segment not in _LAYOUTS:
            raise ValueError(f"segment: WaveGAN makes 16384, 32768 or 65536 samples, not {self.segment}")
        if self.latent_dist not in ("uniform", "normal"):
            raise ValueError(f"latent_dist: 'uniform' or 'normal', not {self.latent_dist!r}")
        if self.upsample not in ("transpose", "nearest"):
            raise ValueError(f"upsample: 'transpose' or 'nearest', not {self.upsample!r}")
        if self.width < 1 or self.latent_dim < 1:
            raise ValueError("width and latent_dim must be positive")
        if self.post_filter < 0 or self.phase_shuffle < 0:
            raise ValueError("post_filter and phase_shuffle must be >= 0")

    def channel_plan(self) -> list[int]:
        """Channels entering each layer of the generator, ending with the output channels."""
        strides, mul = _LAYOUTS[self.segment]
        chans = [self.width * mul // 2**i for i in range(len(strides))]
        return chans + [self.channels]


def _up_layer(c_in: int, c_out: int, stride: int, mode: str) -> nn.Module:
    """(B, c_in, L) -> (B, c_out, L * stride)."""
    if mode == "nearest":
        return nn.Sequential(nn.Upsample(scale_factor=stride, mode="nearest"), nn.Conv1d(c_in, c_out, KERNEL, padding=KERNEL // 2))
    # padding and output_padding make the length exactly L * stride, like TensorFlow's 'same'.
    padding = (KERNEL - stride + 1) // 2
    output_padding = stride - (KERNEL - 2 * padding)
    return nn.ConvTranspose1d(c_in, c_out, KERNEL, stride, padding=padding, output_padding=output_padding)


class WaveGANGenerator(nn.Module):
    def __init__(self, cfg: WaveGANConfig):
        super().__init__()
        self.cfg = cfg
        strides, _ = _LAYOUTS[cfg.segment]
        chans = cfg.channel_plan()
        self.first_channels = chans[0]
        self.dense = nn.Linear(cfg.latent_dim, 16 * chans[0])
        self.first_norm = nn.BatchNorm1d(chans[0]) if cfg.batchnorm else nn.Identity()
        layers: list[nn.Module] = []
        for i, stride in enumerate(strides):
            layers.append(_up_layer(chans[i], chans[i + 1], stride, cfg.upsample))
            last = i == len(strides) - 1
            if not last:
                if cfg.batchnorm:
                    layers.append(nn.BatchNorm1d(chans[i + 1]))
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)
        self.post = nn.Conv1d(cfg.channels, cfg.channels, cfg.post_filter, bias=False) if cfg.post_filter else None

    def _first(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, first_channels, 16): the dense layer, reshaped, normalised and rectified."""
        x = self.dense(z).view(z.shape[0], self.first_channels, 16)
        return F.relu(self.first_norm(x))

    def early_features(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, 16 * first_channels): the dense layer's output as the first convolution reads it."""
        return self._first(z).flatten(1)

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, channels, segment) audio in [-1, 1]."""
        x = torch.tanh(self.body(self._first(z)))
        if self.post is not None:
            # 'same' filtering needs asymmetric padding for even filter lengths.
            k = self.cfg.post_filter
            x = self.post(F.pad(x, ((k - 1) // 2, k // 2)))
        return x


class PhaseShuffle(nn.Module):
    """Shifts each item by its own random offset in [-radius, radius], reflect-padded (training only)."""

    def __init__(self, radius: int):
        super().__init__()
        self.radius = radius

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, L) -> (B, C, L)."""
        if not self.training or self.radius == 0:
            return x
        r = self.radius
        b, c, length = x.shape
        shifts = torch.randint(-r, r + 1, (b,), device=x.device)
        # Item i reads x at t - shift_i, reflected at both ends (what reflect padding by r then slicing
        # would give): one gather, several times cheaper on the CPU than the pad and per-shift copies.
        t = torch.arange(length, device=x.device) - shifts[:, None]
        t = torch.where(t < 0, -t, torch.where(t >= length, 2 * (length - 1) - t, t))
        return x.gather(2, t[:, None, :].expand(b, c, length))


class WaveGANCritic(nn.Module):
    def __init__(self, cfg: WaveGANConfig):
        super().__init__()
        self.cfg = cfg
        strides, _ = _LAYOUTS[cfg.segment]
        chans = list(reversed(cfg.channel_plan()))  # channels, d, 2d, ... 16d (32d)
        layers: list[nn.Module] = []
        for i, stride in enumerate(reversed(strides)):
            padding = (KERNEL - stride + 1) // 2
            layers += [nn.Conv1d(chans[i], chans[i + 1], KERNEL, stride, padding=padding), nn.LeakyReLU(0.2)]
            if i < len(strides) - 1 and cfg.phase_shuffle:
                layers.append(PhaseShuffle(cfg.phase_shuffle))
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(16 * chans[-1], 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, channels, segment) -> (B,) unbounded scores, higher for real."""
        return self.out(self.body(x).flatten(1)).squeeze(1)
