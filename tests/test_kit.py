"""Drum kits (issue 12, item 4): the kit file (realtime/kit.py) and the General MIDI picker (export/kit.py).

Descriptor and role tests use sounds made here, whose answers are known: a decaying sine for a kick,
noise bursts of known decay for hats and cymbals. One test runs the picker on a real (tiny) bundle.
"""

from __future__ import annotations

import numpy as np
import pytest
from bundle_factory import make_bundle
from scipy.optimize import linear_sum_assignment

from ganstream.export import kit as picker
from ganstream.realtime.bundle import load_bundle
from ganstream.realtime.kit import GM_DRUMS, Kit, KitError, Pad, load_kit, parse_kit
from ganstream.realtime.latents import LatentSpace

SR = 16000
D = 4
DIRECTION = np.array([0.0, 1.0, 0.0, 0.0])
SPACE = LatentSpace(D, controls={"pc1": (DIRECTION, 0.5)})
PRESETS = {
    "snare-ish": {"latent": np.array([0.1, -0.2, 0.3, -0.4]), "macros": {"pc1": 0.8}},
    "tight": {"latent": np.array([0.5, 0.5, 0.5, 0.5]), "macros": {}},
    "knob-only": {"latent": None, "macros": {"pc1": 1.0}},
}

KIT_TEXT = """\
name: test kit
pads:
  C2: {name: kick, seed: 1234}
  38: {name: snare, preset: snare-ish, gain: 0.9}
  F#2: {latent: [0.25, -0.5, 0.125, 1.0], choke: hats}
  Bb2: {name: open hat, seed: 77, choke: hats, descriptors: {decay_s: 0.61}}
  100: {seed: 0}
"""


def write(tmp_path, text: str, name: str = "kit.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# The kit file


def test_a_kit_file_loads_with_note_names_defaults_and_sources(tmp_path):
    kit = load_kit(write(tmp_path, KIT_TEXT), SPACE, PRESETS)
    assert kit.name == "test kit" and kit.path == tmp_path / "kit.yaml"
    assert sorted(kit.pads) == [36, 38, 42, 46, 100]  # C2 = 36, F#2 = 42, Bb2 = 46 (C4 = 60)
    kick, snare, hat, open_hat, other = (kit.pad(n) for n in (36, 38, 42, 46, 100))
    assert (kick.name, kick.gain, kick.choke, kick.source) == ("kick", 1.0, None, "seed 1234")
    assert (snare.gain, snare.source) == (0.9, "preset snare-ish")
    assert (hat.name, hat.source, hat.choke) == ("closed hi-hat", "latent", "hats")  # the General MIDI name
    assert other.name == "E7"  # no General MIDI name: the note's
    assert open_hat.descriptors == {"decay_s": 0.61}
    assert kit.pad(37) is None


def test_seed_preset_and_latent_give_the_latent_space_s_vectors(tmp_path):
    kit = load_kit(write(tmp_path, KIT_TEXT), SPACE, PRESETS)
    for pad in kit.pads.values():
        assert pad.latent.dtype == np.float32 and pad.latent.shape == (D,) and not pad.latent.flags.writeable
    np.testing.assert_array_equal(kit.pad(36).latent, SPACE.seed_latent(1234).astype(np.float32))
    # a preset plays its latent plus its macros' offsets: 0.8 * scale 0.5 along DIRECTION
    np.testing.assert_array_equal(kit.pad(38).latent, np.float32([0.1, -0.2 + 0.4, 0.3, -0.4]))
    np.testing.assert_array_equal(kit.pad(42).latent, np.float32([0.25, -0.5, 0.125, 1.0]))


def test_a_bundle_s_seed_means_the_bundle_s_latent(tmp_path):
    bundle = load_bundle(make_bundle(tmp_path / "b", segment=4096, latent_size=8, distribution="normal"))
    space = LatentSpace.from_bundle(bundle)
    kit = parse_kit({"pads": {36: {"seed": 5}}}, space)
    want = bundle.random_latents(1, np.random.default_rng(5))[0]
    np.testing.assert_array_equal(kit.pad(36).latent, want)


def test_write_and_load_round_trip(tmp_path):
    kit = load_kit(write(tmp_path, KIT_TEXT), SPACE, PRESETS)
    again = load_kit(kit.write(tmp_path / "copy.yaml").path, SPACE, PRESETS)
    assert again.name == kit.name and sorted(again.pads) == sorted(kit.pads)
    for note, pad in kit.pads.items():
        other = again.pad(note)
        assert (other.name, other.gain, other.choke, other.source, dict(other.descriptors)) == (
            pad.name, pad.gain, pad.choke, pad.source, dict(pad.descriptors)
        )
        np.testing.assert_array_equal(other.latent, pad.latent)
    text = (tmp_path / "copy.yaml").read_text()
    assert "seed: 1234" in text and "preset: snare-ish" in text  # sources, not spelt-out latents
    assert text.count("latent:") == 1


def test_a_random_latent_round_trips_bit_for_bit(tmp_path):
    z = np.random.default_rng(3).standard_normal(D).astype(np.float32)
    kit = Kit("k", {60: Pad(60, "x", z)})
    again = load_kit(kit.write(tmp_path / "k.yaml").path, SPACE)
    np.testing.assert_array_equal(again.pad(60).latent, z)


def test_choke_groups():
    pads = {
        42: {"seed": 1, "choke": "hats"}, 46: {"seed": 2, "choke": "hats"}, 44: {"seed": 3, "choke": "hats"},
        49: {"seed": 4, "choke": "cymbals"}, 57: {"seed": 5, "choke": "cymbals"}, 36: {"seed": 6},
    }
    kit = parse_kit({"pads": pads}, SPACE)
    assert kit.choke_groups == {"hats": (42, 44, 46), "cymbals": (49, 57)}
    assert kit.chokes(42) == (44, 46) and kit.chokes(46) == (42, 44) and kit.chokes(57) == (49,)
    assert kit.chokes(36) == () and kit.chokes(99) == ()


def test_gm_drums_names_every_percussion_note_once():
    assert sorted(GM_DRUMS) == list(range(35, 82))
    assert (GM_DRUMS[36], GM_DRUMS[42], GM_DRUMS[46], GM_DRUMS[49], GM_DRUMS[81]) == (
        "bass drum 1", "closed hi-hat", "open hi-hat", "crash cymbal 1", "open triangle"
    )


BAD = {
    "gain too high": ("pads:\n  38: {seed: 1, gain: 9}\n", "pads.38.gain: must be in (0, 4], got 9"),
    "gain zero": ("pads:\n  38: {seed: 1, gain: 0}\n", "pads.38.gain: must be in (0, 4], got 0"),
    "gain text": ("pads:\n  38: {seed: 1, gain: loud}\n", "pads.38.gain: must be a number in (0, 4], got 'loud'"),
    "gain nan": ("pads:\n  38: {seed: 1, gain: .nan}\n", "pads.38.gain: must be a number in (0, 4], got nan"),
    "unknown pad key": (
        "pads:\n  36: {sed: 1}\n",
        "pads.36.sed: unknown key (allowed: name, seed, preset, latent, gain, choke, descriptors)",
    ),
    "unknown top key": ("pad:\n  36: {seed: 1}\n", "pad: unknown key (allowed: format, name, pads)"),
    "note twice": ("pads:\n  36: {seed: 1}\n  C2: {seed: 2}\n", "pads.C2: note 36 is already given as pads.36"),
    "key twice": (
        "pads:\n  36: {seed: 1}\n  36: {seed: 2}\n",
        "line 3, column 3: not valid YAML: key 36 appears twice (first at line 2)",
    ),
    "unknown preset": (
        "pads:\n  38: {preset: snare}\n",
        "pads.38.preset: unknown preset 'snare' (known: knob-only, snare-ish, tight)",
    ),
    "preset without latent": (
        "pads:\n  38: {preset: knob-only}\n",
        "pads.38.preset: preset 'knob-only' sets only macros; a pad needs one with a latent",
    ),
    "no source": ("pads:\n  36: {name: kick}\n", "pads.36: give exactly one of seed, preset, latent, got none"),
    "two sources": (
        "pads:\n  36: {seed: 1, latent: [0, 0, 0, 0]}\n",
        "pads.36: give exactly one of seed, preset, latent, got seed and latent",
    ),
    "negative seed": ("pads:\n  36: {seed: -1}\n", "pads.36.seed: must be an integer >= 0, got -1"),
    "fractional seed": ("pads:\n  36: {seed: 1.5}\n", "pads.36.seed: must be an integer >= 0, got 1.5"),
    "latent size": ("pads:\n  42: {latent: [1, 2, 3]}\n", "pads.42.latent: has 3 values, this bundle's latent has 4"),
    "latent nan": (
        "pads:\n  42: {latent: [1, .nan, 3, 4]}\n",
        "pads.42.latent: value 1 is nan: every value must be finite",
    ),
    "latent text": (
        "pads:\n  42: {latent: hello}\n",
        "pads.42.latent: must be a list of 4 numbers (the bundle's latent size), got 'hello'",
    ),
    "choke number": (
        "pads:\n  42: {seed: 1, choke: 5}\n",
        "pads.42.choke: must be a group name (a non-empty string), got 5",
    ),
    "descriptor text": (
        "pads:\n  42: {seed: 1, descriptors: {decay_s: long}}\n",
        "pads.42.descriptors.decay_s: must be a finite number, got 'long'",
    ),
    "pad not a mapping": ("pads:\n  42: 7\n", "pads.42: must be a mapping with one of seed, preset, latent, got 7"),
    "empty pads": ("pads: {}\n", "pads: empty: a kit needs at least one pad"),
    "no pads": ("name: nothing\n", "pads: missing: a kit needs `pads`, a mapping of note -> pad"),
    "bad note name": (
        "pads:\n  X9: {seed: 1}\n",
        "pads.X9: 'X9' is not a note: give a MIDI number (60) or a name (C4, A#3, Bb2)",
    ),
    "note out of range": ("pads:\n  128: {seed: 1}\n", "pads.128: 128 is MIDI note 128, outside 0..127 (C-1..G9)"),
    "note between notes": (
        "pads:\n  60.5: {seed: 1}\n",
        "pads.60.5: 60.5 is between notes: a pad plays a whole MIDI note 0..127",
    ),
    "format": ("format: 2\npads:\n  36: {seed: 1}\n", "format: unknown kit format 2 (this ganstream reads 1)"),
    "empty file": ("", "must be a mapping with `pads` (note -> pad), got an empty file"),
    "yaml syntax": (
        "pads:\n  36: {seed: 1\n",
        "line 3, column 1: not valid YAML: expected ',' or '}', but got '<stream end>'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_problem_names_the_file_and_the_field(case, tmp_path):
    text, message = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(KitError) as e:
        load_kit(path, SPACE, PRESETS)
    assert str(e.value) == f"{path}: {message}"


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(KitError, match=r"nowhere\.yaml: cannot read: No such file or directory$"):
        load_kit(tmp_path / "nowhere.yaml", SPACE)


def test_unknown_preset_without_presets_says_none_were_given():
    with pytest.raises(KitError) as e:
        parse_kit({"pads": {38: {"preset": "x"}}}, SPACE, "mem")
    assert str(e.value) == "mem: pads.38.preset: unknown preset 'x' (known: none were given (load a presets file))"


# ---------------------------------------------------------------------------------------------
# Descriptors of sounds whose answers are known


def decaying(signal: np.ndarray, t30: float, peak: float = 0.9) -> np.ndarray:
    """signal scaled to `peak` and faded so it is 30 dB down after t30 seconds (exponentially)."""
    t = np.arange(signal.shape[-1]) / SR
    y = signal * 10.0 ** (-1.5 * t / t30)
    return peak * y / np.abs(y).max()


def sine(hz: float, t30: float, seconds: float = 1.0, peak: float = 0.9) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return decaying(np.sin(2 * np.pi * hz * t), t30, peak)


def noise(t30: float, seed: int, seconds: float = 1.0, peak: float = 0.9, smooth: int = 1) -> np.ndarray:
    """White noise (or, with smooth > 1, a moving average of it: darker) with a 30 dB decay of t30 s."""
    x = np.random.default_rng(seed).standard_normal(int(seconds * SR))
    if smooth > 1:
        x = np.convolve(x, np.ones(smooth) / smooth, mode="same")
    return decaying(x, t30, peak)


def test_descriptors_of_a_kick_a_closed_hat_and_a_long_noise():
    kick, hat, long_noise = sine(60, 0.3), noise(0.03, 1), noise(0.6, 2)
    d = picker.descriptors(np.stack([kick, hat, long_noise, np.zeros(SR)]), SR)
    assert d["centroid_hz"][0] == pytest.approx(60, abs=5)
    assert d["low_ratio"][0] > 0.99 and d["flatness"][0] < 0.01
    assert d["decay_s"][0] == pytest.approx(0.3, abs=0.02)
    # White noise at 16 kHz: centroid near 4 kHz, flatness near e^-gamma = 0.56, 1.9% of the band under 150 Hz
    assert d["centroid_hz"][1] == pytest.approx(4000, rel=0.05)
    assert d["flatness"][1] == pytest.approx(0.56, abs=0.05)
    assert d["low_ratio"][1] < 0.03
    assert d["decay_s"][1] == pytest.approx(0.03, abs=0.015)
    assert d["decay_s"][2] == pytest.approx(0.6, rel=0.1)
    assert d["peak_db"][:3] == pytest.approx(20 * np.log10(0.9), abs=1e-6)
    # silence: no NaN, peak at the floor
    assert [d[k][3] for k in ("centroid_hz", "flatness", "low_ratio", "peak_db")] == [0, 0, 0, -200]


def test_decay_ends_at_a_hissing_clip_s_floor_not_at_its_end(monkeypatch):
    # a 100 ms hit over steady hiss 32 dB under its peak (the shipped drums bundle's settle 27-32 dB down)
    hiss = 0.9 * 10 ** (-32 / 20) * np.random.default_rng(4).standard_normal(SR) / np.sqrt(2)
    hit = noise(0.1, 5) + hiss
    d = picker.descriptors(np.stack([hit, noise(0.1, 5)]), SR)
    assert d["decay_s"][1] == pytest.approx(0.1, abs=0.02)
    # ending 6 dB over the floor gives the hit (26 dB down: 87 ms) ...
    assert 0.05 < d["decay_s"][0] < 0.15
    # ... where the bare 30 dB rule (negative control: no floor rule) runs to the clip's end
    monkeypatch.setattr(picker, "DECAY_FLOOR_DB", -200.0)
    assert picker.descriptors(hit[None, :], SR)["decay_s"][0] == pytest.approx(1.0, abs=0.011)


def test_a_sound_that_does_not_decay_lasts_the_clip():
    d = picker.descriptors(sine(200, 100.0)[None, :], SR)
    assert d["decay_s"][0] == pytest.approx(1.0, abs=0.011)


# ---------------------------------------------------------------------------------------------
# Roles

POOL = {  # index: what it is made to be
    0: ("kick", sine(55, 0.4)),
    1: ("tom 90", sine(90, 0.5, peak=0.5)),
    2: ("tom 130", sine(130, 0.45)),
    3: ("tom 180", sine(180, 0.4, peak=0.6)),
    4: ("tom 250", sine(250, 0.35)),
    5: ("closed hat", noise(0.03, 10)),
    6: ("open hat", noise(0.6, 11)),
    7: ("crash", noise(1.5, 12)),
    8: ("snare", 0.5 * sine(200, 0.15) + noise(0.25, 13, peak=0.5, smooth=3)),
    9: ("clap", noise(0.15, 14, smooth=4)),
    10: ("side stick", 0.5 * sine(800, 0.02) + noise(0.02, 15, peak=0.4, smooth=6)),
    11: ("ride", 0.4 * sine(3000, 1.2) + noise(1.2, 16, peak=0.4)),
    12: ("pedal hat", noise(0.015, 17, smooth=2)),
    13: ("silent", noise(0.3, 18, peak=0.005)),  # -46 dBFS: skipped
    14: ("pad", sine(440, 100.0, peak=0.3)),
}
POOL = {i: (what, sound.astype(np.float32)) for i, (what, sound) in POOL.items()}  # what a generator returns


@pytest.fixture(scope="module")
def pool_descriptors():
    return picker.descriptors(np.stack([sound for _, sound in POOL.values()]), SR)


def test_roles_go_to_the_sounds_made_for_them(pool_descriptors):
    picks = picker.assign_roles(pool_descriptors)
    assert sorted(picks) == sorted(r.note for r in picker.ROLES)
    assert len(set(picks.values())) == len(picks)  # each candidate once
    assert 13 not in picks.values()  # silent
    assert picks[36] == 0  # the 55 Hz sine
    assert picks[42] in (5, 12) and picks[44] in (5, 12)  # the shortest bright noises
    assert picks[46] in (6, 7) and picks[49] in (6, 7)  # the long bright noises
    # toms: tones from low to high (the steady 440 Hz tone is as good a high tom as the 180 Hz one here)
    assert {picks[n] for n in picker.TOMS} <= {1, 2, 3, 4, 14} and picks[41] == 1
    got = {POOL[i][0] for n, i in picks.items() if n in (38, 39, 37, 51)}
    assert got <= {"snare", "clap", "side stick", "ride", "pad"}


def test_toms_sound_low_to_high_and_the_open_hat_is_the_longest_hat(pool_descriptors):
    d = pool_descriptors
    picks = picker.assign_roles(d)
    centroids = [d["centroid_hz"][picks[n]] for n in picker.TOMS]
    assert centroids == sorted(centroids)
    assert d["decay_s"][picks[46]] == max(d["decay_s"][picks[n]] for n in picker.HATS)


def test_the_open_hat_rule_overrides_the_targets():
    # Three bright noises, the open hat's target mis-set short: the rule still gives 46 the longest.
    d = picker.descriptors(np.stack([sine(60, 0.3), noise(0.03, 1), noise(0.8, 2), noise(0.05, 3)]), SR)
    roles = [
        picker.Role(36, "kick", (-1.5, 0, -1, 1.5), (1, 1, 1, 1)),
        picker.Role(46, "open hat", (1, -1.5, 1, -1), (1, 1, 1, 1)),
        picker.Role(42, "closed hat", (1, 1.5, 1, -1), (1, 1, 1, 1)),
    ]
    # negative control: the targets alone give 46 a short noise
    rows, cols = linear_sum_assignment(picker.role_costs(picker.standardise(picker.features(d)), roles))
    assert dict(zip(rows, cols))[1] != 2
    picks = picker.assign_roles(d, roles)
    assert picks[46] == 2 and picks[42] in (1, 3)


def test_fewer_candidates_fill_the_first_roles(pool_descriptors):
    d = {k: v[[0, 5, 6]] for k, v in pool_descriptors.items()}
    picks = picker.assign_roles(d)
    assert sorted(picks) == [36, 38, 42] and picks[36] == 0 and picks[42] == 1


def test_all_silent_is_refused():
    with pytest.raises(ValueError, match=r"^every candidate is silent \(peak below -40 dBFS\)$"):
        picker.assign_roles(picker.descriptors(np.zeros((3, 4096)), SR))


# ---------------------------------------------------------------------------------------------
# The picker


class FakeGenerator:
    """Plays POOL: the seed whose latent it is given names the sound (seed i -> POOL[i])."""

    sample_rate = SR

    def __init__(self, space: LatentSpace):
        self.sounds = {space.seed_latent(i).astype(np.float32).tobytes(): s for i, (_, s) in POOL.items()}

    def generate(self, z: np.ndarray) -> np.ndarray:
        assert z.dtype == np.float32 and z.ndim == 2
        return np.stack([self.sounds[row.tobytes()] for row in z]).astype(np.float32)


def test_choose_kit_documents_its_choice_and_balances_peaks(tmp_path, pool_descriptors):
    kit = picker.choose_kit(FakeGenerator(SPACE), SPACE, list(POOL), name="synthetic")
    assert kit.name == "synthetic" and len(kit.pads) == len(picker.ROLES)
    assert kit.pad(36).seed == 0 and kit.pad(36).name == "kick"
    assert kit.choke_groups == {"hats": (42, 44, 46)}
    for note, pad in kit.pads.items():
        np.testing.assert_array_equal(pad.latent, SPACE.seed_latent(pad.seed).astype(np.float32))
        assert pad.descriptors["decay_s"] == round(float(pool_descriptors["decay_s"][pad.seed]), 3)
        peak = 10 ** (pad.descriptors["peak_db"] / 20)
        assert pad.gain * peak == pytest.approx(0.9, rel=0.01)  # every pad's peak brought to the loudest's
    assert kit.pad(41).seed == 1 and kit.pad(41).gain == pytest.approx(0.9 / 0.5, abs=0.002)  # 90 Hz, made at 0.5
    again = load_kit(kit.write(tmp_path / "kit.yaml").path, SPACE)
    assert {n: (p.seed, p.gain, dict(p.descriptors)) for n, p in again.pads.items()} == {
        n: (p.seed, p.gain, dict(p.descriptors)) for n, p in kit.pads.items()
    }


def test_pick_gm_kit_on_a_real_bundle_and_its_command(tmp_path, capsys):
    bundle_dir = make_bundle(tmp_path / "b", segment=4096, latent_size=8)
    kit = picker.pick_gm_kit(bundle_dir, candidates=24, seed=5, provider="cpu")
    space = LatentSpace.from_bundle(load_bundle(bundle_dir))
    seeds = [p.seed for p in kit.pads.values()]
    assert len(kit.pads) == len(picker.ROLES) and len(set(seeds)) == len(seeds) and set(seeds) <= set(range(5, 29))
    assert kit.name == "General MIDI kit from test, seeds 5..28"
    for pad in kit.pads.values():
        np.testing.assert_array_equal(pad.latent, space.seed_latent(pad.seed).astype(np.float32))
        assert 0 < pad.gain <= 4
    out = tmp_path / "kit.yaml"
    argv = [str(bundle_dir), "--out", str(out), "--candidates", "24", "--seed", "5", "--provider", "cpu"]
    assert picker.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote 13 pads to {out}" in printed and "closed hi-hat" in printed
    again = load_kit(out, space)
    assert {n: p.seed for n, p in again.pads.items()} == {n: p.seed for n, p in kit.pads.items()}


def test_the_command_names_a_missing_bundle(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert picker.main([str(missing), "--out", str(tmp_path / "k.yaml")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and len(err.strip().splitlines()) == 1
