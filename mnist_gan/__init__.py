"""mnist-gan: train, watch, diagnose, sample and evaluate GANs on MNIST-like images.

>>> from mnist_gan import preset, train, resume, load_generator, generate
>>> config = preset("recommended")
>>> config.train.iterations = 300
>>> result = train(config, "runs/demo", progress=False)
>>> model_config, G, D = load_generator(result.checkpoint)
>>> generate(G, model_config, 16, seed=0).shape
torch.Size([16, 1, 28, 28])
>>> more = resume("runs/demo", iterations=2 * result.iteration, progress=False)  # the same run, continued
>>> more.iteration == 2 * result.iteration
True

`import mnist_gan` stays quick: torch-heavy names load on first use.
"""

from mnist_gan.errors import MnistGanError
from mnist_gan.settings.config import PRESETS, DataConfig, ModelConfig, RunConfig, TrainConfig, preset

_LAZY = {
    "train": "mnist_gan.training.loop",
    "resume": "mnist_gan.training.loop",
    "load_dataset": "mnist_gan.data.datasets",
    "build_generator": "mnist_gan.gan.models",
    "build_discriminator": "mnist_gan.gan.models",
    "sample_z": "mnist_gan.gan.models",
    "load_generator": "mnist_gan.run.checkpoint",
    "generate": "mnist_gan.sampling.sample",
    "generate_nice": "mnist_gan.sampling.sample",
    "interpolate": "mnist_gan.sampling.sample",
    "save_images": "mnist_gan.sampling.sample",
    "grid_image": "mnist_gan.sampling.grids",
    "evaluate_images": "mnist_gan.evaluation.evaluator",
    "evaluate_generator": "mnist_gan.evaluation.evaluator",
    "sample_problems": "mnist_gan.diagnosis.detectors",
    "record_problems": "mnist_gan.diagnosis.detectors",
    "plot_losses": "mnist_gan.diagnosis.loss_plot",
}

__all__ = ["PRESETS", "DataConfig", "ModelConfig", "RunConfig", "TrainConfig", "preset", "MnistGanError", *_LAZY]


def _version() -> str:
    """This package's version, as installed (pyproject.toml is its one source)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("mnist-gan")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":  # looked up on demand: reading package metadata costs an import's time
        return _version()
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnist_gan' has no attribute {name!r}")
