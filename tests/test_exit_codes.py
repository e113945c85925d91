"""One exit-code rule for every command (cli/main.py): 2 for the user's error, naming the file; 1 for a failure that is
not the user's, a bug included; 0 when done."""

from __future__ import annotations

import sys
import types

import pytest

from ganstream import main as cli_main
from ganstream.main import COMMANDS, main as ganstream

# command -> its arguments with MISSING where the file goes that does not exist
MISSING_FILE = {
    "train": ["MISSING.yaml"],
    "export": ["MISSING", "-o", "OUT/x.gsb"],
    "eval": ["MISSING", "synth:piano"],
    "train-classifier": ["MISSING"],
    "eval-reconstruction": ["MISSING"],
    "render": ["MISSING.gsb", "-o", "OUT/a.wav", "--seconds", "1"],
    "play": ["MISSING.gsb", "--no-osc", "--seconds", "1"],
    "bench": ["MISSING.gsb"],
    "kit": ["MISSING", "--out", "OUT/kit.yaml"],
    "invert": ["MISSING", "OUT/s.wav"],
}


def test_every_command_with_a_file_is_covered():
    assert set(MISSING_FILE) == set(COMMANDS) - {"devices"}  # `devices` takes no file


@pytest.mark.parametrize("command", sorted(MISSING_FILE))
def test_a_missing_file_is_a_user_error_that_names_it(command, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "missing"
    argv = [a.replace("MISSING", str(missing)).replace("OUT", str(tmp_path)) for a in MISSING_FILE[command]]
    assert ganstream([command, *argv]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line, not a screen


def test_a_bad_option_is_a_user_error(capsys):
    with pytest.raises(SystemExit) as e:  # argparse's own exit, as every command's parser
        ganstream(["export", "some-run"])  # -o is required
    assert e.value.code == 2 and "-o/--out" in capsys.readouterr().err


def test_an_unknown_command_is_a_user_error(capsys):
    assert ganstream(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_a_bug_exits_1_with_its_traceback_and_a_line_saying_so(monkeypatch, capsys):
    def buggy(argv):
        return {}["no such key"]

    monkeypatch.setitem(sys.modules, "ganstream_buggy_command", types.SimpleNamespace(main=buggy))
    monkeypatch.setitem(COMMANDS, "buggy", ("ganstream_buggy_command", "main", "a command with a bug"))
    assert cli_main.main(["buggy"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'no such key'" in err
    assert err.strip().splitlines()[-1] == "ganstream buggy: internal error (the traceback above); please report it with the command line"
