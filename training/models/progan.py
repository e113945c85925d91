"""Progressive growing GAN (Karras, Aila, Laine and Lehtinen, ICLR 2018) for spectrograms.

As the progressive-growing article in shared/reference used it: 512 x 512
log-magnitude spectrograms (n_fft 1024, hop 128 at 16 kHz, about 4 s), grown
from 4 x 4 one stage at a time. The base may be non-square (4 x 8 grows into
128 x 256); every stage doubles both axes.

Generator: the latent is pixel-normalised, a dense layer makes the base map, a
3x3 convolution follows; each later block upsamples (nearest) and runs two 3x3
convolutions; a 1x1 "to spectrogram" layer per stage gives one channel.
Critic: the mirror image, with a 1x1 "from spectrogram" layer per stage, two
3x3 convolutions and 2x2 average pooling per block, and minibatch standard
deviation as an extra channel before the last block. Every layer uses the
equalised learning rate (weights drawn from N(0, 1) and scaled by He's constant
at run time) and LeakyReLU 0.2; every generator convolution is followed by
pixelwise feature normalisation.

Both networks take the stage (0 is the base) and the fade-in weight `alpha` of
its newest block: during a fade-in the output is the previous stage's,
upsampled, blended linearly with the new block's. The defaults (the last
stage, alpha 1) are the finished network, which export uses. Training scheduling
(which stage, which alpha) lives in training/progressive.py.

The generator's output is linear while it trains, as in the paper; in eval
mode it is clamped to the data's range [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .spectrogram import SpectrogramFrontEnd, SpectrogramGenerator

SLOPE = 0.2
HE_GAIN = math.sqrt(2.0)


@dataclass
class ProGANConfig(SpectrogramFrontEnd):
    kind: str = "progan"
    n_fft: int = 1024  # 512 bins once the Nyquist bin is dropped
    frames: int = 512
    base_bins: int = 4  # the first stage's spectrogram size; every stage doubles both
    base_frames: int = 4
    latent_dim: int = 512
    latent_dist: str = "normal"  # normal (the paper) | uniform in [-1, 1]
    fmap_base: int = 8192  # channels at stage s: min(fmap_max, fmap_base / 2^(s + 1)), as the paper's code
    fmap_max: int = 512
    mbstd_group: int = 4  # minibatch standard deviation over groups of this many items

    def validate(self) -> None:
        self.validate_front_end()
        if self.latent_dist not in ("uniform", "normal"):
            raise ValueError(f"latent_dist: 'uniform' or 'normal', not {self.latent_dist!r}")
        if min(self.base_bins, self.base_frames, self.latent_dim, self.fmap_base, self.fmap_max, self.mbstd_group) < 1:
            raise ValueError("base_bins, base_frames, latent_dim, fmap_base, fmap_max and mbstd_group must be positive")
        up_bins, up_frames = self.bins / self.base_bins, self.frames / self.base_frames
        if up_bins != up_frames or up_bins < 1 or not math.log2(up_bins).is_integer():
            raise ValueError(
                f"{self.bins} x {self.frames} is not {self.base_bins} x {self.base_frames} doubled a whole number of times "
                "on both axes; choose base_bins and base_frames to match"
            )

    @property
    def stages(self) -> int:
        """Stages from the base size to bins x frames, both included."""
        return int(round(math.log2(self.bins // self.base_bins))) + 1

    def resolution(self, stage: int) -> tuple[int, int]:
        """(bins, frames) generated at `stage`."""
        return self.base_bins * 2**stage, self.base_frames * 2**stage

    def channels(self, stage: int) -> int:
        return max(1, min(self.fmap_max, self.fmap_base // 2 ** (stage + 1)))


class EqualizedConv2d(nn.Module):
    """A 'same' convolution with the equalised learning rate: weights N(0, 1), scaled by gain / sqrt(fan_in) when used."""

    def __init__(self, c_in: int, c_out: int, kernel: int, gain: float = HE_GAIN):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale = gain / math.sqrt(c_in * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x: Tensor) -> Tensor:
        """(B, c_in, H, W) -> (B, c_out, H, W)."""
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    """A dense layer with the equalised learning rate."""

    def __init__(self, n_in: int, n_out: int, gain: float = HE_GAIN):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.scale = gain / math.sqrt(n_in)

    def forward(self, x: Tensor) -> Tensor:
        """(B, n_in) -> (B, n_out)."""
        return F.linear(x, self.weight * self.scale, self.bias)


class PixelNorm(nn.Module):
    """Scales each position's feature vector to unit root-mean-square over the channels."""

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, ...) -> (B, C, ...)."""
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class MinibatchStddev(nn.Module):
    """Appends one channel: the standard deviation of each feature over a group of items, averaged.

    Item b belongs to group b mod (B / G), as in the paper's code, and its new
    channel holds its group's value everywhere. G is `group` or, when that does
    not divide the batch, the largest divisor of the batch below it.
    """

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C + 1, H, W)."""
        b, c, h, w = x.shape
        g = min(self.group, b)
        while b % g:
            g -= 1
        y = x.view(g, -1, c, h, w)
        std = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)  # (B / G, C, H, W)
        stat = std.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).repeat(g, 1, h, w)  # (B, 1, H, W)
        return torch.cat([x, stat], dim=1)


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(SLOPE)


def _check_stage(stage: int | None, stages: int) -> int:
    if stage is None:
        return stages - 1
    if not 0 <= stage < stages:
        raise ValueError(f"stage {stage}: this network has stages 0 to {stages - 1}")
    return stage


class ProGANGenerator(SpectrogramGenerator):
    def __init__(self, cfg: ProGANConfig):
        super().__init__(cfg)
        self.cfg = cfg
        c0 = cfg.channels(0)
        self.base = (c0, cfg.base_bins, cfg.base_frames)
        # The paper's code gives the dense layer gain sqrt(2) / 4 at a 4 x 4 base: sqrt(2) per map position.
        self.dense = EqualizedLinear(cfg.latent_dim, c0 * cfg.base_bins * cfg.base_frames, HE_GAIN / math.sqrt(cfg.base_bins * cfg.base_frames))
        self.first = nn.Sequential(_lrelu(), PixelNorm(), EqualizedConv2d(c0, c0, 3), _lrelu(), PixelNorm())
        self.blocks = nn.ModuleList([nn.Identity()])  # stage 0 is `first`
        for s in range(1, cfg.stages):
            c_in, c_out = cfg.channels(s - 1), cfg.channels(s)
            self.blocks.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                EqualizedConv2d(c_in, c_out, 3), _lrelu(), PixelNorm(),
                EqualizedConv2d(c_out, c_out, 3), _lrelu(), PixelNorm(),
            ))
        self.to_spec = nn.ModuleList(EqualizedConv2d(cfg.channels(s), 1, 1, gain=1.0) for s in range(cfg.stages))
        self.pixel_norm = PixelNorm()

    def _base(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, channels(0), base_bins, base_frames): the base block, which every stage starts from."""
        return self.first(self.dense(self.pixel_norm(z)).view(z.shape[0], *self.base))

    def early_features(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, channels(0) * base_bins * base_frames): the base block's output.

        It is the earliest layer of the network export runs (the last stage, alpha 1), and the
        same at every stage, so a run's controls do not depend on how far it grew."""
        return self._base(z).flatten(1)

    def forward(self, z: Tensor, stage: int | None = None, alpha: float = 1.0) -> Tensor:
        """(B, latent_dim) -> (B, 1, *cfg.resolution(stage)) normalised log-magnitude; stage None: the last."""
        stage = _check_stage(stage, self.cfg.stages)
        x = self._base(z)
        for s in range(1, stage):
            x = self.blocks[s](x)
        if stage == 0:
            out = self.to_spec[0](x)
        else:
            out = self.to_spec[stage](self.blocks[stage](x))
            if alpha < 1.0:
                previous = F.interpolate(self.to_spec[stage - 1](x), scale_factor=2, mode="nearest")
                out = torch.lerp(previous, out, alpha)
        return out if self.training else out.clamp(-1.0, 1.0)


class ProGANCritic(nn.Module):
    def __init__(self, cfg: ProGANConfig):
        super().__init__()
        self.cfg = cfg
        c0 = cfg.channels(0)
        self.from_spec = nn.ModuleList(nn.Sequential(EqualizedConv2d(1, cfg.channels(s), 1), _lrelu()) for s in range(cfg.stages))
        self.blocks = nn.ModuleList([nn.Identity()])  # stage 0 is `last`
        for s in range(1, cfg.stages):
            c_in, c_out = cfg.channels(s), cfg.channels(s - 1)
            self.blocks.append(nn.Sequential(
                EqualizedConv2d(c_in, c_in, 3), _lrelu(),
                EqualizedConv2d(c_in, c_out, 3), _lrelu(),
                nn.AvgPool2d(2),
            ))
        self.last = nn.Sequential(
            MinibatchStddev(cfg.mbstd_group),
            EqualizedConv2d(c0 + 1, c0, 3), _lrelu(),
            nn.Flatten(),
            EqualizedLinear(c0 * cfg.base_bins * cfg.base_frames, c0), _lrelu(),
            EqualizedLinear(c0, 1, gain=1.0),
        )

    def forward(self, x: Tensor, stage: int | None = None, alpha: float = 1.0) -> Tensor:
        """(B, 1, *cfg.resolution(stage)) -> (B,) unbounded scores, higher for real; stage None: the last."""
        stage = _check_stage(stage, self.cfg.stages)
        if tuple(x.shape[-2:]) != self.cfg.resolution(stage):
            raise ValueError(f"stage {stage} takes {self.cfg.resolution(stage)} spectrograms, not {tuple(x.shape[-2:])}")
        h = self.from_spec[stage](x)
        if stage > 0:
            h = self.blocks[stage](h)
            if alpha < 1.0:
                h = torch.lerp(self.from_spec[stage - 1](F.avg_pool2d(x, 2)), h, alpha)
        for s in range(stage - 1, 0, -1):
            h = self.blocks[s](h)
        return self.last(h).squeeze(1)
