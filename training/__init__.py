"""Training GANs on audio: data, models, losses and the training loop behind the `train` command."""
