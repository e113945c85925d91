"""`ganstream render` end to end, on small bundles from tests/bundle_factory.py."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import soundfile as sf
from bundle_factory import make_bundle

from ganstream.realtime.bundle import BundleError, load_bundle
from ganstream.realtime.cli import render_main

SR = 16000
SEGMENT = 4096


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundles") / "test.gsb", segment=SEGMENT, sample_rate=SR)


def render(bundle, out, *args, seconds=2.0):
    return render_main([str(bundle), "-o", str(out), "--seconds", str(seconds), "--provider", "cpu", *map(str, args)])


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "name, subtype, expected",
    [
        ("a.wav", "16", "PCM_16"),
        ("a.wav", "24", "PCM_24"),
        ("a.wav", "float", "FLOAT"),
        ("a.flac", "16", "PCM_16"),
        ("a.flac", "24", "PCM_24"),
    ],
)
def test_render_writes_the_format_asked_for(bundle, tmp_path, name, subtype, expected):
    out = tmp_path / name
    assert render(bundle, out, "--subtype", subtype, seconds=2.5) == 0
    info = sf.info(out)
    assert (info.frames, info.samplerate, info.channels, info.subtype) == (120000, 48000, 1, expected)
    assert info.format == ("FLAC" if name.endswith(".flac") else "WAV")
    x, _ = sf.read(out)
    assert 0.05 < np.abs(x).max() <= 1.0
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


@pytest.mark.parametrize("rate", [16000, 22050, 44100])
def test_render_length_is_exact_at_any_rate(bundle, tmp_path, rate):
    out = tmp_path / "a.wav"
    assert render(bundle, out, "--sample-rate", rate, seconds=1.3) == 0
    assert sf.info(out).frames == round(1.3 * rate) and sf.info(out).samplerate == rate


def test_render_is_bit_identical_for_the_same_inputs(bundle, tmp_path):
    a, b, c = tmp_path / "a.flac", tmp_path / "b.flac", tmp_path / "c.flac"
    for out, seed in ((a, 4), (b, 4), (c, 5)):
        assert render(bundle, out, "--seed", seed, "--threads", 2, seconds=3) == 0
    assert sha(a) == sha(b)
    assert sha(a) != sha(c)
    t = tmp_path / "t.wav"
    assert render(bundle, t, "--mode", "texture", "--batch", 1, seconds=3) == 0
    assert render(bundle, tmp_path / "t2.wav", "--mode", "texture", "--batch", 3, seconds=3) == 0
    assert sha(t) == sha(tmp_path / "t2.wav")


def test_render_shows_progress_when_asked(bundle, tmp_path, capsys):
    assert render(bundle, tmp_path / "a.wav", "--progress", seconds=2) == 0
    err = capsys.readouterr().err
    assert "render:" in err and "s of audio" in err
    assert "wrote" in err and "real time" in err


# -- automation -----------------------------------------------------------------------------------


def write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_automation_macros_change_the_sound_from_their_time(bundle, tmp_path):
    plain = write(tmp_path / "plain.json", {"keyframes": [{"time": 0, "seed": 1}]})
    knob = write(
        tmp_path / "knob.json",
        {"keyframes": [{"time": 0, "seed": 1}, {"time": 1.0, "macros": {"brightness": 1.0, "pc1": -0.8}, "curve": "step"}]},
    )
    # At the model rate (no resampler, whose filter reaches a little back in time), sample-exact:
    args = ["--subtype", "float", "--sample-rate", SR]
    assert render(bundle, tmp_path / "plain.wav", "--automation", plain, *args) == 0
    assert render(bundle, tmp_path / "knob.wav", "--automation", knob, *args) == 0
    x, _ = sf.read(tmp_path / "plain.wav")
    y, _ = sf.read(tmp_path / "knob.wav")
    np.testing.assert_array_equal(x[:SR], y[:SR])
    assert np.abs(x[SR : SR + 80] - y[SR : SR + 80]).max() > 0.01  # heard within 5 ms
    assert np.abs(x[SR + 80 :] - y[SR + 80 :]).max() > 0.1


def test_csv_automation_matches_the_same_json(bundle, tmp_path):
    latent = [0.1 * i - 0.3 for i in range(8)]
    js = write(
        tmp_path / "a.json",
        {
            "presets": {"calm": {"seed": 7, "macros": {"loudness": -0.5}}},
            "keyframes": [
                {"time": 0, "seed": 2},
                {"time": 0.5, "macros": {"pc2": 0.7}, "curve": "cosine"},
                {"time": 1.0, "latent": latent},
                {"time": 1.5, "preset": "calm", "curve": "step"},
            ],
        },
    )
    presets = write(tmp_path / "presets.json", {"presets": {"calm": {"seed": 7, "macros": {"loudness": -0.5}}}})
    zs = ",".join(f"z{i}" for i in range(8))
    rows = [
        f"time,seed,{zs},pc2,preset,curve",
        "0,2,,,,,,,,,,,",
        "0.5,,,,,,,,,,0.7,,cosine",
        "1.0,," + ",".join(map(str, latent)) + ",,,",
        "1.5,,,,,,,,,,,calm,step",
    ]
    csv_file = write(tmp_path / "a.csv", "\n".join(rows) + "\n")
    assert render(bundle, tmp_path / "j.wav", "--automation", js) == 0
    assert render(bundle, tmp_path / "c.wav", "--automation", csv_file, "--presets", presets) == 0
    assert sha(tmp_path / "j.wav") == sha(tmp_path / "c.wav")
    assert render(bundle, tmp_path / "w.wav", "--automation", js, "--walk-depth", 0.3) == 0
    assert sha(tmp_path / "w.wav") != sha(tmp_path / "j.wav")


BAD = [
    ("m.json", {"keyframes": [{"time": 0, "macros": {"brightnes": 1}}]},
     "keyframe 0: unknown macro 'brightnes' (known: pc1, pc2, pc3, brightness, loudness)"),
    ("l.json", {"keyframes": [{"time": 0, "latent": [0.0, 1.0]}]},
     "keyframe 0: latent has 2 values, this generator's latent has 8"),
    ("t.json", {"keyframes": [{"time": 2, "seed": 1}, {"time": 1, "seed": 2}]},
     "keyframe 1: time 1 s is not after the previous keyframe's 2 s"),
    ("n.json", '{"keyframes": [{"time": 0, "macros": {"pc1": NaN}}]}',
     "keyframe 0: macro 'pc1' must be a finite number, got nan"),
    ("p.json", {"presets": {"calm": {"seed": 1}}, "keyframes": [{"time": 0, "preset": "calmer"}]},
     "keyframe 0: unknown preset 'calmer' (known: calm)"),
    ("k.json", {"keyframes": [{"time": 0, "seeds": 1}]}, "keyframe 0: unknown key 'seeds'"),
    ("e.json", {"keyframes": [{"time": 0}]}, "keyframe 0: sets nothing"),
    ("c.json", {"keyframes": [{"time": 0, "seed": 1, "curve": "cubic"}]}, "keyframe 0: unknown curve 'cubic'"),
    ("s.json", '{"keyframes": [', "line 1: not valid JSON"),
    ("u.csv", "time,brightnes\n0,1\n", "line 1: unknown column 'brightnes'"),
    ("z.csv", "time,z0,z1\n0,1,1\n", "line 1: latent columns z0..z7 must all be present (missing z2)"),
    ("x.csv", "time,pc1\n0,0.5\n1,loud\n", "line 3: pc1 is not a number: 'loud'"),
    ("v.csv", "time,pc1\n0,0.5\n1,nan\n", "line 3: pc1 is not finite"),
    ("o.csv", "time,pc1\n1,0.5\n0.5,1\n", "line 3: time 0.5 s is not after the previous keyframe's 1 s"),
    ("q.csv", "time,preset\n0,calm\n", "line 2: unknown preset 'calm' (known: none defined)"),
    ("a.txt", "time,pc1\n", "unknown automation format '.txt'"),
]


@pytest.mark.parametrize("name, content, message", BAD, ids=[b[0] for b in BAD])
def test_bad_automation_is_one_clear_error(bundle, tmp_path, capsys, name, content, message):
    path = write(tmp_path / name, content)
    assert render(bundle, tmp_path / "a.wav", "--automation", path) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"ganstream render: error: {path}: ")
    assert message in err
    assert not (tmp_path / "a.wav").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "{tmp}/a.mp3"], "name a .wav or .flac file"),
        (["-o", "{tmp}/a.flac", "--subtype", "float"], "FLAC cannot hold float samples"),
        (["-o", "{tmp}/a.wav", "--seconds", "0"], "--seconds must be a positive number"),
        (["-o", "{tmp}/no/a.wav"], "no such directory"),
        (["-o", "{tmp}/a.wav", "--crossfade", "4000"], "crossfade must be between 0 and segment/2 = 2048"),
        (["-o", "{tmp}/a.wav", "--mode", "loop"], "argument --mode: invalid choice"),
    ],
)
def test_bad_options_are_one_clear_error(bundle, tmp_path, capsys, args, message):
    argv = [str(bundle), "--seconds", "1", *[a.format(tmp=tmp_path) for a in args]]
    assert render_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ganstream render: error: ") and message in err, err


def test_a_missing_bundle_is_one_clear_error(tmp_path, capsys):
    assert render_main([str(tmp_path / "nope.gsb"), "-o", str(tmp_path / "a.wav"), "--seconds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganstream render: error: ") and "nope.gsb" in err and err.count("\n") == 0


# -- clicks at joins ------------------------------------------------------------------------------


def join_ratios(x: np.ndarray, rate: int, hop: int, crossfade: int) -> np.ndarray:
    """For each segment join: the largest sample-to-sample jump in the join over the largest in the two
    stretches between it and its neighbouring joins (model-rate hop and crossfade, output at `rate`).

    A crossfade that hides the join keeps this near 1 (up to ~1.4 where two similar segments overlap
    with an equal-power fade); a hard cut between different segments makes it several times larger.
    """
    d = np.abs(np.diff(x.astype(np.float64)))
    r = rate / SR
    margin = 16  # model samples, for the resampler's spread of a hard cut
    ends = lambda k: (round((k * hop - margin) * r), round((k * hop + crossfade + margin) * r))  # noqa: E731
    out = []
    for k in range(2, int(len(x) / r / hop) - 1):
        (a, b), (_, prev_end), (next_start, _) = ends(k), ends(k - 1), ends(k + 1)
        out.append(d[a:b].max() / max(d[prev_end:a].max(), d[b:next_start].max()))
    return np.array(out)


def default_or_factory(bundle):
    try:
        return load_bundle(None).source, load_bundle(None)
    except BundleError:
        return bundle, load_bundle(bundle)


@pytest.mark.parametrize("walk", [[], ["--walk-rate", "4", "--walk-depth", "1"]], ids=["bundle-walk", "fast-walk"])
def test_a_sixty_second_render_has_no_clicks_at_the_joins(bundle, tmp_path, walk):
    """Done-when of the export issue: 60 s of the default bundle (the test bundle until one ships).

    The fast walk makes every join one between clearly different segments, where a hard cut would
    click (see the next test); the test bundle's segments loop seamlessly, so with its slow walk even
    a hard cut would barely show."""
    path, b = default_or_factory(bundle)
    out = tmp_path / "sixty.wav"
    assert render(path, out, "--mode", "crossfade", "--subtype", "float", *walk, seconds=60) == 0
    x, rate = sf.read(out)
    crossfade = b.streaming.crossfade
    ratios = join_ratios(x, rate, b.segment - crossfade, crossfade)
    assert len(ratios) >= int(60 * b.sample_rate / (b.segment - crossfade)) - 4
    assert ratios.max() < 2.0, ratios.max()


def test_the_click_test_fails_without_the_crossfade(bundle, tmp_path):
    """The detector is real: with joins between clearly different segments (a fast walk) it passes with
    the crossfade and fails with hard cuts."""
    fast = ["--mode", "crossfade", "--subtype", "float", "--walk-rate", "4", "--walk-depth", "1"]
    assert render(bundle, tmp_path / "cut.wav", *fast, "--crossfade", "0", seconds=60) == 0
    y, rate = sf.read(tmp_path / "cut.wav")
    assert join_ratios(y, rate, SEGMENT, 0).max() > 4.0
