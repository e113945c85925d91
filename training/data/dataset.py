"""Segments of audio for training: preparation, the memory-mapped cache, splits and batches.

A source (a folder or `synth:NAME`) is prepared once into two cache files named
by a hash of everything that shapes them:

    <key>.audio.npy   (total,) float32, every usable clip back to back at the model rate
    <key>.index.npz   clip and segment tables plus a JSON `meta` string

A folder's clips are shaped before they are written (`_shape_clip`): leading
silence trimmed to just before the onset, clips shorter than a segment
zero-padded at the end into exactly one segment that starts at the onset, and
only silent clips or clicks too short to hold a sound skipped.

The index is written last, so its presence means the audio beside it is whole;
both go through a temp file and `os.replace`. A cache that fails to load or to
match its index is rebuilt. Splits are chosen per clip at load time, so one
cache serves both `train` and `holdout`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..config import DataConfig
from . import audio, synth

log = logging.getLogger("ganstream.training.data")

# Bump whenever decoding, resampling, synthesis or the file layout changes what a cache holds.
CACHE_FORMAT = 1
SYNTH_PREFIX = "synth:"
SPLITS = ("train", "holdout")

# A segment quieter than this peak is scaled as if it peaked here, so near-silence
# reached by a random offset is never blown up into full-scale noise.
_PEAK_FLOOR = 1e-4
_STALE_TEMP_S = 3600.0  # temp files untouched this long belong to a dead preparation
# Kept before a clip's onset when its leading silence is trimmed: the first rise of an attack can
# sit below data.trim_db, and a fixed lead costs the generator only 5 ms of learned latency.
_ONSET_LEAD_S = 0.005
# What the summary adds after a count of skipped files, where a setting would have kept them.
_SKIP_HINTS = {"shorter than one segment": " (data.pad_short=true zero-pads them)"}


class DataError(ValueError):
    """A data source that cannot give any training segments; the message names it."""


@dataclass(frozen=True)
class _Layout:
    """What fixes the segment table: the cache key covers all of it."""

    segment: int
    hop: int  # samples between nominal segment starts
    sample_rate: int
    silence_db: float | None  # None: no silence filter (synth sets are never silent)


@dataclass(frozen=True)
class _ClipRules:
    """How a folder's clips are trimmed, padded or skipped (DataConfig's fields of the same names).

    Synth clips are made to measure and never pass through these, so they stay
    out of _Layout and out of the synth sets' cache keys.
    """

    pad_short: bool
    trim_leading: bool
    trim_db: float
    min_ms: float

    @classmethod
    def of(cls, cfg: DataConfig) -> _ClipRules:
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


class AudioSegments:
    """The segments of one split, read from the memory-mapped cache.

    Segment i starts at its nominal position plus a per-epoch offset in
    [0, hop), drawn from a hash of (seed, epoch, segment id) and limited to what
    keeps the segment inside its clip.
    """

    def __init__(
        self,
        audio_path: Path,
        starts: np.ndarray,
        room: np.ndarray,
        ids: np.ndarray,
        clips: np.ndarray,
        layout: _Layout,
        *,
        seed: int,
        random_offset: bool,
        normalize: bool,
        source: str,
        clip_count: int,
        clip_names: list[str],
        folder: Path | None = None,
    ) -> None:
        self.audio_path = Path(audio_path)
        self._starts = starts  # (N,) int64 nominal start in the concatenated audio
        self._room = room  # (N,) int64 how far the segment may move before it leaves its clip
        self._ids = ids  # (N,) int64 row in the full segment table: the offset hash's counter
        self.clips = clips  # (N,) int64 clip number of each segment
        self.segment = layout.segment
        self.hop = layout.hop
        self.sample_rate = layout.sample_rate
        self.seed = seed
        self.random_offset = random_offset
        self.normalize = normalize
        self.source = source
        self.clip_count = clip_count  # clips in this split
        self.clip_names = clip_names  # relative path of every clip in the cache (folders only), by clip number
        self.folder = folder  # the folder clip_names are relative to; None for a synth set
        self._open()

    def _open(self) -> None:
        # A plain ndarray view of the memmap: slicing it skips np.memmap's Python-level overhead.
        self._audio = np.asarray(np.load(self.audio_path, mmap_mode="r"))

    def __getstate__(self) -> dict[str, Any]:
        # Pickled for data-loader workers: send the path, not a copy of the audio.
        state = self.__dict__.copy()
        del state["_audio"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        seconds = len(self) * self.hop / self.sample_rate
        return (
            f"AudioSegments({self.source!r}: {len(self)} segments of {self.segment} from {self.clip_count} clips, "
            f"~{seconds / 60:.1f} min at {self.sample_rate} Hz)"
        )

    def offsets(self, indices: np.ndarray, epoch: int) -> np.ndarray:
        """(B,) segment indices -> (B,) int64 offsets in [0, min(hop, room + 1)) for this epoch: inside the clip."""
        idx = np.asarray(indices, dtype=np.int64)
        if not self.random_offset or self.hop <= 1:
            return np.zeros(idx.shape, np.int64)
        h = _hash64(self._ids[idx], _mix_key(self.seed, epoch))
        # Uniform over the reachable offsets rather than clamped: clamping would pile
        # half of a clip's last segments onto the very end of the clip.
        reach = np.minimum(self._room[idx] + 1, self.hop).astype(np.uint64)
        return (h % reach).astype(np.int64)

    def batch(self, indices: np.ndarray, epoch: int) -> np.ndarray:
        """(B,) segment indices -> (B, segment) float32, each peak-normalised to 1 if `normalize`."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        starts = self._starts[idx] + self.offsets(idx, epoch)
        out = np.empty((len(idx), self.segment), np.float32)
        # Row slices of the memmap beat one fancy-index gather: no (B, segment) index array.
        for row, start in enumerate(starts.tolist()):
            out[row] = self._audio[start : start + self.segment]
        if self.normalize and len(idx):
            peak = np.abs(out).max(axis=1, keepdims=True)
            out /= np.maximum(peak, _PEAK_FLOOR)
        return out


def load_dataset(cfg: DataConfig, segment: int, seed: int, split: str = "train", progress: bool = True) -> AudioSegments:
    """Prepares (or reuses the cache of) `cfg.source` and returns the segments of `split`.

    `split` is "train" or "holdout"; the holdout is about `cfg.holdout` of the
    clips, chosen by `seed`, so overlapping segments never straddle the split.
    Raises DataError for an unknown source or one with no usable audio.
    """
    _check(cfg, segment, split)
    hop = max(1, round(cfg.hop * segment))
    source = cfg.source
    folder: Path | None = None
    if source.startswith("set:"):  # a real set (real_sets.py), built on first use; from here on a folder
        from . import real_sets  # imported here: it imports this module, and only these sources need it

        source = str(real_sets.resolve_source(source, _cache_root(cfg)))
    if source.startswith(SYNTH_PREFIX):
        name = source[len(SYNTH_PREFIX) :]
        if name not in synth.SYNTH_SETS:
            raise DataError(f"unknown data source {source!r}: known synth sets are {_synth_names()}")
        layout = _Layout(segment, hop, cfg.sample_rate, None)
        ident = {"kind": source, "items": cfg.synth_items, "seed": seed}
        tag = f"synth-{name}"

        def build(w: _AudioWriter) -> dict[str, Any]:
            return _build_synth(w, name, cfg.synth_items, layout, seed, progress)

    else:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"data source {source!r} is neither an existing folder nor a synth set (known: {_synth_names()})"
            )
        layout = _Layout(segment, hop, cfg.sample_rate, cfg.silence_db)
        rules = _ClipRules.of(cfg)
        files = _scan(folder)
        if not files:
            raise DataError(f"no audio files ({', '.join(audio.AUDIO_SUFFIXES)}) found in folder {folder}")
        ident = {
            "kind": "folder",
            "files": [[str(p.relative_to(folder).as_posix()), s, m] for p, s, m in files],
            "clips": dataclasses.asdict(rules),  # trimming and padding change what is cached
        }
        tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in folder.resolve().name)[:40] or "folder"

        def build(w: _AudioWriter) -> dict[str, Any]:
            return _build_folder(w, folder, [p for p, _, _ in files], layout, rules, progress)

    key = _cache_key(ident, layout)
    root = _cache_root(cfg)
    stem = root / f"{tag}-{key[:20]}"
    index = _load_index(stem, key)
    if index is None:
        index = _build_cache(stem, key, build)
    else:
        log.info("using cached %s (%s): %s", source, _paths(stem)[0], index["meta"]["summary"])
    return _split(index, stem, layout, cfg, seed, split, folder)


def _check(cfg: DataConfig, segment: int, split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    problems = []
    if segment < 1:
        problems.append(f"segment must be at least 1 sample, got {segment}")
    if cfg.sample_rate < 1:
        problems.append(f"data.sample_rate must be positive, got {cfg.sample_rate}")
    if not cfg.hop > 0:
        problems.append(f"data.hop must be positive, got {cfg.hop}")
    if not 0 <= cfg.holdout < 1:
        problems.append(f"data.holdout must be in [0, 1), got {cfg.holdout}")
    if cfg.synth_items < 1:
        problems.append(f"data.synth_items must be at least 1, got {cfg.synth_items}")
    if not cfg.trim_db < 0:
        problems.append(f"data.trim_db must be negative (dB below the peak), got {cfg.trim_db}")
    if not cfg.min_ms >= 0:
        problems.append(f"data.min_ms must be 0 or more, got {cfg.min_ms}")
    if problems:
        raise DataError("; ".join(problems))


def _synth_names() -> str:
    return ", ".join(SYNTH_PREFIX + n for n in synth.SYNTH_SETS)


# --- folder preparation ----------------------------------------------------


def _scan(folder: Path) -> list[tuple[Path, int, int]]:
    """Audio files under `folder`, sorted by relative path, with (size, mtime_ns); hidden files skipped.

    Hidden names are left out because they are mostly OS litter (macOS `._x.wav`
    resource forks, `.Trash`), which would otherwise each warn as corrupt.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(audio.AUDIO_SUFFIXES):
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:
                continue  # a dangling link or a file removed meanwhile: nothing to key on
            found.append((path, st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: f[0].relative_to(folder).as_posix())
    return found


def _segment_table(clip: np.ndarray, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """(T,) clip -> nominal starts (S,) int64 and their RMS level in dBFS (S,) float64."""
    starts = np.arange(0, len(clip) - layout.segment + 1, layout.hop, dtype=np.int64)
    energy = np.concatenate(([0.0], np.cumsum(np.square(clip, dtype=np.float64))))
    mean_square = np.maximum(energy[starts + layout.segment] - energy[starts], 0.0) / layout.segment
    return starts, 10.0 * np.log10(np.maximum(mean_square, 1e-30))


def _shape_clip(clip: np.ndarray, layout: _Layout, rules: _ClipRules) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(T,) decoded clip -> (the clip as cached, its nominal segment starts, samples trimmed, padded?).

    Raises SkipFile for a clip that is silent or too short to hold a sound, and
    for one shorter than a segment when padding is off.
    """
    assert layout.silence_db is not None  # folders always filter silence
    first, stop = audio.sound_span(clip, rules.trim_db)
    if stop == 0:
        raise audio.SkipFile("silent (every sample is zero)")
    sound_ms = (stop - first) * 1000.0 / layout.sample_rate
    if sound_ms < rules.min_ms:
        raise audio.SkipFile(
            f"too short to hold a sound ({sound_ms:.1f} ms within {rules.trim_db:g} dB of its peak < data.min_ms={rules.min_ms:g})"
        )
    lead = max(0, first - round(_ONSET_LEAD_S * layout.sample_rate)) if rules.trim_leading else 0
    clip = clip[lead:]
    if len(clip) >= layout.segment:
        starts, level = _segment_table(clip, layout)
        loud = level >= layout.silence_db
        if not loud.any():
            raise audio.SkipFile(f"silent (every segment below {layout.silence_db:g} dBFS)")
        return clip, starts[loud], lead, False
    if not rules.pad_short:
        raise audio.SkipFile(f"shorter than one segment ({len(clip)} samples < {layout.segment}, and data.pad_short is false)")
    # Measured over the clip's own samples: the padding would drag a quiet one-shot under the threshold.
    level = 10.0 * np.log10(max(float(np.mean(np.square(clip, dtype=np.float64))), 1e-30))
    if level < layout.silence_db:
        raise audio.SkipFile(f"silent ({level:.1f} dBFS < {layout.silence_db:g})")
    # One segment at offset 0 (its room is 0): random offsets would only slide the onset into the padding.
    return np.pad(clip, (0, layout.segment - len(clip))), np.zeros(1, np.int64), lead, True


def _build_folder(
    writer: _AudioWriter, folder: Path, files: list[Path], layout: _Layout, rules: _ClipRules, progress: bool
) -> dict[str, Any]:
    tables = _Tables()
    skipped: Counter[str] = Counter()
    names: list[str] = []
    padded = trimmed = 0
    # While the bar is drawn, console log lines go through tqdm.write so they do not tear it.
    with logging_redirect_tqdm() if progress else contextlib.nullcontext():
        for path in tqdm(files, desc=f"decoding {folder.name}", unit="file", disable=not progress, leave=False):
            rel = path.relative_to(folder).as_posix()
            try:
                clip, starts, lead, pad = _shape_clip(audio.decode(path, layout.sample_rate), layout, rules)
            except audio.SkipFile as e:
                reason = str(e)
                log.warning("skipped %s: %s", path, reason)
                skipped[reason.split(" (")[0]] += 1
                continue
            tables.add(writer.append(clip), len(clip), starts, layout.segment)
            names.append(rel)
            padded += pad
            trimmed += lead > 0
    summary = f"used {len(names)} files, skipped {sum(skipped.values())}"
    if skipped:
        summary += ": " + ", ".join(f"{n} {why}{_SKIP_HINTS.get(why, '')}" for why, n in sorted(skipped.items()))
    if padded:
        summary += (
            f"; {padded} of the {len(names)} used were shorter than one segment ({layout.segment} samples) "
            "and are zero-padded at the end"
        )
    if trimmed:
        summary += f"; {trimmed} had leading silence trimmed to {_ONSET_LEAD_S * 1000:g} ms before the onset"
    if not names:
        raise DataError(f"no usable audio in folder {folder}: {summary}")
    (log.warning if skipped else log.info)("%s: %s (%d segments)", folder, summary, tables.count())
    return {"tables": tables, "names": names, "summary": summary}


# --- synth preparation -----------------------------------------------------


def _build_synth(writer: _AudioWriter, name: str, items: int, layout: _Layout, seed: int, progress: bool) -> dict[str, Any]:
    tables = _Tables()
    clips = synth.generate(name, items, layout.segment, layout.sample_rate, seed)
    for clip in tqdm(clips, total=items, desc=f"synth:{name}", unit="clip", disable=not progress, leave=False):
        # Every clip is exactly one segment long, so its offsets are always 0.
        tables.add(writer.append(clip), len(clip), np.zeros(1, np.int64), layout.segment)
    return {"tables": tables, "names": [], "summary": f"generated {items} clips"}


# --- tables, splits and offsets --------------------------------------------


class _Tables:
    """Clip and segment tables accumulated while the audio is written."""

    def __init__(self) -> None:
        self.clip_start: list[int] = []
        self.clip_length: list[int] = []
        self.seg: list[np.ndarray] = []  # per clip: (S, 3) [absolute start, room, clip]

    def add(self, clip_start: int, clip_length: int, starts: np.ndarray, segment: int) -> None:
        clip = len(self.clip_start)
        self.clip_start.append(clip_start)
        self.clip_length.append(clip_length)
        room = clip_length - segment - starts
        self.seg.append(np.stack([clip_start + starts, room, np.full_like(starts, clip)], axis=1))

    def count(self) -> int:
        return sum(len(s) for s in self.seg)

    def arrays(self) -> dict[str, np.ndarray]:
        seg = np.concatenate(self.seg) if self.seg else np.zeros((0, 3), np.int64)
        return {
            "clip_start": np.asarray(self.clip_start, np.int64),
            "clip_length": np.asarray(self.clip_length, np.int64),
            "seg_start": seg[:, 0].astype(np.int64),
            "seg_room": seg[:, 1].astype(np.int64),
            "seg_clip": seg[:, 2].astype(np.int64),
        }


def holdout_clips(clip_count: int, fraction: float, seed: int) -> np.ndarray:
    """(K,) sorted clip numbers held out: round(fraction x clips), at least 1 when fraction > 0 and clips >= 2."""
    if clip_count < 2 or fraction <= 0:
        return np.zeros(0, np.int64)
    k = min(clip_count - 1, max(1, round(fraction * clip_count)))
    order = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, 0x401D]).permutation(clip_count)
    return np.sort(order[:k]).astype(np.int64)


def _split(
    index: dict[str, Any], stem: Path, layout: _Layout, cfg: DataConfig, seed: int, split: str, folder: Path | None
) -> AudioSegments:
    arrays = index["arrays"]
    clip_count = len(arrays["clip_start"])
    held = np.zeros(clip_count, bool)
    held[holdout_clips(clip_count, cfg.holdout, seed)] = True
    rows = np.flatnonzero(held[arrays["seg_clip"]] == (split == "holdout"))
    return AudioSegments(
        _paths(stem)[0],
        arrays["seg_start"][rows],
        arrays["seg_room"][rows],
        rows.astype(np.int64),
        arrays["seg_clip"][rows],
        layout,
        seed=seed,
        random_offset=cfg.random_offset,
        normalize=cfg.normalize,
        source=cfg.source,
        clip_count=int(held.sum() if split == "holdout" else clip_count - held.sum()),
        clip_names=index["meta"]["names"],
        folder=folder,
    )


_M64 = 0xFFFFFFFFFFFFFFFF


def _mix_key(seed: int, epoch: int) -> int:
    """(seed, epoch) -> one 64-bit key, in Python ints (numpy scalars would warn on overflow)."""
    return _splitmix(_splitmix(seed & _M64) ^ (epoch & _M64))


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _hash64(counter: np.ndarray, key: int) -> np.ndarray:
    """(N,) int64 counters -> (N,) uint64, the splitmix64 finaliser of counter + key (array ops wrap silently)."""
    x = counter.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(key)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


# --- the cache ---------------------------------------------------------------


def _cache_root(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        root = Path(cfg.cache_dir).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "ganstream"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data cache folder {root} ({e.strerror}); set data.cache_dir") from None
    return root


def _paths(stem: Path) -> tuple[Path, Path]:
    """The cache's (audio, index) files."""
    return stem.parent / f"{stem.name}.audio.npy", stem.parent / f"{stem.name}.index.npz"


def _cache_key(ident: dict[str, Any], layout: _Layout) -> str:
    blob = {"format": CACHE_FORMAT, **ident, **dataclasses.asdict(layout)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


class _AudioWriter:
    """Appends float32 clips to a temp .npy whose header is patched with the final length."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        self._f = open(self.tmp, "wb")
        self._header = self._write_header(0)
        self.total = 0

    def _write_header(self, length: int) -> int:
        # numpy pads the header so its size does not depend on the length's digits: patching in place is safe.
        np.lib.format.write_array_header_1_0(self._f, {"descr": "<f4", "fortran_order": False, "shape": (length,)})
        return self._f.tell()

    def append(self, clip: np.ndarray) -> int:
        """Writes (T,) audio; returns where it starts in the concatenation."""
        start = self.total
        self._f.write(np.ascontiguousarray(clip, dtype="<f4").tobytes())
        self.total += len(clip)
        return start

    def commit(self) -> None:
        self._f.seek(0)
        if self._write_header(self.total) != self._header:
            raise RuntimeError("npy header changed size")  # cannot happen with numpy's growth padding
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self._f.close()
        self.tmp.unlink(missing_ok=True)


def _build_cache(stem: Path, key: str, build: Callable[[_AudioWriter], dict[str, Any]]) -> dict[str, Any]:
    _sweep_temps(stem)
    audio_path, index_path = _paths(stem)
    # An older index must not outlive the audio it described.
    index_path.unlink(missing_ok=True)
    writer = _AudioWriter(audio_path)
    try:
        result = build(writer)
        tables: _Tables = result["tables"]
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    arrays = tables.arrays()
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "total": writer.total,
        "names": result["names"],
        "summary": result["summary"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    tmp = index_path.with_name(f"{index_path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, index_path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"meta": meta, "arrays": arrays}


def _load_index(stem: Path, key: str) -> dict[str, Any] | None:
    """The cached tables, or None when they are missing, unreadable or do not match the audio beside them."""
    audio_path, index_path = _paths(stem)
    if not index_path.exists():
        return None
    try:
        with np.load(index_path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in ("clip_start", "clip_length", "seg_start", "seg_room", "seg_clip")}
        mm = np.load(audio_path, mmap_mode="r")
        ok = (
            meta.get("format") == CACHE_FORMAT
            and meta.get("key") == key
            and mm.dtype == np.float32
            and mm.shape == (meta["total"],)
            and int(arrays["clip_length"].sum()) == meta["total"]
            and len(arrays["seg_start"]) == len(arrays["seg_room"]) == len(arrays["seg_clip"])
        )
        del mm
    except Exception as e:  # any damage to the cache means: build it again
        log.warning("rebuilding the data cache %s: it could not be read (%s)", stem, e)
        return None
    if not ok:
        log.warning("rebuilding the data cache %s: it does not match its index", stem)
        return None
    return {"meta": meta, "arrays": arrays}


def _sweep_temps(stem: Path) -> None:
    """Removes temp files of this key left by preparations that were killed."""
    now = time.time()
    for tmp in stem.parent.glob(f"{stem.name}.*.tmp-*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TEMP_S:
                tmp.unlink()
        except OSError:
            pass
