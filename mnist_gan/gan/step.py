"""One training iteration of a GAN, as in the papers: (1) update D on a real batch and G's fakes, (2) update G
through a frozen D. `GanStep` owns everything that iteration touches: G, D, the moving average of G's weights,
both optimizers, the loss and its penalties, the noise generator and the precision. How G and D are called
(compiled, or through DDP under torchrun) lives behind one object, `Wrappers` (mnist_gan.gan.wrappers).

    step = GanStep(config)                 # G and D initialised from config.train.seed
    stats = step(real, labels)             # (4,): d_loss, g_loss, D(x), D(G(z))
    torch.save(step.state_dict(), path)    # what a checkpoint needs to continue bit for bit

Randomness: z comes from the step's own noise generator (seeded with config.train.seed); the augmentation's
shifts and WGAN-GP's mixing weights from torch's global RNG, which `state_dict` saves too. Per-image draws are
made for the global batch and sharded, so N processes compute what one process would.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from mnist_gan.data.images import random_shift, shift_offsets
from mnist_gan.errors import MnistGanError
from mnist_gan.gan.device import autocast, resolve_precision, to_channels_last
from mnist_gan.gan.distributed import Ranks
from mnist_gan.gan.flops import training_flops_per_image
from mnist_gan.gan.losses import get_loss, make_d_penalty
from mnist_gan.gan.models import build_discriminator, build_generator, sample_z
from mnist_gan.gan.weights import load_state
from mnist_gan.gan.wrappers import Wrappers
from mnist_gan.settings.config import RunConfig


def make_optimizer(module: nn.Module, config: RunConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """SGD (the tutorial: lr 0.001, momentum 0.9, Nesterov) or Adam, as the config says; lr defaults to --lr."""
    train = config.train
    lr = lr or train.lr
    # The fused kernels update all parameters in one pass (CPU and CUDA); the maths is the same as the loop's.
    fused = next(module.parameters()).device.type in ("cpu", "cuda")
    if train.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=lr, momentum=train.momentum, nesterov=train.nesterov,
                               fused=fused)
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(train.beta1, train.beta2), fused=fused)


TOP_K_DECAY = 0.99  # --top-k: k shrinks by this factor each epoch (Sinha et al. 2020, their gamma)


def top_k_count(n: int, epoch: int, min_fraction: float) -> int:
    """How many of n fakes G learns from in `epoch` under --top-k: n * 0.99^epoch, never below min_fraction * n
    (nor below one)."""
    return max(int(TOP_K_DECAY ** epoch * n), int(min_fraction * n), 1)


def update_ema(G_ema: nn.Module, G: nn.Module, decay: float, iteration: int) -> None:
    """G_ema <- decay * G_ema + (1 - decay) * G, the decay warmed up over the first steps; buffers are copied."""
    decay = min(decay, (1 + iteration) / (10 + iteration))
    with torch.no_grad():
        for average, current in zip(G_ema.parameters(), G.parameters(), strict=True):
            average.lerp_(current, 1 - decay)
        for average, current in zip(G_ema.buffers(), G.buffers(), strict=True):
            average.copy_(current)


@contextlib.contextmanager
def frozen(D: nn.Module) -> Iterator[None]:
    """D held still while G learns through it: its parameters take no gradient inside, and learn again after."""
    D.requires_grad_(False)
    try:
        yield
    finally:
        D.requires_grad_(True)


class GanStep:
    """G, D and everything one training iteration needs; `step(real, labels)` runs one iteration.

    Attributes a caller may read: `G`, `D` (the networks being trained), `G_ema` (the weight average, or None),
    `G_sample` (what grids, exports and evaluation draw from: G_ema, else G), `loss`, `precision`, `compiled`,
    `wrappers` (how the step calls G and D), `iteration` (steps taken; it sets the EMA's warm-up). Between two
    calls, the .grad of G's and of D's parameters hold the gradients of their last update (each update zeroes them
    first), which the gradient-norm probe reads.
    """

    def __init__(self, config: RunConfig, device: torch.device | str = "cpu", ranks: Ranks | None = None,
                 batches_per_epoch: int | None = None) -> None:
        """Build G and D from config.model, initialised after seeding torch's global RNG with config.train.seed.
        `batches_per_epoch` sets --top-k's schedule (None: k stays at its first epoch's).

        Raises MnistGanError for a loss the config cannot use or a precision this device cannot run. With `ranks`
        of several processes (torchrun), G and D train through DistributedDataParallel and global-batch BatchNorm.
        """
        train = config.train
        self.config, self.device, self.ranks = config, torch.device(device), ranks or Ranks()
        self.loss = get_loss(config)
        self.d_penalty = make_d_penalty(self.loss, train)  # what D's loss adds: WGAN-GP's penalty, R1
        self.real_target = 1.0 - train.label_smoothing  # one-sided label smoothing
        torch.manual_seed(train.seed)
        G, D = build_generator(config.model), build_discriminator(config.model)
        # The precision depends on the model's size. (Counting runs one no-grad inference pass: no RNG drawn, no
        # BatchNorm statistics changed.)
        model = config.model
        flops = training_flops_per_image(G, D, model.z_dim, model.conditional, channels=model.channels,
                                         pack=model.pack)["total"]
        compile_wanted = train.compile and not self.ranks.enabled
        self.precision = resolve_precision(train.precision, self.device, flops, compiled=compile_wanted,
                                           batch_size=train.batch_size // self.ranks.world_size)
        self.G, self.D = to_channels_last(G.to(self.device)), to_channels_last(D.to(self.device))
        self.optimizer_g = make_optimizer(self.G, config, train.lr_g)
        self.optimizer_d = make_optimizer(self.D, config, train.lr_d)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if train.ema_decay else None
        self.noise_rng = torch.Generator().manual_seed(train.seed)
        self.iteration, self.batches_per_epoch = 0, batches_per_epoch
        # Built last: with torchrun it makes G's and D's BatchNorm layers global-batch, which G_ema keeps plain
        self.wrappers = Wrappers(self.G, self.D, train.compile, self.ranks, self.device)

    @property
    def G_sample(self) -> nn.Module:
        """What grids, exports and evaluation draw from: G_ema, else G."""
        return self.G_ema if self.G_ema is not None else self.G

    @property
    def compiled(self) -> bool:
        """Whether G and D run through torch.compile (asked for with --compile, and it works here)."""
        return self.wrappers.compiled

    def __call__(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One iteration on this process' share of a real batch, `real` (B, C, 28, 28) in [-1, 1], with its labels
        (B,) for a conditional G (its fakes get the real images' labels) or its cluster ids for a self-conditioned
        one (its fakes get the clusters G draws from their z).

        Returns a (4,) float32 tensor on the device: d_loss, g_loss, and D(x), D(G(z)) read on the loss's own
        [0, 1] scale, from the last D update.
        """
        self.wrappers.begin_step()
        train = self.config.train

        # (1) Update D: n_critic times on this real batch, against fresh fakes, as the loss says
        for critic in range(train.n_critic):
            # --reuse-fakes: the last critic step's fakes keep their graph, and G learns from them below
            fake, fake_labels = self._fakes_for_d(labels, learn_from=train.reuse_fakes and
                                                  critic == train.n_critic - 1)  # (B, C, 28, 28); (B,) or None
            fake_for_d = fake.detach()
            real_logits, fake_logits = self._d_outputs(real, fake_for_d, labels, fake_labels)  # (B/m,), (B/m,)
            loss_d = self.loss.d(real_logits, fake_logits, self.real_target) \
                + self._penalty(real, fake_for_d, labels)
            self._descend(self.optimizer_d, loss_d)

        # (2) Update G: through a frozen D, as the loss says (its fakes scored as if they were real)
        G, D = self.wrappers.updating("G")
        with frozen(self.D):
            with autocast(self.device, self.precision):
                if not train.reuse_fakes:
                    z, fake_labels = self._noise_for_g(labels)  # (B, z_dim); (B,) or None
                    fake = G(z, fake_labels)  # (B, C, 28, 28)
                fake_logits_g = D(self._augment(fake), fake_labels).float()  # (B/m,)
            loss_g = self.loss.g(self._top_k(fake_logits_g))
            if train.diversity:
                loss_g = loss_g + train.diversity * self._mode_seeking(z, fake.float())
            self._descend(self.optimizer_g, loss_g)
        if self.G_ema is not None:
            update_ema(self.G_ema, self.G, train.ema_decay, self.iteration)

        self.iteration += 1
        return torch.stack([loss_d.detach(), loss_g.detach(), self.loss.score(real_logits.detach()).mean(),
                            self.loss.score(fake_logits.detach()).mean()]).float()  # (4,)

    def _noise(self) -> torch.Tensor:
        """This process' share of one global batch of z, (B, z_dim)."""
        return self.ranks.shard(sample_z(self.config.train.batch_size, self.config.model, self.noise_rng,
                                         self.device))

    def _fake_labels(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The fakes' labels: the real batch's (--conditional), the clusters G draws from z (--self-condition, as
        it does when sampling), or None."""
        return self.G.cluster_ids(z) if self.config.model.self_condition else labels

    def _pairs(self, z: torch.Tensor, fake_labels: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """--diversity: in every block of 2m fakes (m: --pack), the second m share the first m's classes (labels,
        or the cluster coordinate z[:, 0]) with fresh noise elsewhere, so each pack still holds m independent
        classes and the pairs stay inside one process' share."""
        m = self.config.model.pack
        blocks = z.view(-1, 2, m, z.shape[1])  # (B/2m, 2, m, z_dim)
        z = torch.cat([blocks[:, :1], torch.cat([blocks[:, :1, :, :1], blocks[:, 1:, :, 1:]], dim=3)], dim=1)
        if fake_labels is not None:
            fake_labels = fake_labels.view(-1, 2, m)[:, :1].expand(-1, 2, m).reshape(-1)
        return z.reshape(-1, z.shape[-1]), fake_labels

    def _mode_seeking(self, z: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Mao et al.'s term 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2| + 1e-5) over the pairs `_pairs` made: small
        when pairs of the same class differ as much as their noise does."""
        m = self.config.model.pack
        images, noise = fake.view(-1, 2, m, *fake.shape[1:]), z.view(-1, 2, m, z.shape[1])
        ratio = (images[:, 0] - images[:, 1]).abs().mean() / (noise[:, 0] - noise[:, 1]).abs().mean()
        return 1 / (ratio + 1e-5)

    def _noise_for_g(self, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z (B, z_dim) and the fakes' labels for the G update: in pairs under --diversity."""
        z = self._noise()  # (B, z_dim)
        fake_labels = self._fake_labels(z, labels)
        return self._pairs(z, fake_labels) if self.config.train.diversity else (z, fake_labels)

    def _fakes_for_d(self, labels: torch.Tensor | None, learn_from: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fresh fakes (B, C, 28, 28) for the D update and their labels: without gradients to G, or, when G will
        `learn_from` them (--reuse-fakes), made by G as its own update calls it, graph kept."""
        z = self._noise()  # (B, z_dim)
        fake_labels = self._fake_labels(z, labels)
        if learn_from:
            G, _ = self.wrappers.updating("G")
            with autocast(self.device, self.precision):
                return G(z, fake_labels), fake_labels
        G, _ = self.wrappers.updating("D")
        with torch.no_grad(), autocast(self.device, self.precision):
            self.G.train(not self.config.train.fake_in_eval_mode)
            fake = G(z, fake_labels)  # (B, C, 28, 28)
            self.G.train()
        return fake, fake_labels

    def _d_outputs(self, real: torch.Tensor, fake: torch.Tensor,
                   labels: torch.Tensor | None, fake_labels: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits (B/m,) for the real and the fake batch (m: --pack), both seen through the same augmentation; fp32 (under
        bf16 autocast too), so losses and D's probabilities stay fp32."""
        _, D = self.wrappers.updating("D")
        with autocast(self.device, self.precision):
            real_seen, fake_seen = self._augment(real), self._augment(fake)  # (B, 1, 28, 28) each
            if self.config.train.joint_d_batch:
                pair = None if labels is None else torch.cat([labels, fake_labels])
                logits = D(torch.cat([real_seen, fake_seen.to(real.dtype)]), pair).float()  # (2B/m,)
                return logits[:len(logits) // 2], logits[len(logits) // 2:]  # packs of reals, then of fakes
            return D(real_seen, labels).float(), D(fake_seen, fake_labels).float()

    def _penalty(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | float:
        """What D's loss adds (the loss's own penalty, R1), computed through D itself, never a wrapper (the
        penalty differentiates D's gradient, create_graph=True)."""
        # The penalty's mixing weights: drawn for the global batch and sharded, like the augmentation's shifts
        alpha = self.ranks.shard(torch.rand(self.config.train.batch_size, 1, 1, 1)) \
            if self.loss.penalty is not None else None  # (B, 1, 1, 1)
        return self.d_penalty(self.D, real, fake.float(), labels, alpha)

    def _top_k(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """The k logits D rates most real (--top-k; higher is more real under every loss), else all of them."""
        train = self.config.train
        if not train.top_k:
            return fake_logits
        epoch = self.iteration // self.batches_per_epoch if self.batches_per_epoch else 0
        return fake_logits.topk(top_k_count(len(fake_logits), epoch, train.top_k_min)).values  # (k,)

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        """Random shifts of up to --augment-shift pixels (DiffAugment), or the images as they are."""
        shift = self.config.train.augment_shift
        if not shift:
            return images
        offsets = self.ranks.shard(shift_offsets(self.config.train.batch_size, shift))  # (B, 2)
        return random_shift(images, shift, offsets=offsets)

    @staticmethod
    def _descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def check_finite(self, iteration: int) -> None:
        """Raise MnistGanError if G or D holds a NaN or infinite weight (checked before a state is saved)."""
        for name, module in (("G", self.G), ("D", self.D)):
            for tensor in module.state_dict().values():
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise MnistGanError(f"training diverged: {name} has non-finite weights at iteration "
                                        f"{iteration}; stopped without saving")

    def state_dict(self) -> dict:
        """Everything needed to continue bit for bit: steps taken, weights, optimizers, both RNGs (live tensors:
        copy or save them before stepping on)."""
        return {"iteration": self.iteration, "G": self.G.state_dict(), "D": self.D.state_dict(),
                **({"G_ema": self.G_ema.state_dict()} if self.G_ema is not None else {}),
                "optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict(),
                "rng": {"noise": self.noise_rng.get_state(), "torch": torch.get_rng_state()}}

    def load_state_dict(self, state: dict, source: str | Path = "state") -> None:
        """Restore what `state_dict` (or a checkpoint) holds; raise MnistGanError, naming `source`, if it does
        not fit these networks. A state without G_ema (an older checkpoint) starts the average from G."""
        load_state(self.G, state["G"], "generator", source)
        load_state(self.D, state["D"], "discriminator", source)
        try:
            self.optimizer_g.load_state_dict(state["optimizer_g"])
            self.optimizer_d.load_state_dict(state["optimizer_d"])
            self.noise_rng.set_state(state["rng"]["noise"])
            torch.set_rng_state(state["rng"]["torch"])
        except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as error:
            raise MnistGanError(f"{source}: optimizer or RNG state does not fit this run "
                                f"({type(error).__name__}: {str(error)[:200]})") from None
        if self.G_ema is not None:
            load_state(self.G_ema, state.get("G_ema", state["G"]), "generator average", source)
        self.iteration = state["iteration"]
