"""Data: images in memory, the file formats (IDX, npz/npy, image folders) and the named data sets."""


def __getattr__(name: str):
    """The names of the module this room replaced (mnist_gan.data, now mnist_gan.data.datasets), with a DeprecationWarning."""
    import importlib
    import warnings

    module = importlib.import_module("mnist_gan.data.datasets")
    if name.startswith("__") or not hasattr(module, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"mnist_gan.data.{name} moved to mnist_gan.data.datasets.{name}", DeprecationWarning, stacklevel=2)
    return getattr(module, name)
