"""The `train` command (also `ganstream train`): training/cli.py with the evaluation package
scoring each run as it trains and keeping its best checkpoint.

The wiring lives here, in the application layer, because the evaluation package sits above
training (it imports training's data and checkpoints, and realtime's bundle reader to score
bundles), so training itself may not import it.

    torchrun --nproc_per_node 4 -m ganstream.train configs/wavegan.yaml
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from ganstream.evaluation.evaluate import Evaluator
    from ganstream.training.cli import main as train_main

    from .main import run_command

    return run_command("train", lambda: train_main(argv, evaluator=Evaluator))


if __name__ == "__main__":
    sys.exit(main())
