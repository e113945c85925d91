"""A small audio classifier trained on the dataset, whose embeddings and predictions score generated audio.

The Inception network behind FID and the Inception Score knows images; the
WaveGAN paper trained its own classifier on its data (SC09 digits) instead.
`ganstream train-classifier DATA` does the same for any folder with one
sub-folder per class:

    ganstream train-classifier ~/drums -o drums-classifier.pt     # kick/, snare/, hat/, ...
    clf = load_classifier("drums-classifier.pt")
    probs, embeddings = clf.predict(audio)                          # (N, C), (N, E)

The network is a four-block CNN on z-scored log-mel spectrograms; its
embedding is the penultimate layer. The file is one torch dict of plain
tensors and numbers (weights-only loadable) holding the weights, the config,
the class names and the feature normalisation.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ganstream.training.checkpoint import load_weights_only, save_atomic
from ganstream.training.config import ConfigError, DataConfig, build_dataclass
from ganstream.training.data import AudioSegments, DataError, load_dataset
from .metrics import log_mel

FORMAT = 1
KIND = "ganstream-classifier"


class ClassifierError(ValueError):
    """A classifier file that cannot be used, or a folder that cannot train one; the message says why."""


@dataclass
class ClassifierConfig:
    sample_rate: int = 16000
    segment: int = 16384  # samples per clip it was trained on (any length >= min_samples works)
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 64
    channels: int = 16  # of the first conv block; doubled twice
    embed_dim: int = 64  # the penultimate layer: the embedding classifier FD compares

    def validate(self) -> None:
        if self.segment < self.min_samples:
            raise ValueError(f"segment: at least {self.min_samples} samples (8 frames of n_fft={self.n_fft}, hop={self.hop}), not {self.segment}")
        if min(self.channels, self.embed_dim, self.n_mels) < 8:
            raise ValueError("channels, embed_dim and n_mels: at least 8 each")

    @property
    def min_samples(self) -> int:
        return self.n_fft + 7 * self.hop


class ClassifierNet(nn.Module):
    """(B, 1, frames, n_mels) z-scored log-mel -> (B, classes) logits; `embed` gives the penultimate layer."""

    def __init__(self, cfg: ClassifierConfig, n_classes: int):
        super().__init__()
        c = cfg.channels
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate([(1, c), (c, 2 * c), (2 * c, 4 * c), (4 * c, 4 * c)]):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            if i < 3:
                blocks.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*blocks)
        bands = cfg.n_mels // 8  # after three 2x poolings
        self.embedding = nn.Sequential(nn.Linear(8 * c * bands, cfg.embed_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(cfg.embed_dim, n_classes))

    def embed(self, x: Tensor) -> Tensor:
        """(B, 1, frames, n_mels) -> (B, embed_dim). Pooled over time only: where in frequency
        something sounds matters (pitch, brightness), when it sounds within the clip does not."""
        h = self.features(x)  # (B, 4c, frames / 8, n_mels / 8)
        return self.embedding(torch.cat([h.mean(2), h.amax(2)], dim=1).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


class Classifier:
    """A trained classifier with what it needs to read audio: features, normalisation, class names."""

    def __init__(self, net: ClassifierNet, cfg: ClassifierConfig, classes: list[str], mean: np.ndarray, std: np.ndarray, info: dict[str, Any] | None = None):
        self.net = net.eval()
        self.cfg = cfg
        self.classes = classes
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        self.info = info or {}  # accuracy, steps, data: how it was trained

    def features(self, audio: np.ndarray) -> Tensor:
        """(N, T) audio -> (N, 1, frames, n_mels) z-scored log-mel."""
        c = self.cfg
        if audio.shape[1] < c.min_samples:
            raise ClassifierError(f"clips of {audio.shape[1]} samples are shorter than the classifier's minimum {c.min_samples}")
        lm = log_mel(audio, c.sample_rate, c.n_fft, c.hop, c.n_mels)
        return torch.from_numpy((lm - self.mean) / self.std).float().unsqueeze(1)

    @torch.no_grad()
    def predict(self, audio: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(N, T) audio at cfg.sample_rate -> class probabilities (N, C) and embeddings (N, embed_dim)."""
        self.net.eval()
        probs, embeds = [], []
        for i in range(0, len(audio), batch):
            e = self.net.embed(self.features(audio[i : i + batch]))
            embeds.append(e.numpy())
            probs.append(torch.softmax(self.net.head(e), dim=1).numpy())
        return np.concatenate(probs).astype(np.float64), np.concatenate(embeds).astype(np.float64)

    def state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": KIND,
            "config": asdict(self.cfg),
            "classes": list(self.classes),
            "feature_mean": torch.from_numpy(self.mean),
            "feature_std": torch.from_numpy(self.std),
            "model": self.net.state_dict(),
            "info": self.info,
        }


def load_classifier(path: str | Path) -> Classifier:
    """Loads strictly and weights-only; refuses other files and unknown format versions."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ClassifierError(f"{path}: no such classifier file (make one with `ganstream train-classifier DATA -o {path.name}`)")
    state = load_weights_only(path, ClassifierError, "classifier")
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise ClassifierError(f"{path}: not a ganstream classifier (made by `ganstream train-classifier`)")
    if state.get("format") != FORMAT:
        raise ClassifierError(f"{path}: classifier format {state.get('format')} is not supported (this ganstream reads {FORMAT})")
    try:
        cfg = build_dataclass(ClassifierConfig, state["config"], f"{path}: config")
    except ConfigError as e:
        raise ClassifierError(str(e)) from None
    # Building the net draws initial weights: keep that off the global RNG a training run relies on.
    with torch.random.fork_rng(devices=[]):
        net = ClassifierNet(cfg, len(state["classes"]))
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ClassifierError(f"{path}: the weights do not match its config: {e}") from None
    return Classifier(net, cfg, list(state["classes"]), state["feature_mean"].numpy(), state["feature_std"].numpy(), dict(state["info"]))


# ---- training -------------------------------------------------------------------------------


@dataclass
class ClassifierTraining:
    steps: int = 1500
    batch_size: int = 64  # split evenly over the classes
    lr: float = 1e-3
    holdout: float = 0.15  # fraction of each class's files kept out to measure accuracy
    gain_db: float = 12.0  # clips are attenuated by a random 0..gain_db dB, so the level alone never decides
    seed: int = 0


def class_folders(root: Path) -> list[Path]:
    """The sub-folders of `root` that are classes, sorted by name (hidden ones skipped)."""
    if not root.is_dir():
        raise ClassifierError(f"{root}: not a folder (expected one sub-folder of audio per class)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise ClassifierError(f"{root}: needs at least two class sub-folders, found {len(folders)}")
    return folders


def _load_classes(root: Path, cfg: ClassifierConfig, train: ClassifierTraining, cache_dir: str, split: str) -> list[AudioSegments]:
    data = DataConfig(source="", sample_rate=cfg.sample_rate, holdout=train.holdout, cache_dir=cache_dir)
    out = []
    for folder in class_folders(root):
        try:
            out.append(load_dataset(replace(data, source=str(folder)), cfg.segment, train.seed, split, progress=False))
        except DataError as e:
            raise ClassifierError(f"class {folder.name!r}: {e}") from None
    return out


def _gather(classes: list[AudioSegments], per_class: int, rng: np.random.Generator, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced batch: `per_class` random segments of every class, with their labels."""
    audio, labels = [], []
    for label, segs in enumerate(classes):
        if len(segs):
            audio.append(segs.batch(rng.integers(len(segs), size=per_class), epoch))
            labels.append(np.full(per_class, label))
    return np.concatenate(audio), np.concatenate(labels)


def _all_segments(segs: AudioSegments, limit: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.sort(rng.choice(len(segs), size=min(limit, len(segs)), replace=False))
    return segs.batch(idx, 0)


def accuracy(clf: Classifier, classes: list[AudioSegments], limit: int = 512, seed: int = 0) -> float | None:
    """Mean per-class accuracy on (at most `limit` segments of) each class; None when no class has any."""
    rng = np.random.default_rng(seed)
    scores = []
    for label, segs in enumerate(classes):
        if len(segs):
            probs, _ = clf.predict(_all_segments(segs, limit, rng))
            scores.append(float((probs.argmax(1) == label).mean()))
    return float(np.mean(scores)) if scores else None


def train_classifier(root: str | Path, cfg: ClassifierConfig, train: ClassifierTraining, cache_dir: str = "", log: Any = print) -> Classifier:
    """Trains on the `train` split of every class folder under `root`; info["accuracy"] is measured
    on the held-out files (or, when no class has more than one file, on the training segments)."""
    root = Path(root).expanduser()
    names = [p.name for p in class_folders(root)]
    train_sets = _load_classes(root, cfg, train, cache_dir, "train")
    held_sets = _load_classes(root, cfg, train, cache_dir, "holdout")
    for name, segs in zip(names, train_sets):
        if not len(segs):
            raise ClassifierError(f"class {name!r}: no training segments of {cfg.segment} samples")
    rng = np.random.default_rng(train.seed)
    # Per-band normalisation from a sample of the training audio.
    sample = np.concatenate([_all_segments(s, 64, rng) for s in train_sets])
    lm = log_mel(sample, cfg.sample_rate, cfg.n_fft, cfg.hop, cfg.n_mels).reshape(-1, cfg.n_mels)
    # Seeded on its own stream: the same classifier every time, and the caller's RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        net = ClassifierNet(cfg, len(names))
        clf = Classifier(net, cfg, names, lm.mean(0), lm.std(0) + 1e-3)
        opt = torch.optim.AdamW(net.parameters(), lr=train.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=train.lr, total_steps=train.steps, pct_start=0.1)
        per_class = max(1, train.batch_size // len(names))
        t0 = time.monotonic()
        for step in range(1, train.steps + 1):
            audio, labels = _gather(train_sets, per_class, rng, epoch=step)
            audio *= 10 ** (-rng.uniform(0, train.gain_db, (len(audio), 1)) / 20)
            net.train()
            loss = nn.functional.cross_entropy(net(clf.features(audio)), torch.from_numpy(labels))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % max(1, train.steps // 10) == 0 or step == train.steps:
                log(f"step {step}/{train.steps}  loss {loss.item():.3f}  ({time.monotonic() - t0:.0f} s)")
    net.eval()
    held = accuracy(clf, held_sets)
    on = "held-out files"
    if held is None:
        held, on = accuracy(clf, train_sets), "training segments (no class has a second file to hold out)"
    clf.info = {"accuracy": held, "accuracy_on": on, "steps": train.steps, "data": str(root),
                "train_segments": [len(s) for s in train_sets], "heldout_segments": [len(s) for s in held_sets]}
    return clf


def save_classifier(clf: Classifier, path: str | Path) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(clf.state(), path)
    return path


# ---- the `ganstream train-classifier` command ------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    c, t = ClassifierConfig(), ClassifierTraining()
    p = argparse.ArgumentParser(
        prog="ganstream train-classifier",
        description="Train the small audio classifier whose embeddings and predictions give the classifier "
        "Frechet distance and the Inception Score (`ganstream eval`, train.classifier=...).",
    )
    p.add_argument("data", help="a folder with one sub-folder of audio per class")
    p.add_argument("-o", "--out", default="classifier.pt", help="the classifier file to write (default: %(default)s)")
    p.add_argument("--steps", type=int, default=t.steps, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=t.batch_size, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=t.lr, help="(default: %(default)s)")
    p.add_argument("--holdout", type=float, default=t.holdout, help="fraction of each class's files held out for the accuracy (default: %(default)s)")
    p.add_argument("--sample-rate", type=int, default=c.sample_rate, help="must match the runs it will score (default: %(default)s)")
    p.add_argument("--segment", type=int, default=c.segment, help="samples per training clip; use the runs' model.segment (default: %(default)s)")
    p.add_argument("--channels", type=int, default=c.channels, help="(default: %(default)s)")
    p.add_argument("--embed-dim", type=int, default=c.embed_dim, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=t.seed, help="(default: %(default)s)")
    p.add_argument("--cache-dir", default="", help="where decoded audio is cached (default: ~/.cache/ganstream)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        cfg = build_dataclass(ClassifierConfig, {"sample_rate": args.sample_rate, "segment": args.segment,
                                                 "channels": args.channels, "embed_dim": args.embed_dim}, "classifier")
        if args.steps < 1 or args.batch_size < 1 or not 0 <= args.holdout < 1:
            raise ConfigError("--steps and --batch-size must be at least 1, --holdout in [0, 1)")
        train = ClassifierTraining(args.steps, args.batch_size, args.lr, args.holdout, seed=args.seed)
        log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
        clf = train_classifier(args.data, cfg, train, args.cache_dir, log)
        path = save_classifier(clf, args.out)
    except (ClassifierError, ConfigError, DataError) as e:
        print(f"train-classifier: error: {e}", file=sys.stderr)
        return 2
    print(f"{path}: {len(clf.classes)} classes ({', '.join(clf.classes)}), "
          f"accuracy {100 * clf.info['accuracy']:.1f}% on {clf.info['accuracy_on']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
