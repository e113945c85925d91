"""benchmarks/train_throughput.py at width 2, one step per row: the JSON's fields and the peer/ours
ratio, against a stand-in for the peer's models.py. No timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "train_throughput.py"

# What the benchmark reads of the peer's models.py: its two classes, their keywords, noise_latent_dim.
STAND_IN = '''
import os
import torch
from torch import nn
os.makedirs("output", exist_ok=True)  # as the peer's params.py does on import
noise_latent_dim = 100

class WaveGANGenerator(nn.Module):
    def __init__(self, model_size, slice_len, num_channels, use_batch_norm, upsample=True):
        super().__init__()
        self.fc = nn.Linear(noise_latent_dim, slice_len)
    def forward(self, z):
        return torch.tanh(self.fc(z)).unsqueeze(1)

class WaveGANDiscriminator(nn.Module):
    def __init__(self, model_size, slice_len, num_channels, use_batch_norm):
        super().__init__()
        self.fc = nn.Linear(slice_len, 1)
    def forward(self, x):
        return self.fc(x.flatten(1))
'''


def test_rows_fields_and_ratio(tmp_path):
    peer = tmp_path / "peer"
    peer.mkdir()
    (peer / "models.py").write_text(STAND_IN)
    out = tmp_path / "throughput.json"
    rows = ["ours fp32", "peer fp32", "peer fp32 transpose", "laptop fp32"]
    subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "1", "--warmup", "0", "--threads", "1", "--peer", str(peer),
         "--override", "model.width=2", "--only", *rows, "--out", str(out)],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )
    report = json.loads(out.read_text())
    assert {"cpu", "cores", "bf16_native"} <= report["machine"].keys()
    assert report["torch"] and report["threads"] == 1
    by_name = {r["name"]: r for r in report["results"]}
    assert list(by_name) == rows
    for r in by_name.values():
        assert "error" not in r, r
        assert r["ms_per_step"] > 0 and r["width"] == 2 and r["threads"] == 1
    ours, laptop = by_name["ours fp32"], by_name["laptop fp32"]
    assert (ours["batch"], ours["critic_steps"], ours["loss"]) == (16, 1, "wgan-gp")
    assert (laptop["config"], laptop["loss"]) == ("wavegan-laptop.yaml", "bce")
    for peer_row in ("peer fp32", "peer fp32 transpose"):
        assert ours["peer_over_ours"][peer_row] == round(by_name[peer_row]["ms_per_step"] / ours["ms_per_step"], 2)
    assert "peer_over_ours" not in laptop  # another configuration: no ratio
    assert not (tmp_path / "output").exists()  # the peer ran in a scratch folder, not in the caller's
