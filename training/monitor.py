"""What a run shows: scalar curves, audio previews and spectrograms.

Everything goes to TensorBoard when it is installed and enabled, and always to
plain files in the run directory, for people without TensorBoard:
metrics.csv, curves.png, previews/step_NNNNNNNN.wav and .png.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

# Panels of curves.png: title -> the scalars drawn in it.
PANELS: dict[str, tuple[str, ...]] = {
    "losses": ("loss_d", "loss_g"),
    "mean critic output": ("d_real", "d_fake"),
    "gradient norms": ("grad_norm_d", "grad_norm_g"),
    "learning rates": ("lr_d", "lr_g"),
}


class Monitor:
    """Writes a run's scalars and previews; a no-op on processes other than the main one."""

    def __init__(self, run_dir: Path, sample_rate: int, enabled: bool = True, tensorboard: bool = True, resume_step: int | None = None):
        self.run_dir = run_dir
        self.sample_rate = sample_rate
        self.enabled = enabled
        self.history: list[dict[str, float]] = []
        self.csv_path = run_dir / "metrics.csv"
        self.writer: Any = None
        if not enabled:
            return
        (run_dir / "previews").mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.csv_path.exists():
            # Rows after the checkpoint were trained again after resuming: drop the stale ones.
            with open(self.csv_path, newline="") as f:
                self.history = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
            self.history = [row for row in self.history if row["step"] <= resume_step]
            self._rewrite_csv()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("tensorboard is not installed: curves and previews go to PNG and WAV files only", stacklevel=2)
            else:
                self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)

    def _rewrite_csv(self) -> None:
        keys = sorted({k for row in self.history for k in row} - {"step"})
        tmp = self.csv_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", *keys])
            w.writeheader()
            w.writerows(self.history)
        tmp.replace(self.csv_path)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": float(step), **values}
        new_keys = set(values) - {k for r in self.history for k in r}
        self.history.append(row)
        if new_keys or not self.csv_path.exists():
            self._rewrite_csv()
        else:
            keys = sorted({k for r in self.history for k in r} - {"step"})
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=["step", *keys]).writerow(row)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def previews(self, step: int, audio: np.ndarray) -> Path | None:
        """audio: (N, T) in [-1, 1]. Writes one WAV (the N previews with short gaps) and a spectrogram grid."""
        if not self.enabled:
            return None
        stem = self.run_dir / "previews" / f"step_{step:08d}"
        gap = np.zeros((audio.shape[0], self.sample_rate // 5), dtype=np.float32)
        sf.write(stem.with_suffix(".wav"), np.concatenate([audio, gap], axis=1).reshape(-1), self.sample_rate, subtype="PCM_16")
        fig = spectrogram_figure(audio, self.sample_rate, f"step {step}")
        fig.savefig(stem.with_suffix(".png"), dpi=80)
        if self.writer is not None:
            for i, clip in enumerate(audio):
                self.writer.add_audio(f"preview/{i}", clip[None], step, sample_rate=self.sample_rate)
            self.writer.add_figure("spectrograms", fig, step)
        import matplotlib.pyplot as plt

        plt.close(fig)
        return stem.with_suffix(".wav")

    def plot(self) -> Path | None:
        """Draws curves.png from every scalar logged so far."""
        if not self.enabled or not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        extra = sorted({k for r in self.history for k in r} - {"step"} - {k for ks in PANELS.values() for k in ks})
        # One panel per evaluation metric: their scales differ by orders of magnitude.
        panels = {**PANELS, **{key: (key,) for key in extra}}
        # A run without a critic (the vocoder) has no GAN curves: leave their panels out.
        logged = {k for r in self.history for k in r}
        panels = {title: keys for title, keys in panels.items() if logged.intersection(keys)}
        fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.4 * len(panels)), sharex=True)
        for ax, (title, keys) in zip(np.atleast_1d(axes), panels.items()):
            for key in keys:
                pts = [(r["step"], r[key]) for r in self.history if key in r]
                if pts:
                    ax.plot(*zip(*pts), label=key, lw=1)
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=7, loc="upper right")
            ax.grid(alpha=0.3)
        np.atleast_1d(axes)[-1].set_xlabel("step")
        fig.tight_layout()
        path = self.run_dir / "curves.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def figure_grid(items: Any, title: str, draw: Any, row_height: float = 2.2) -> Any:
    """A figure with one bare panel per item, four to a row, each drawn by `draw(ax, item)`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(items)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, row_height * rows), squeeze=False)
    for ax, item in zip(axes.flat, items):
        draw(ax, item)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def spectrogram_figure(audio: np.ndarray, sample_rate: int, title: str) -> Any:
    """A grid of log spectrograms, one per clip of `audio` (N, T)."""
    nfft = min(512, max(16, audio.shape[1] // 8))

    def draw(ax: Any, clip: np.ndarray) -> None:
        # An untrained generator can output exact zeros; their log is -inf and drawn as the floor.
        with np.errstate(divide="ignore"):
            spectrum, _, _, image = ax.specgram(clip, NFFT=nfft, Fs=sample_rate, noverlap=nfft * 3 // 4, cmap="magma", vmin=-120)
            # A clip quieter than the floor everywhere would put the colour scale's top below its bottom, which
            # matplotlib refuses when the figure is saved (a vocoder run's last preview once ended the run so).
            top = 10 * np.log10(max(float(np.max(spectrum)), 1e-30))
            image.set_clim(-120, max(top, -119))

    return figure_grid(audio, title, draw)
