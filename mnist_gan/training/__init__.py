"""Training: train() and resume(), the loop, the recorder and TensorBoard."""
