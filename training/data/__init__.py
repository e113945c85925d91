"""Training data: audio folders and procedural sets, cut into segments and served from a memory-mapped cache.

    ds = load_dataset(cfg.data, segment=16384, seed=cfg.run.seed, split="train")
    x = ds.batch(np.arange(64), epoch=0)   # (64, 16384) float32

`audio` decodes one file, `synth` renders the built-in sets, `dataset` owns
segmenting, the cache, the train/holdout split and batches.
"""

from .dataset import AudioSegments, DataError, load_dataset
from .synth import SYNTH_SETS

__all__ = ["AudioSegments", "DataError", "SYNTH_SETS", "load_dataset"]
