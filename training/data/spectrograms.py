"""Spectrogram training data: the waveform segments of dataset.py through the spectral front end.

    norm = spectrogram_norm(segments, params, clip=3.0)     # per-bin moments of the training split, cached
    specs = SpectrogramSegments(segments, params, norm, frames=128)
    x = specs.batch(np.arange(64), epoch=0)                  # (64, bins, frames) float32 in [-1, 1]

Every batch is cut exactly as the waveform models cut theirs (same order,
offsets and peak normalisation), then turned into normalised log-magnitude by
training/spectral.py, the front end export and the engine share. The per-bin
moments are computed once from the training split and cached beside the audio
cache, keyed by everything that shapes them; a run stores them in its
generator's buffers (models/spectrogram.py), so every checkpoint carries them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from pathlib import Path

import numpy as np
import torch

from ganstream.core.spectral import BinNorm, SpectralParams

from ..spectral import dataset_moments, log_magnitude, normalise
from .dataset import AudioSegments

log = logging.getLogger("ganstream.training.data")

MOMENTS_FORMAT = 1  # bump when the moments' computation changes


class SpectrogramSegments:
    """The segments of an `AudioSegments` as (bins, frames) normalised log-magnitude spectrograms."""

    def __init__(self, audio: AudioSegments, params: SpectralParams, norm: BinNorm, frames: int):
        if params.frames(audio.segment) < frames:
            raise ValueError(f"{audio.segment}-sample segments give {params.frames(audio.segment)} frames, fewer than {frames}")
        self.audio = audio
        self.params = params
        self.norm = norm
        self.frames = frames

    def __len__(self) -> int:
        return len(self.audio)

    def __repr__(self) -> str:
        return f"SpectrogramSegments({self.params.bins} bins x {self.frames} frames of {self.audio!r})"

    def batch(self, indices: np.ndarray, epoch: int) -> np.ndarray:
        """(B,) segment indices -> (B, bins, frames) float32 normalised log-magnitude in [-1, 1]."""
        audio = torch.from_numpy(self.audio.batch(indices, epoch))
        with torch.no_grad():
            spec = normalise(log_magnitude(audio, self.params), self.norm)
        return spec[..., : self.frames].numpy()


def spectrogram_norm(audio: AudioSegments, params: SpectralParams, clip: float) -> BinNorm:
    """The per-bin moments of `audio`'s segments under `params`, from the cache beside the audio cache when it has them."""
    path = _moments_path(audio, params, clip)
    try:
        with np.load(path, allow_pickle=False) as z:
            norm = BinNorm.from_arrays(z["mean"], z["std"], clip=float(z["clip"]))
        log.info("using cached spectrogram moments %s", path)
        return norm
    except (OSError, KeyError, ValueError):
        pass  # missing or damaged: compute them again
    norm = dataset_moments(audio, params, clip=clip)
    mean, std = norm.to_arrays()
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, mean=mean, std=std, clip=np.float64(clip))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not cache the spectrogram moments in %s (%s)", path, e)
    finally:
        tmp.unlink(missing_ok=True)
    return norm


def _moments_path(audio: AudioSegments, params: SpectralParams, clip: float) -> Path:
    """<audio cache stem>.moments-<key>.npz, the key covering the audio cache, the split and the front end."""
    ident = {
        "format": MOMENTS_FORMAT,
        "audio": audio.audio_path.name,  # names the audio cache's own key
        "segment": audio.segment,
        "normalize": audio.normalize,
        "offsets": [audio.random_offset, audio.seed],  # where epoch-0 segments start
        "segments": len(audio),
        "params": params.to_dict(),
        "clip": clip,
    }
    h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode())
    h.update(np.ascontiguousarray(audio.clips, dtype=np.int64).tobytes())  # which clips the split holds
    stem = audio.audio_path.name.removesuffix(".audio.npy")
    return audio.audio_path.with_name(f"{stem}.moments-{h.hexdigest()[:16]}.npz")
