"""Scoring generated audio: quality metrics, the in-training evaluator and `ganstream eval`, the
classifier behind classifier FD and IS, and `ganstream eval-reconstruction`.

It sits above training/ (it loads runs, data and checkpoints) and may read bundles through
realtime/; training/ never imports it, the `train` command passes its `Evaluator` in."""
