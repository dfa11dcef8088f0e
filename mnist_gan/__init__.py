"""mnist-gan: train, watch, diagnose, sample and evaluate GANs on MNIST-like images.

    from mnist_gan import preset, train, resume, load_generator, generate
    result = train(preset("seed"), "runs/demo")      # a new run
    result = resume("runs/demo", iterations=2000)    # the same run, continued

`import mnist_gan` stays quick: torch-heavy names load on first use.
"""

from mnist_gan.config import PRESETS, DataConfig, ModelConfig, RunConfig, TrainConfig, preset
from mnist_gan.errors import MnistGanError

_LAZY = {
    "train": "mnist_gan.training",
    "resume": "mnist_gan.training",
    "load_dataset": "mnist_gan.data",
    "build_generator": "mnist_gan.models",
    "build_discriminator": "mnist_gan.models",
    "load_generator": "mnist_gan.checkpoint",
    "generate": "mnist_gan.sample",
    "generate_nice": "mnist_gan.sample",
    "interpolate": "mnist_gan.sample",
    "save_images": "mnist_gan.sample",
    "evaluate_images": "mnist_gan.metrics",
    "evaluate_generator": "mnist_gan.metrics",
}

__all__ = ["PRESETS", "DataConfig", "ModelConfig", "RunConfig", "TrainConfig", "preset", "MnistGanError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnist_gan' has no attribute {name!r}")
