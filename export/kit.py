"""A General MIDI drum kit chosen from a drums bundle by audio descriptors (issue 12, item 4).

    ganstream kit BUNDLE --out KIT.yaml [--candidates 256] [--seed 0]     (or --into-bundle: ship it as the bundle's kit.yaml)

The bundle's generator plays `candidates` seeds (seed, seed + 1, ...); each clip gets five
descriptors (`descriptors`), and each General MIDI role (kick on 36, snare on 38, ...) takes the
candidate nearest its target (`ROLES`, `assign_roles`). The kit (realtime/kit.py) names each pad's
seed, so it plays in any host that loads the bundle, and keeps the descriptors that chose it.

Targets are in *standardised* units: each descriptor minus its mean over the candidates, over
their standard deviation. A GAN's sounds are not a drum library's: a "kick" here is whatever the
bundle makes that is darkest, most tonal and heaviest below 150 Hz, so roles are placed relative
to what the bundle makes rather than at absolute values (a bundle whose darkest sound has its
centroid at 400 Hz still gets a kick).

numpy and the live engine's ONNX runner only; scipy's linear_sum_assignment does the matching.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

from ganstream.core.manifest import MANIFEST, Manifest
from ganstream.core.spectral import SpectralParams, stft
from ganstream.realtime.bundle import BundleError, load_bundle, resolve_bundle
from ganstream.realtime.inference import Generator
from ganstream.realtime.kit import GAIN_MAX, GM_DRUMS, Kit, KitError, parse_kit
from ganstream.realtime.latents import LatentSpace

DESCRIPTORS = ("centroid_hz", "decay_s", "flatness", "low_ratio", "peak_db")
SILENT_DB = -40.0  # a candidate whose peak is below this is skipped: nothing to hear, nothing to measure
DECAY_DB = 30.0  # decay: from the envelope's peak until it stays this far below it ...
DECAY_FLOOR_DB = 6.0  # ... or until it stays within this of the clip's floor, whichever ends first (_decay)
FLOOR_PERCENTILE = 10.0
ENVELOPE_S = 0.010  # RMS envelope frames: short enough to time a closed hat, long enough to average noise
LOW_HZ = 150.0  # low_ratio: the share of energy below this (a kick's and a floor tom's body)
ANALYSIS_S = 0.064  # STFT window, rounded to a power of two: 1024 at 16 kHz, bins of 15.6 Hz below LOW_HZ
BATCH = 32  # latents per generator call, and clips per STFT block (bounds the memory of 256 candidates)
HATS = (42, 44, 46)  # one choke group: a closed or pedal hat cuts the open one
TOMS = (41, 45, 48, 50)  # low to high


class AudioGenerator(Protocol):
    """What the picker needs of a generator (realtime.inference.Generator has it)."""

    sample_rate: int

    def generate(self, z: np.ndarray) -> np.ndarray: ...  # (B, D) float32 -> (B, segment) float32


# ---------------------------------------------------------------------------------------------
# Descriptors


def descriptors(audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
    """(B, N) audio -> name -> (B,) float64, one value per clip:

    - centroid_hz: the power-weighted mean frequency of the whole clip's spectrum;
    - decay_s: from the start of the loudest 10 ms RMS frame to the end of the last frame within
      30 dB of it (the time the sound takes to fall 30 dB for good), or, where the clip's floor
      is higher, the last frame more than 6 dB above that floor; at most to the clip's end;
    - flatness: each STFT frame's geometric over arithmetic mean of the power spectrum, averaged
      over frames weighted by their energy; 0 for a pure tone, about 0.56 for white noise (the
      ratio for a periodogram of noise is e^-gamma), in [0, 1];
    - low_ratio: the share of the clip's energy below 150 Hz;
    - peak_db: the largest absolute sample in dBFS (-inf floored at -200).
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"audio must have shape (B, N), got {x.shape}")
    n = x.shape[1]
    n_fft = min(1 << round(math.log2(ANALYSIS_S * sample_rate)), 1 << int(math.log2(max(n, 4))))
    if n_fft < 16:
        raise ValueError(f"clips of {n} samples are too short to describe")
    params = SpectralParams(sample_rate=int(sample_rate), n_fft=n_fft, hop=n_fft // 4, drop_nyquist=False)
    freqs = np.arange(params.stft_bins) * (sample_rate / n_fft)
    out = {name: np.zeros(len(x)) for name in DESCRIPTORS}
    for start in range(0, len(x), BATCH):
        rows = slice(start, start + BATCH)
        power = np.abs(stft(x[rows], params)).astype(np.float64) ** 2  # (b, K, F)
        spectrum = power.sum(axis=-1)  # (b, K)
        total = spectrum.sum(axis=-1)
        safe = np.where(total > 0, total, 1.0)
        out["centroid_hz"][rows] = spectrum @ freqs / safe
        out["low_ratio"][rows] = spectrum[:, freqs < LOW_HZ].sum(axis=-1) / safe
        out["flatness"][rows] = _flatness(power)
    out["decay_s"] = _decay(x, sample_rate)
    out["peak_db"] = 20.0 * np.log10(np.maximum(np.abs(x).max(axis=1), 1e-10))
    return out


def _flatness(power: np.ndarray) -> np.ndarray:
    """(b, K, F) power -> (b,) energy-weighted mean over frames of the spectral flatness."""
    # A floor 120 dB under the clip's strongest bin: a synthetic tone's far sidelobes would
    # otherwise drive the geometric mean to 0 through bins far below any generator's noise.
    floor = 1e-12 * power.max(axis=(1, 2), keepdims=True) + 1e-300
    p = power + floor
    flat = np.exp(np.log(p).mean(axis=1)) / p.mean(axis=1)  # (b, F)
    energy = power.sum(axis=1)
    weight = energy.sum(axis=-1)
    return np.where(weight > 0, (flat * energy).sum(axis=-1) / np.where(weight > 0, weight, 1.0), 0.0)


def _decay(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """(B, N) -> (B,) seconds from the loudest RMS frame to the end of the last within DECAY_DB of it."""
    hop = max(1, round(ENVELOPE_S * sample_rate))
    count = max(1, x.shape[1] // hop)
    head = x[:, : count * hop] if x.shape[1] >= hop else x
    env = np.sqrt((head.reshape(len(x), count, -1) ** 2).mean(axis=-1))  # (B, count)
    peak = env.argmax(axis=1)
    # The clip's floor: a quiet percentile of the frames from the peak on. A GAN hisses: once the hit
    # is over, the shipped drums bundle's clips settle 27-32 dB under their peak (the middle half of
    # seeds 0..255), so with the bare 30 dB rule 51% of them "decayed" at the clip's end (78% past
    # 0.9 s) and a closed hat could not be told from a crash. Ending DECAY_FLOOR_DB above the floor
    # times the hit instead (16% at the end, 46% past 0.9 s); a clean decay, its floor far under
    # peak - 30 dB, keeps the 30 dB rule.
    after = np.where(np.arange(count)[None, :] >= peak[:, None], env, np.nan)
    floor = np.nanpercentile(after, FLOOR_PERCENTILE, axis=1)
    level = np.maximum(env.max(axis=1) * 10.0 ** (-DECAY_DB / 20.0), floor * 10.0 ** (DECAY_FLOOR_DB / 20.0))
    above = env >= level[:, None]
    last = count - 1 - np.argmax(above[:, ::-1], axis=1)
    # A sound still within 30 dB at the last frame is as long as the clip lets it be.
    end = np.where(last == count - 1, x.shape[1], (last + 1) * hop)
    return (end - peak * hop) / sample_rate


# ---------------------------------------------------------------------------------------------
# Roles


@dataclass(frozen=True)
class Role:
    """A General MIDI sound to find: its target and the weight of each feature, in FEATURES order.

    Targets are standardised over the candidates (0: the pool's mean, 1: one standard deviation up).
    """

    note: int
    name: str
    target: tuple[float, float, float, float]
    weight: tuple[float, float, float, float]


# The space roles are placed in: brightness, length, noisiness and weight below 150 Hz. Centroid
# and decay are compared as logs: an octave or a doubling of length counts the same anywhere.
FEATURES = ("log centroid", "log decay", "flatness", "low_ratio")

# In priority order: with fewer audible candidates than roles, the first ones are filled.
ROLES: tuple[Role, ...] = (
    # kick: the darkest, most tonal sound, its energy low; its length matters less
    Role(36, "kick", (-1.5, 0.3, -1.0, 2.0), (1.0, 0.3, 0.7, 1.5)),
    # snare: a body and the noise of the wires: mid-bright, noisy, middling length, little sub
    Role(38, "snare", (0.3, 0.0, 0.8, -0.5), (1.0, 0.5, 1.0, 0.5)),
    # closed hat: bright, noisy, short
    Role(42, "closed hat", (1.5, -1.2, 1.2, -1.0), (1.0, 1.0, 1.0, 0.5)),
    # open hat: a closed hat left ringing: as bright and noisy, longer
    Role(46, "open hat", (1.5, 0.7, 1.2, -1.0), (1.0, 1.0, 1.0, 0.5)),
    # crash: bright, noisy, the longest sound of the kit
    Role(49, "crash", (1.2, 1.5, 1.0, -0.8), (0.7, 1.2, 0.7, 0.3)),
    # toms: pitched drums, tonal and fairly long, from near the kick's darkness upwards
    # (assign_roles then orders the four picks by centroid)
    Role(45, "low tom", (-0.7, 0.5, -0.8, 0.8), (1.0, 0.5, 0.8, 0.7)),
    Role(48, "mid tom", (-0.3, 0.4, -0.8, 0.4), (1.0, 0.5, 0.8, 0.7)),
    Role(41, "floor tom", (-1.0, 0.6, -0.8, 1.2), (1.0, 0.5, 0.8, 0.7)),
    Role(50, "high tom", (0.1, 0.3, -0.8, 0.0), (1.0, 0.5, 0.8, 0.7)),
    # clap: noisy bursts in the middle of the spectrum, short, no low body
    Role(39, "clap", (0.5, -0.5, 1.0, -0.8), (0.8, 0.7, 1.0, 0.5)),
    # ride: bright and long but less noisy than the crash: its bell rings at a pitch
    Role(51, "ride", (1.0, 1.2, 0.2, -0.8), (0.8, 1.0, 0.8, 0.3)),
    # side stick: a click: the shortest sound, mid-bright, more knock than noise
    Role(37, "side stick", (0.3, -1.6, -0.3, -0.5), (0.7, 1.2, 0.5, 0.3)),
    # pedal hat: the hats' "chick": very short, a little darker than the closed hat
    Role(44, "pedal hat", (1.0, -1.5, 1.0, -0.8), (0.8, 1.0, 0.8, 0.3)),
)


def features(desc: Mapping[str, np.ndarray]) -> np.ndarray:
    """Descriptors -> (B, 4) in FEATURES order (logs floored at 1 Hz and 1 ms)."""
    return np.stack(
        [
            np.log(np.maximum(desc["centroid_hz"], 1.0)),
            np.log(np.maximum(desc["decay_s"], 1e-3)),
            np.asarray(desc["flatness"], dtype=np.float64),
            np.asarray(desc["low_ratio"], dtype=np.float64),
        ],
        axis=1,
    )


def standardise(x: np.ndarray) -> np.ndarray:
    """(B, F) -> each column minus its mean over its standard deviation (a constant column -> 0)."""
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 1e-9, std, 1.0)


def role_costs(z: np.ndarray, roles: Sequence[Role] = ROLES) -> np.ndarray:
    """(B, 4) standardised features -> (R, B): each role's weighted squared distance to each candidate."""
    target = np.array([r.target for r in roles])[:, None, :]  # (R, 1, 4)
    weight = np.array([r.weight for r in roles])[:, None, :]
    return (weight * (z[None, :, :] - target) ** 2).sum(axis=-1)


def assign_roles(desc: Mapping[str, np.ndarray], roles: Sequence[Role] = ROLES) -> dict[int, int]:
    """Descriptors of B candidates -> note -> the index of the candidate it plays, each one used once.

    Silent candidates (peak below SILENT_DB) are left out and the rest standardised among
    themselves; the roles (the first as many as there are candidates) take the assignment of least
    total cost (Hungarian). Two rules then fix the order the targets only suggest: the toms picked
    sound low to high by centroid, and the open hat is the longest of the hats picked.
    """
    live = np.flatnonzero(np.asarray(desc["peak_db"]) >= SILENT_DB)
    if not len(live):
        raise ValueError(f"every candidate is silent (peak below {SILENT_DB:g} dBFS)")
    use = list(roles)[: len(live)]
    cost = role_costs(standardise(features(desc)[live]), use)
    rows, cols = linear_sum_assignment(cost)
    picks = {use[r].note: int(live[c]) for r, c in zip(rows, cols)}
    _reorder(picks, [n for n in TOMS if n in picks], np.asarray(desc["centroid_hz"]))
    hats = [n for n in HATS if n in picks]
    if 46 in picks:
        # Only the open hat moves: the longest of the hat picks becomes it, and the sound that was
        # on 46 takes that pad's place; the closed and pedal hats keep their own order.
        decay = np.asarray(desc["decay_s"])
        longest = max(hats, key=lambda n: decay[picks[n]])
        picks[46], picks[longest] = picks[longest], picks[46]
    return picks


def _reorder(picks: dict[int, int], notes: list[int], key: np.ndarray) -> None:
    """Give `notes` (ascending) their picked candidates sorted by `key`, in place."""
    chosen = sorted((picks[n] for n in notes), key=lambda i: key[i])
    picks.update(zip(notes, chosen))


# ---------------------------------------------------------------------------------------------
# The kit


def _gains(peaks_db: Mapping[int, float]) -> dict[int, float]:
    """note -> gain that brings each pad's peak to the loudest pad's, within (0, GAIN_MAX]."""
    loudest = max(peaks_db.values())
    return {n: round(min(GAIN_MAX, 10.0 ** ((loudest - p) / 20.0)), 3) for n, p in peaks_db.items()}


def choose_kit(
    generator: AudioGenerator, space: LatentSpace, seeds: Sequence[int], name: str | None = None
) -> Kit:
    """Play `seeds` through the generator and return the General MIDI kit chosen from them.

    Each pad names its seed and keeps its descriptors (rounded); the hats share the choke group
    `hats`. The kit is built through `parse_kit`, so it is exactly what loading its YAML gives.
    """
    seeds = [int(s) for s in seeds]
    z = np.stack([space.seed_latent(s) for s in seeds]).astype(np.float32)
    audio = np.concatenate([generator.generate(z[i : i + BATCH]) for i in range(0, len(z), BATCH)])
    desc = descriptors(audio, generator.sample_rate)
    picks = assign_roles(desc)
    gains = _gains({note: float(desc["peak_db"][i]) for note, i in picks.items()})
    names = {r.note: r.name for r in ROLES}
    pads = {}
    for note in sorted(picks):
        i = picks[note]
        pad = {"name": names[note], "seed": seeds[i], "gain": gains[note]}
        if note in HATS:
            pad["choke"] = "hats"
        pad["descriptors"] = {
            "centroid_hz": round(float(desc["centroid_hz"][i]), 1),
            "decay_s": round(float(desc["decay_s"][i]), 3),
            "flatness": round(float(desc["flatness"][i]), 3),
            "low_ratio": round(float(desc["low_ratio"][i]), 3),
            "peak_db": round(float(desc["peak_db"][i]), 1),
        }
        pads[note] = pad
    doc = {"pads": pads} if name is None else {"name": name, "pads": pads}
    return parse_kit(doc, space, "chosen kit")


def pick_gm_kit(
    bundle_dir: str | os.PathLike, candidates: int = 256, seed: int = 0, provider: str = "auto"
) -> Kit:
    """The General MIDI kit chosen from seeds seed .. seed + candidates - 1 of a bundle (see `choose_kit`)."""
    if candidates < 1 or seed < 0:
        raise ValueError(f"need candidates >= 1 and seed >= 0, got {candidates} and {seed}")
    bundle = load_bundle(bundle_dir)
    generator = Generator(bundle, provider=provider, warmup_batch_sizes=(min(BATCH, candidates),))
    name = f"General MIDI kit from {bundle.name}, seeds {seed}..{seed + candidates - 1}"
    return choose_kit(generator, LatentSpace.from_bundle(bundle), range(seed, seed + candidates), name)


def describe(kit: Kit) -> str:
    """A table of the kit's pads and their descriptors, one line each."""

    def value(d: Mapping[str, float], key: str, scale: float, spec: str) -> str:
        return format(scale * d[key], spec) if key in d else "-"

    head = ("note", "pad", "General MIDI", "seed", "gain", "centroid Hz", "decay ms", "flatness", "<150 Hz", "peak dB")
    rows = [head]
    for note in sorted(kit.pads):
        pad = kit.pads[note]
        d = pad.descriptors
        rows.append((
            str(note), pad.name, GM_DRUMS.get(note, "-"), "-" if pad.seed is None else str(pad.seed), f"{pad.gain:.3f}",
            value(d, "centroid_hz", 1, ".0f"), value(d, "decay_s", 1000, ".0f"), value(d, "flatness", 1, ".2f"),
            value(d, "low_ratio", 1, ".2f"), value(d, "peak_db", 1, ".1f"),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = (1, 2)  # the name columns read left-aligned, the numbers right-aligned
    return "\n".join(
        "  ".join(c.ljust(w) if i in text else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows
    )


KIT_FILE = "kit.yaml"  # a bundle's own kit (`streaming.kit`)


def ship_kit(bundle_dir: str | os.PathLike, kit: Kit, command: str, log: Any = None) -> Path:
    """Writes `kit` into the bundle directory as kit.yaml, named by the manifest's `streaming.kit`, and
    re-verifies the bundle (every file rehashed, as export writes one); the command goes into its provenance."""
    from .bundle import write_bundle

    out = Path(bundle_dir)
    spec = Manifest.read(out / MANIFEST)
    if spec.streaming is None:
        raise ValueError(f"{out}: a {spec.kind} bundle has no streaming settings, so it cannot ship a kit")

    def fill(tmp: Path) -> Manifest:
        for rel in spec.files:
            if rel != KIT_FILE:
                shutil.copy2(out / rel, tmp / rel)
        kit.write(tmp / KIT_FILE)
        provenance = {**spec.provenance, "kit": {"command": command, "pads": len(kit.pads)}}
        return replace(spec, streaming=replace(spec.streaming, kit=KIT_FILE), provenance=provenance)

    return write_bundle(out, fill, None, log or (lambda _m: None))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="ganstream kit",
        description="Choose a General MIDI drum kit from a drums bundle's sounds by audio descriptors, as a kit YAML "
        "(--out), or ship it inside the bundle (--into-bundle: its kit.yaml, which trigger mode then plays by default).",
    )
    p.add_argument("bundle", metavar="BUNDLE_DIR", help="the bundle (a directory, a .zip or a shipped bundle's name)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="KIT.yaml", help="the kit file to write")
    where.add_argument("--into-bundle", action="store_true", help="write the kit into the bundle directory (kit.yaml) and its manifest")
    p.add_argument("--candidates", type=int, default=256, metavar="N", help="seeds to try (default: 256)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="the first seed tried (default: 0)")
    p.add_argument("--provider", default="auto", help="ONNX Runtime provider (default: auto)")
    args = p.parse_args(argv)
    if args.candidates < 1 or args.seed < 0:
        p.error("--candidates must be 1 or more and --seed 0 or more")
    try:
        kit = pick_gm_kit(args.bundle, args.candidates, args.seed, args.provider)
        if args.into_bundle:
            command = " ".join(["ganstream kit", *(argv if argv is not None else sys.argv[1:])])
            ship_kit(resolve_bundle(args.bundle), kit, command, print)
        else:
            kit = kit.write(args.out)
    except (BundleError, KitError, ValueError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    print(describe(kit))
    print(f"wrote {len(kit.pads)} pads to {kit.path or resolve_bundle(args.bundle) / KIT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
