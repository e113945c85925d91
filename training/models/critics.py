"""The critics a waveform GAN can train beside its family's own: one registry, `CRITICS`, keyed by `loss.critics`.

- `wave`: the family's critic (WaveGAN's, the 1D DCGAN's), as `build_critic` makes it.
- `stft`: a multi-resolution spectrogram critic (UnivNet's MRD, as in Vocos and DAC): a small 2D
  convolution stack on the log-magnitude at each FFT size, striding over frequency.
- `multiscale`: MelGAN's multi-scale critic: a fully convolutional waveform critic on the audio
  average-pooled by each factor (1, 2, 4: full, half and quarter rate).
- `period`: HiFi-GAN's multi-period critic: the audio folded into (T / p, p) for each prime period
  p, and 2D convolutions that stride along T / p only, so each sees every p-th sample: periodic
  structure (a pitch's cycles) that the other critics average away.

Every critic maps (B, channels, T) audio to raw scores, higher for real. The new ones return one
score per item and resolution (or scale), (B, K); the losses average elementwise, so each resolution
is its own discriminator with its own loss, as in HiFi-GAN, and the sum over `loss.critics` weighs
each critic the same whatever its K.

Their features, for feature matching, are the outputs of every LeakyReLU, taken by forward hooks
(`FeatureTap`): the families' critics expose them that way without a change to their modules.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..spectral import SpectralParams, log_magnitude
from . import build_critic

SLOPE = 0.2  # LeakyReLU slope, as the families' critics use
# The STFT critic's magnitude floor before the log: about 80 dB below a full-scale sine's peak bin (128 at
# n_fft 512). The front end's 1e-5 made d log|X| / dx = 1 / |X| so large in quiet bins that R1 pinned the
# critic flat: on synth:piano (wavegan-laptop.yaml, transpose, 40 steps) its R1 at step 0 was 5.1 against 0.12
# at 1e-2, and at gamma 1 its real-fake score gap stayed at 0.00 against 0.11 (0.54 at gamma 0.1).
STFT_FLOOR = 1e-2


class _Resolution(nn.Module):
    """One resolution of `STFTCritic`: (B, C, T) audio -> (B,) mean of its score map."""

    def __init__(self, channels: int, width: int, n_fft: int):
        super().__init__()
        self.params = SpectralParams(n_fft=n_fft, hop=n_fft // 4, log_floor=STFT_FLOOR)
        # (bins, frames) layout; kernels 9 bins x 3 frames, three of them halving the bins (UnivNet, Vocos).
        # The first also halves the frames: a quarter of the cost (0.25 s -> 0.065 s forward and backward at
        # width 8, batch 16, n_fft 512, one thread), and its frames still overlap by half.
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(3):
            stride = (2, 2) if i == 0 else (2, 1)
            layers += [nn.Conv2d(c_in, width, (9, 3), stride=stride, padding=(4, 1)), nn.LeakyReLU(SLOPE)]
            c_in = width
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(SLOPE), nn.Conv2d(width, 1, 3, padding=1)]
        # Channels-last: oneDNN's 2D convolutions with few channels run about twice as fast on a CPU that way.
        self.body = nn.Sequential(*layers).to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B,)."""
        # float32: the FFT takes no bfloat16 (what a bf16-autocast generator step hands over).
        spec = log_magnitude(x.float(), self.params)  # (B, C, n_fft / 2, T / hop), torch.stft with the periodic Hann window
        return self.body(spec.contiguous(memory_format=torch.channels_last)).mean(dim=(1, 2, 3))


class STFTCritic(nn.Module):
    """Multi-resolution spectrogram critic: (B, channels, T) audio -> (B, len(ffts)) scores."""

    def __init__(self, channels: int, width: int, ffts: list[int]):
        super().__init__()
        self.resolutions = nn.ModuleList(_Resolution(channels, width, n) for n in ffts)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, K), one score per resolution."""
        return torch.stack([r(x) for r in self.resolutions], dim=1)


class _Scale(nn.Module):
    """One scale of `MultiScaleCritic`: (B, C, T) audio -> (B,) mean of its score map (MelGAN's block, narrower)."""

    def __init__(self, channels: int, width: int, factor: int):
        super().__init__()
        self.factor = factor
        w = width
        self.body = nn.Sequential(
            nn.Conv1d(channels, w, 15, padding=7), nn.LeakyReLU(SLOPE),
            # Grouped strided layers as MelGAN's, with kernels of 21 rather than 41: half the CPU time
            # (0.11 s -> 0.05 s for the first, width 8, batch 16, one thread), still 5 strides wide.
            nn.Conv1d(w, 4 * w, 21, stride=4, padding=10, groups=4), nn.LeakyReLU(SLOPE),
            nn.Conv1d(4 * w, 8 * w, 21, stride=4, padding=10, groups=w), nn.LeakyReLU(SLOPE),
            nn.Conv1d(8 * w, 8 * w, 5, padding=2), nn.LeakyReLU(SLOPE),
            nn.Conv1d(8 * w, 1, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B,)."""
        if self.factor > 1:
            x = F.avg_pool1d(x, self.factor)
        return self.body(x).mean(dim=(1, 2))


class MultiScaleCritic(nn.Module):
    """Multi-scale waveform critic: (B, channels, T) audio -> (B, len(factors)) scores."""

    def __init__(self, channels: int, width: int, factors: list[int]):
        super().__init__()
        self.scales = nn.ModuleList(_Scale(channels, width, f) for f in factors)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, K), one score per scale."""
        return torch.stack([s(x) for s in self.scales], dim=1)


class _Period(nn.Module):
    """One period of `PeriodCritic`: (B, C, T) audio -> (B,) mean of its score map."""

    def __init__(self, channels: int, width: int, period: int):
        super().__init__()
        self.period = period
        # HiFi-GAN's (5, 1) kernels striding 3 along the folded time axis, at a CPU's widths (its 32..1024 channels
        # are a GPU's): width, 2 width, 4 width, 4 width.
        layers: list[nn.Module] = []
        c_in = channels
        for c_out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(c_in, c_out, (5, 1), stride=(3, 1), padding=(2, 0)), nn.LeakyReLU(SLOPE)]
            c_in = c_out
        layers += [nn.Conv2d(c_in, c_in, (5, 1), padding=(2, 0)), nn.LeakyReLU(SLOPE), nn.Conv2d(c_in, 1, (3, 1), padding=(1, 0))]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B,)."""
        b, c, t = x.shape
        pad = -t % self.period
        if pad:  # reflect, as HiFi-GAN: zeros would be a step the critic could read as fake
            x = F.pad(x, (0, pad), mode="reflect")
        folded = x.float().view(b, c, (t + pad) // self.period, self.period)  # (B, C, T / p, p)
        return self.body(folded).mean(dim=(1, 2, 3))


class PeriodCritic(nn.Module):
    """Multi-period waveform critic: (B, channels, T) audio -> (B, len(periods)) scores."""

    def __init__(self, channels: int, width: int, periods: list[int]):
        super().__init__()
        self.periods = nn.ModuleList(_Period(channels, width, p) for p in periods)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, K), one score per period."""
        return torch.stack([p(x) for p in self.periods], dim=1)


# loss.critics name -> builder from (model config, loss config). The order of `loss.critics` is the order they are built in.
CRITICS: dict[str, Callable[[Any, Any], nn.Module]] = {
    "wave": lambda model, loss: build_critic(model),
    "stft": lambda model, loss: STFTCritic(model.channels, loss.stft_channels, loss.stft_ffts),
    "multiscale": lambda model, loss: MultiScaleCritic(model.channels, loss.multiscale_channels, loss.multiscale_scales),
    "period": lambda model, loss: PeriodCritic(model.channels, loss.period_channels, loss.period_periods),
}


class FeatureTap:
    """Within `with FeatureTap(critic) as tap:`, every call of `critic` appends its LeakyReLU outputs to `tap.features`."""

    def __init__(self, critic: nn.Module):
        self.activations = [m for m in critic.modules() if isinstance(m, nn.LeakyReLU)]
        if not self.activations:
            raise ValueError(f"{type(critic).__name__}: no LeakyReLU to take features from")
        self.features: list[Tensor] = []
        self._handles: list[Any] = []

    def __enter__(self) -> FeatureTap:
        self.features = []
        self._handles = [m.register_forward_hook(self._keep) for m in self.activations]
        return self

    def _keep(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        self.features.append(output)

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def feature_matching(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    """Salimans et al.'s feature matching, per layer: L1 between the batch means of real and fake activations
    (each (B, ...)), averaged over layers. Batch means, not pairs: real and fake items are unrelated here."""
    _check_layers(real, fake)
    return torch.stack([(r.mean(0) - f.mean(0)).abs().mean() for r, f in zip(real, fake)]).mean()


def paired_feature_matching(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    """HiFi-GAN's feature matching, for a fake that reconstructs its real (a vocoder's): L1 between each
    pair's activations, averaged over elements and layers."""
    _check_layers(real, fake)
    return torch.stack([(r - f).abs().mean() for r, f in zip(real, fake)]).mean()


def _check_layers(real: list[Tensor], fake: list[Tensor]) -> None:
    if len(real) != len(fake) or not real:
        raise ValueError(f"feature matching needs the same layers of real and fake, not {len(real)} and {len(fake)}")
