"""The run directory: every file name a run writes, checkpoints, the generator export, and reading a run's records."""
