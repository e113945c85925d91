"""Decoding one audio file into mono float32 at the model's rate.

Everything a file can do wrong is reported as a `SkipFile` carrying a short,
human reason; the caller decides to warn and move on. Nothing here knows about
segments: `sound_span` finds where a clip's sound starts and ends, and the
dataset decides what to trim, pad or skip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from ganstream.core.resample import resample_clip

# Lower-case suffixes searched for in a folder; anything else is ignored silently.
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".aifc")

# Frames read per block: mixing to mono block by block keeps peak memory near
# the mono size instead of channels x the file.
_BLOCK = 1 << 20


class SkipFile(Exception):
    """A file that cannot be used; `str(e)` is the reason shown to the user."""


def mp3_supported() -> bool:
    """libsndfile reads MP3 only from version 1.1.0 on."""
    return "MP3" in sf.available_formats()


def to_mono(frames: np.ndarray) -> np.ndarray:
    """(T, C) -> (T,) float32, the mean of the channels."""
    if frames.ndim == 1:
        return frames.astype(np.float32, copy=False)
    return frames.mean(axis=1, dtype=np.float32)


def decode(path: Path, sample_rate: int) -> np.ndarray:
    """Reads any supported file -> (T,) float32 mono at `sample_rate`; raises SkipFile with the reason."""
    path = Path(path)
    if path.suffix.lower() == ".mp3" and not mp3_supported():
        raise SkipFile(f"mp3 is not supported by the installed libsndfile {sf.__libsndfile_version__} (needs 1.1.0 or newer)")
    try:
        if path.stat().st_size == 0:
            raise SkipFile("empty (0 bytes)")
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            # Integer PCM of any width and float all arrive as float32 in [-1, 1) here.
            blocks = [to_mono(b) for b in f.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True)]
    except SkipFile:
        raise
    except Exception as e:  # a single bad file must never stop preparation
        # libsndfile's own message repeats the path; its error_string is just the cause.
        cause = getattr(e, "error_string", None) or str(e)
        raise SkipFile(f"corrupt or unreadable ({cause})") from None
    x = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if x.size == 0:
        raise SkipFile("empty (no audio frames)")
    if not np.isfinite(x).all():
        raise SkipFile("corrupt (contains NaN or infinite samples)")
    return resample_clip(x, rate, sample_rate)


def sound_span(x: np.ndarray, rel_db: float) -> tuple[int, int]:
    """(T,) clip -> (first, last + 1): the samples within `rel_db` (< 0) of its peak; (0, 0) for digital silence.

    Relative to the peak rather than to full scale, so a quiet recording's
    onset is found where a loud one's is.
    """
    peak = float(np.abs(x).max(initial=0.0))
    if peak == 0.0:
        return 0, 0
    loud = np.flatnonzero(np.abs(x) >= peak * 10.0 ** (rel_db / 20.0))
    return int(loud[0]), int(loud[-1]) + 1
