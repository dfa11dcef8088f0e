"""Self-conditioning (Liu et al., "Diverse Image Generation via Self-Conditioned GANs", CVPR 2020): the training
images' cluster ids, which a --self-condition run trains its conditional G and D on instead of labels.

The first clustering is k-means on a PCA of the pixels; every --recluster-every iterations the images are
clustered again on D's features, as the paper does, and the new clusters take the ids of the old ones they
overlap most (Hungarian matching), so an id keeps its meaning. Everything is deterministic given the run's seed
and the iteration, and `state_dict` holds what a checkpoint needs to continue bit for bit. No label is read.
"""

from __future__ import annotations

import torch
from torch import nn

from mnist_gan.data.images import to_float
from mnist_gan.errors import MnistGanError
from mnist_gan.gan.models import pack_images

PCA_DIMS = 32  # pixel components the first clustering uses: ~75% of MNIST's pixel variance, 1/24 of the pixels
FEATURE_DIMS = 128  # D's features (2w*49, 3,136 at width 32) are projected to this many before k-means: ~4x faster
KMEANS_ITERATIONS = 25  # Lloyd steps; MNIST's assignments stop changing after ~15
MAX_FIT_POINTS = 10_000  # centres (and the PCA) are fitted on at most this many images, then every image is assigned
CHUNK = 2_000  # images embedded or assigned at a time: memory stays flat whatever the data set's size


def _spread(count: int, limit: int, rng: torch.Generator) -> torch.Tensor:
    """At most `limit` of range(count), a random subset in increasing order (all of them when count <= limit)."""
    if count <= limit:
        return torch.arange(count)
    return torch.randperm(count, generator=rng)[:limit].sort().values


def pixel_embedding(images: torch.Tensor, rng: torch.Generator, dims: int = PCA_DIMS) -> torch.Tensor:
    """The first `dims` principal components (N, dims) of uint8 images' pixels; the PCA is fitted on a subset."""
    pixels = images.reshape(len(images), -1)  # (N, C*784) uint8
    fit = pixels[_spread(len(pixels), MAX_FIT_POINTS, rng)].double() / 255
    mean = fit.mean(0)
    covariance = (fit - mean).T @ (fit - mean) / max(1, len(fit) - 1)  # (C*784, C*784)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # LAPACK's eigh here: ~0.2 s on one thread, over 10 s with several on busy cores
    try:
        axes = torch.linalg.eigh(covariance).eigenvectors[:, -dims:].flip(1)  # (C*784, dims), largest first
    finally:
        torch.set_num_threads(threads)
    return torch.cat([(chunk.double() / 255 - mean) @ axes for chunk in pixels.split(CHUNK)]).float()  # (N, dims)


@torch.no_grad()
def feature_embedding(D: nn.Module, images: torch.Tensor, rng: torch.Generator,
                      dims: int = FEATURE_DIMS) -> torch.Tensor:
    """D's features of uint8 images (N, dims), randomly projected (Johnson-Lindenstrauss). D runs in inference
    mode (no BatchNorm statistics or spectral-norm vectors change) and is left in the mode it was in."""
    was_training, pack = D.training, getattr(D, "pack", 1)
    D.eval()
    projection = None
    chunks = []
    try:
        for chunk in images.split(CHUNK):
            real = to_float(chunk).repeat_interleave(pack, dim=0)  # a packed D sees m copies of each image
            h = D.features(pack_images(real, pack)).float().cpu()  # (b, F)
            if projection is None:
                projection = torch.randn(h.shape[1], dims, generator=rng) / dims ** 0.5  # (F, dims)
            chunks.append(h @ projection)
    finally:
        D.train(was_training)
    return torch.cat(chunks)  # (N, dims)


def assign(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The nearest centre (N,) of each point (N, F) among centres (K, F)."""
    squared = (centres * centres).sum(1)  # (K,)
    return torch.cat([(squared[None] - 2 * chunk @ centres.T).argmin(1) for chunk in points.split(CHUNK)])


def kmeans(points: torch.Tensor, k: int, rng: torch.Generator, iterations: int = KMEANS_ITERATIONS) -> torch.Tensor:
    """k centres (k, F) of points (N, F): k-means++ seeding from `rng`, then Lloyd steps on at most MAX_FIT_POINTS
    of them; an empty cluster keeps its centre. Deterministic given rng's state."""
    fit = points[_spread(len(points), MAX_FIT_POINTS, rng)]
    centres = fit[torch.randint(len(fit), (1,), generator=rng)]  # (1, F)
    nearest = ((fit - centres[0]) ** 2).sum(1)  # (n,)
    for _ in range(k - 1):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        chosen = fit[torch.multinomial(weights, 1, generator=rng)]  # (1, F)
        centres = torch.cat([centres, chosen])
        nearest = torch.minimum(nearest, ((fit - chosen) ** 2).sum(1))
    for _ in range(iterations):
        ids = assign(fit, centres)  # (n,)
        members = torch.nn.functional.one_hot(ids, k).to(fit.dtype)  # (n, k); a product: index_add_ is slow here
        counts, sums = members.sum(0)[:, None], members.T @ fit  # (k, 1), (k, F)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return centres


def match_clusters(old: torch.Tensor, new: torch.Tensor, k: int) -> torch.Tensor:
    """For each new cluster id, the old id it takes (k,): the matching that maximises the images both
    assignments (N,) put together (Hungarian, scipy.optimize.linear_sum_assignment)."""
    from scipy.optimize import linear_sum_assignment

    overlap = torch.bincount(old * k + new, minlength=k * k).view(k, k)  # [old, new]: images in both
    old_ids, new_ids = linear_sum_assignment(overlap.numpy(), maximize=True)
    mapping = torch.empty(k, dtype=torch.long)
    mapping[torch.from_numpy(new_ids)] = torch.from_numpy(old_ids)
    return mapping


class SelfConditioning:
    """The cluster id of every training image, the centres they were assigned to, and the clusters' shares."""

    def __init__(self, assignments: torch.Tensor, centres: torch.Tensor) -> None:
        self.assignments, self.centres = assignments, centres  # (N,) int64, (K, F) float32
        self.k = len(centres)

    @classmethod
    def from_pixels(cls, images: torch.Tensor, k: int, seed: int) -> SelfConditioning:
        """Cluster uint8 images (N, [C,] 28, 28) by k-means on a PCA of their pixels."""
        if len(images) < k:
            raise MnistGanError(f"--self-condition {k}: the data set has only {len(images)} images, fewer than the "
                                "clusters; pass --self-condition 0 (no clusters) or fewer clusters")
        rng = torch.Generator().manual_seed(seed)
        points = pixel_embedding(images, rng)
        centres = kmeans(points, k, rng)
        return cls(assign(points, centres), centres)

    def proportions(self) -> torch.Tensor:
        """Each cluster's share (K,) of the training images: how often G draws it."""
        return torch.bincount(self.assignments, minlength=self.k).float() / len(self.assignments)

    def recluster(self, D: nn.Module, images: torch.Tensor, seed: int) -> None:
        """Cluster the images again on D's features; the new clusters take the ids of the old ones they overlap
        most. `seed` (the run's seed and the iteration) makes it repeatable."""
        rng = torch.Generator().manual_seed(seed)
        points = feature_embedding(D, images, rng)
        centres = kmeans(points, self.k, rng)
        assignments = assign(points, centres)
        mapping = match_clusters(self.assignments, assignments, self.k)  # new id -> old id
        self.assignments = mapping[assignments]
        self.centres = torch.empty_like(centres).index_copy_(0, mapping, centres)

    def state_dict(self) -> dict:
        return {"assignments": self.assignments, "centres": self.centres, "proportions": self.proportions()}

    @classmethod
    def from_state(cls, state: object, images: int, k: int, source: object) -> SelfConditioning:
        """Rebuild from `state_dict()` as a checkpoint holds it, refusing one that does not fit the run (`images`
        training images, `k` clusters) with one MnistGanError line naming `source`."""
        assignments = state.get("assignments") if isinstance(state, dict) else None
        centres = state.get("centres") if isinstance(state, dict) else None
        if not (isinstance(assignments, torch.Tensor) and isinstance(centres, torch.Tensor)
                and assignments.dtype == torch.int64 and assignments.shape == (images,)
                and centres.dim() == 2 and len(centres) == k and centres.is_floating_point()
                and (images == 0 or 0 <= int(assignments.min()) <= int(assignments.max()) < k)):
            raise MnistGanError(f"{source}: its clusters do not fit this run ({images} images, {k} clusters)")
        return cls(assignments.clone(), centres.clone())
