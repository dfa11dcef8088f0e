"""The GAN: networks, losses, the training step, self-conditioning clusters, device and precision, FLOPs, torchrun."""
