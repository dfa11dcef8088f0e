"""The feature classifier: a small CNN trained on the data set in use, whose features the metrics measure in.

Inception features do not suit 28x28 grayscale digits, so mnist-gan measures sample quality in the
penultimate layer of a classifier trained on the data set's own labeled training images. The classifier is
trained once, deterministically under a seed, and cached in the data cache directory as safetensors under a
fingerprint of the data and of this module's recipe, so it is never silently reused for other data.

Held-out images: the data set's test split where it has one; else a fixed 20% (at most 10,000) of the training
images, chosen by a fixed permutation, which the classifier never trains on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnist_gan.data.datasets import default_cache_dir
from mnist_gan.data.images import ImageDataset, random_shift, to_float
from mnist_gan.errors import MnistGanError, clip, quote
from mnist_gan.gan.weights import fit_problem, shapes_on_meta
from mnist_gan.io.files import check_writable
from mnist_gan.io.headers import open_safetensors, write_safetensors
from mnist_gan.io.untrusted import MAX_NUMBER_CHARS, ascii_int, check_regular

logger = logging.getLogger(__name__)

# Bump when the architecture or the training procedure changes: old cached classifiers are then not reused.
CLASSIFIER_VERSION = 1
FORMAT = "mnist-gan-classifier"
FEATURE_DIM = 128
HELDOUT_FRACTION = 0.2  # of the training images, when the data set has no test split
HELDOUT_MAX = 10_000
SPLIT_SEED = 1234  # fixed, so the held-out part never depends on a user's seed
# A cached classifier file: the RECIPE's is 1.7 MB.
MAX_CLASSIFIER_BYTES = 64 * 2**20
# Width a cached classifier may declare: the RECIPE's is 32; this bounds the model a file can make us build.
MAX_CLASSIFIER_WIDTH = 1024

# How the classifier is trained; part of the fingerprint. Steps, not epochs, so the time is bounded on any data set.
RECIPE = {"width": 32, "steps": 1500, "batch_size": 128, "lr": 3e-3, "weight_decay": 1e-4, "dropout": 0.25,
          "max_shift": 2, "seed": 0}


class FeatureClassifier(nn.Module):
    """images (B, 1, 28, 28) in [-1, 1] -> logits (B, num_classes); `features` gives the penultimate layer."""

    def __init__(self, num_classes: int = 10, width: int = 32, dropout: float = 0.25):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),  # (B, w, 28, 28)
            nn.MaxPool2d(2),  # (B, w, 14, 14)
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),  # (B, 2w, 14, 14)
            nn.MaxPool2d(2),  # (B, 2w, 7, 7)
            nn.Flatten(),  # (B, 2w * 49)
            nn.Dropout(dropout),
            nn.Linear(2 * width * 49, FEATURE_DIM), nn.ReLU(),  # (B, 128): the feature space of the metrics
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURE_DIM, num_classes))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)  # (B, 128)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))  # (B, num_classes)


@dataclass
class Split:
    """The classifier's training images and the held-out images, uint8 (N, 28, 28) with int64 labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    heldout_images: torch.Tensor
    heldout_labels: torch.Tensor
    heldout_index: torch.Tensor | None  # positions of the held-out images in dataset.images, if taken from it
    description: str


def split(dataset: ImageDataset) -> Split:
    """The test split as held-out images where the data set has one, else a fixed part of its training images."""
    if dataset.labels is None:
        raise MnistGanError(f"{dataset.source}: the metrics need labeled images to train their feature classifier "
                            "(an image folder needs one sub-folder per class)")
    if dataset.test_images is not None and dataset.test_labels is not None and len(dataset.test_images):
        return Split(dataset.images, dataset.labels, dataset.test_images, dataset.test_labels, None,
                     f"the test split of {dataset.name} ({len(dataset.test_images)} images)")
    count = len(dataset)
    held = min(HELDOUT_MAX, max(1, round(HELDOUT_FRACTION * count)))
    if count - held < 2:
        raise MnistGanError(f"{dataset.source}: {count} images are too few to train a feature classifier")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(SPLIT_SEED))
    heldout, train = order[:held].sort().values, order[held:].sort().values
    return Split(dataset.images[train], dataset.labels[train], dataset.images[heldout], dataset.labels[heldout],
                 heldout, f"{held} of the {count} training images of {dataset.name}, held out from the classifier "
                 "(it has no test split)")


def fingerprint(data: Split, num_classes: int) -> str:
    """SHA-256 of the classifier's code version, recipe and every image and label it trains and is tested on."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CLASSIFIER_VERSION, "recipe": RECIPE, "classes": num_classes},
                             sort_keys=True).encode())
    for tensor in (data.train_images, data.train_labels, data.heldout_images, data.heldout_labels):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Classifier:
    """A trained FeatureClassifier (eval mode) with what it was trained on."""

    model: FeatureClassifier
    fingerprint: str
    heldout_accuracy: float
    n_train: int
    n_heldout: int
    path: Path | None = None
    seconds: float = 0.0

    @torch.no_grad()
    def features_and_probabilities(self, images: torch.Tensor, batch_size: int = 500,
                                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """For images (N, 1, 28, 28) in [-1, 1]: features (N, 128) and class probabilities (N, classes), float64."""
        model = self.model.to(device).eval()
        features, probabilities = [], []
        for chunk in images.split(batch_size):
            hidden = model.features(chunk.to(device).float())  # (b, 128)
            features.append(hidden.double().cpu())
            probabilities.append(torch.softmax(model.head(hidden).double(), dim=1).cpu())
        self.model.cpu()
        if not features:
            return torch.empty(0, FEATURE_DIM, dtype=torch.float64), torch.empty(0, 0, dtype=torch.float64)
        return torch.cat(features), torch.cat(probabilities)


def cache_path(dataset: ImageDataset, key: str, cache_dir: str | Path | None = None) -> Path:
    """Where the classifier for this data fingerprint lives: <cache>/classifiers/<name>-<fingerprint[:16]>."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset.name) or "data"
    return root / "classifiers" / f"{safe_name}-{key[:16]}.safetensors"


def get_classifier(dataset: ImageDataset, cache_dir: str | Path | None = None, *, retrain: bool = False,
                   device: torch.device | str = "cpu") -> Classifier:
    """The classifier for `dataset`: from the cache when one with the same fingerprint is there, else trained."""
    data = split(dataset)
    key = fingerprint(data, dataset.num_classes)
    path = cache_path(dataset, key, cache_dir)
    if path.exists():  # a FIFO or a device there is neither read (it could block) nor replaced
        check_regular(path, "cached classifier")
    if path.exists() and not retrain:
        try:
            classifier = load_classifier(path, expected_fingerprint=key)
            logger.debug(f"feature classifier: {path} (cached; fingerprint {key[:16]})")
            return classifier
        except MnistGanError as error:
            logger.warning(f"not reusing the cached classifier: {error}; training a new one")
    check_writable(path.parent, "pass a writable --cache-dir (the trained classifier is kept there)")
    logger.info(f"training the feature classifier on {len(data.train_images)} images of {dataset.name} "
                f"(once; cached in {path.parent})")
    classifier = train_classifier(data, dataset.num_classes, device=device)
    classifier.fingerprint = key
    save_classifier(classifier, path, dataset)
    classifier.path = path
    logger.info(f"feature classifier: {100 * classifier.heldout_accuracy:.2f}% accuracy on {data.description}, "
                f"trained in {classifier.seconds:.0f}s")
    return classifier


def train_classifier(data: Split, num_classes: int, device: torch.device | str = "cpu") -> Classifier:
    """Train a FeatureClassifier as RECIPE says; the same data and recipe give the same weights on one machine.

    The global RNG is left as it was, so training it in the middle of a GAN run changes nothing there.
    """
    recipe = RECIPE
    device = torch.device(device)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe["seed"])  # initial weights and dropout
        rng = torch.Generator().manual_seed(recipe["seed"])  # batches and shifts
        model = FeatureClassifier(num_classes, recipe["width"], recipe["dropout"]).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe["lr"], total_steps=recipe["steps"])
        images, labels = to_float(data.train_images), data.train_labels
        shift = recipe["max_shift"]
        model.train()
        for _ in range(recipe["steps"]):
            index = torch.randint(0, len(images), (recipe["batch_size"],), generator=rng)
            real = random_shift(images[index], shift, rng)  # (B, 1, 28, 28)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=_fast_bf16(device)):
                loss = F.cross_entropy(model(real.to(device)), labels[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model = model.cpu().eval()
    classifier = Classifier(model, "", 0.0, len(data.train_images), len(data.heldout_images))
    classifier.heldout_accuracy = accuracy(classifier, data.heldout_images, data.heldout_labels)
    classifier.seconds = time.perf_counter() - started
    return classifier


def _fast_bf16(device: torch.device) -> bool:
    # bf16 autocast speeds training up where the CPU has native bf16 matmuls; elsewhere it only costs accuracy.
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def accuracy(classifier: Classifier, images_uint8: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images (N, 28, 28) uint8 whose predicted class is the label."""
    if len(images_uint8) == 0:
        return float("nan")
    _, probabilities = classifier.features_and_probabilities(to_float(images_uint8))
    return float((probabilities.argmax(1) == labels).double().mean())


def save_classifier(classifier: Classifier, path: Path, dataset: ImageDataset) -> None:
    """Write weights and a description (fingerprint, accuracy, sizes) to safetensors, atomically."""
    metadata = {"format": FORMAT, "version": str(CLASSIFIER_VERSION), "fingerprint": classifier.fingerprint,
                "num_classes": str(classifier.model.head[-1].out_features),
                "width": str(classifier.model.body[0].out_channels),
                "heldout_accuracy": repr(classifier.heldout_accuracy), "n_train": str(classifier.n_train),
                "n_heldout": str(classifier.n_heldout), "seconds": f"{classifier.seconds:.1f}",
                "data": dataset.source, "recipe": json.dumps(RECIPE, sort_keys=True)}
    write_safetensors(path, classifier.model.state_dict(), metadata)


def load_classifier(path: str | Path, expected_fingerprint: str | None = None) -> Classifier:
    """Read a cached classifier; refuse it when its fingerprint is not the expected one.

    The file must be a regular file; its header, metadata and every weight shape are checked (against the
    model the metadata describes, built on the meta device) before its weights are read or a model is built.
    """
    path = Path(path)
    with open_safetensors(path, "classifier file", MAX_CLASSIFIER_BYTES) as stored:
        metadata = stored.metadata
        if metadata.get("format") != FORMAT:
            raise MnistGanError(f"{path}: not an mnist-gan classifier file")
        found = metadata.get("fingerprint", "?")
        if expected_fingerprint is not None and found != expected_fingerprint:
            raise MnistGanError(f"{path}: trained on other data or by another classifier version "
                                f"(fingerprint {quote(found[:16])}, expected {expected_fingerprint[:16]})")
        numbers = _metadata_numbers(metadata, path)
        problem = fit_problem(shapes_on_meta(lambda: FeatureClassifier(numbers["num_classes"], numbers["width"]))[0],
                              stored.shapes)
        if problem:
            raise MnistGanError(f"{path}: corrupt classifier file (weights do not fit its metadata: {problem})")
        tensors = stored.tensors()
    model = FeatureClassifier(numbers["num_classes"], numbers["width"])
    try:
        model.load_state_dict(tensors)
    except (RuntimeError, ValueError) as error:
        raise MnistGanError(f"{path}: corrupt classifier file ({type(error).__name__}: {clip(error)})") from None
    return Classifier(model.eval(), found, numbers["heldout_accuracy"], numbers["n_train"], numbers["n_heldout"],
                      path, numbers["seconds"])


def _metadata_numbers(metadata: dict[str, str], path: Path) -> dict:
    """The numbers a classifier file's metadata records, each checked for type and range."""
    from mnist_gan.data.images import MAX_CLASSES, MAX_IMAGES

    numbers = {"num_classes": ascii_int(metadata.get("num_classes"), 1, MAX_CLASSES),
               "width": ascii_int(metadata.get("width"), 1, MAX_CLASSIFIER_WIDTH),
               "n_train": ascii_int(metadata.get("n_train"), 0, 2 * MAX_IMAGES),
               "n_heldout": ascii_int(metadata.get("n_heldout"), 0, 2 * MAX_IMAGES),
               "heldout_accuracy": _float(metadata.get("heldout_accuracy"), 0.0, 1.0, allow_nan=True),
               "seconds": _float(metadata.get("seconds", "0"), 0.0, 1e9)}
    bad = [key for key, value in numbers.items() if value is None]
    if bad:
        raise MnistGanError(f"{path}: corrupt classifier file (metadata {bad[0]} is "
                            f"{quote(metadata.get(bad[0]))})")
    return numbers


def _float(text: str | None, low: float, high: float, allow_nan: bool = False) -> float | None:
    if not isinstance(text, str) or len(text) > MAX_NUMBER_CHARS:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if low <= value <= high or (allow_nan and math.isnan(value)) else None
