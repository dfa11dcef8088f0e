"""K GAN runs of one architecture stepped together as one batched computation: `StackedStep`.

Each run keeps its own ordinary `GanStep` (built, seeded and initialised exactly as a single run's); the stacked
step copies their weights into tensors with a leading run axis (K, ...) and runs G's and D's forward and backward
passes once for all K, through `torch.func.functional_call` under `torch.vmap`:

    stacked = StackedStep([GanStep(config_0), GanStep(config_1), ...])
    stats = stacked([(real_0, labels_0), (real_1, labels_1), ...])   # (K, 4): each run's GanStep figures
    stacked.write_back()                                              # each GanStep holds its run's state again

What stays per run, drawn outside vmap exactly as a single run draws it: z from each run's noise generator, the
fakes' labels (clusters) from each run's G, the real batch. Each run's optimizer is its own kind (Adam or SGD with
its own lr and betas) stepping over views of its slice of the stacked weights, so the update's arithmetic is a
single run's; the EMA is a per-run lerp with the run's own decay. Spectral normalisation's power iteration cannot
run in place under vmap, so it runs batched over the runs (`stacked_weights.normalised_weight`), and D is called
without its parametrisation. Draws a single run takes from torch's global RNG (--augment-shift's offsets,
WGAN-GP's mixing weights) are taken for each run inside `own_rng[k]`, a context in which the global RNG is run
k's (the sweep swaps each run's state in), in the single run's order. Penalties through D's input gradient (R1,
WGAN-GP) are double backward passes through the batched D, each run's mean taken over its own images. What
differs from a single run: the batched kernels (a grouped convolution, a batched matrix
product) round differently from the single ones, so a run in a stack matches the same run alone to float32
rounding, which GAN training then amplifies slowly (tests/test_training_sweep.py bounds it).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence

import torch
from torch.func import functional_call, vmap

from mnist_gan.data.images import random_shift, shift_offsets
from mnist_gan.errors import MnistGanError
from mnist_gan.gan.device import autocast
from mnist_gan.gan.losses import gradient_penalty_terms, r1_terms
from mnist_gan.gan.stacked_weights import StackedNet, copied_state, view_optimizer
from mnist_gan.gan.step import GanStep
from mnist_gan.settings.config import RunConfig
from mnist_gan.settings.sweep import ON_OFF, PER_RUN

# Settings the stacked step does not carry out (their value that it does carry out: off): torch.compile of a
# vmapped functional call is its own project
UNSUPPORTED = {"train.compile": False}


def flat_settings(config: RunConfig) -> dict[str, object]:
    """{"section.field": value} of every setting, and "preset"."""
    raw = config.to_dict()
    return {"preset": raw.pop("preset"), **{f"{section}.{key}": value for section, values in raw.items()
                                             for key, value in values.items()}}


def check_stackable(configs: list[RunConfig]) -> None:
    """Raise MnistGanError (one line, naming the settings) unless these runs can train as one stack: the same
    shapes and code path (everything but PER_RUN equal), nothing the stack does not support yet, and each
    switchable term (ON_OFF: the EMA, R1, ...) on in all runs or in none."""
    if not configs:
        raise MnistGanError("a sweep needs at least one run")
    settings = [flat_settings(config) for config in configs]
    differ = sorted(key for key in settings[0] if key not in PER_RUN and len({repr(s[key]) for s in settings}) > 1)
    if differ:
        raise MnistGanError(f"runs of one sweep must share their shapes and code path; these settings differ: "
                            f"{', '.join(differ)} (sweep them in separate sweeps)")
    mixed = [key for key in ON_OFF if len({bool(s[key]) for s in settings}) > 1]
    if mixed:
        raise MnistGanError(f"{', '.join(k.split('.')[1] for k in mixed)}: 0 (off) in some runs of the sweep and not "
                            "in others: sweep them apart")
    first = settings[0]
    unsupported = [f"{key.split('.')[1]}={first[key]}" for key, off in UNSUPPORTED.items() if first[key] != off]
    if unsupported:
        raise MnistGanError(f"a sweep does not support {', '.join(unsupported)} yet (train those runs one by one)")


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a stack on `device` (a GPU's free memory, the machine's available memory), None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo.read(1 << 16).splitlines() if ":" in line)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def estimate_bytes(step: GanStep, runs: int) -> int:
    """A generous estimate of what `runs` copies of `step` need as one stack: weights, gradients, optimizer state
    and EMA, and the activations one iteration keeps for its backward passes."""
    nets = [step.G, step.D] + ([step.G_ema] if step.G_ema is not None else [])
    weights = sum(p.numel() for net in nets for p in net.parameters())
    images = 2 * step.config.model.pack
    z = torch.zeros(images, step.config.model.z_dim, device=step.device)
    labels = torch.zeros(images, dtype=torch.long, device=step.device) if step.config.model.conditional else None
    outputs: list[int] = []
    G, D = copy.deepcopy(step.G).eval(), copy.deepcopy(step.D).eval()  # no statistic or power iteration moves
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel()))
             for net in (G, D) for m in net.modules() if not list(m.children())]
    with torch.no_grad():
        D(G(z, labels), labels)
    for hook in hooks:
        hook.remove()
    per_image = sum(outputs) / images
    return int(runs * 4 * (4 * weights + 6 * step.config.train.batch_size * per_image))


def check_fits(step: GanStep, runs: int) -> None:
    """Refuse (MnistGanError, before training) what a stack of `runs` copies of `step` cannot do: a precision
    other than fp32 (vmap's batched convolutions ignore bf16 autocast), torchrun, torch.compile, or more memory
    than `step.device` has free (the message gives the estimate)."""
    if step.precision != "fp32":
        raise MnistGanError(f"a sweep trains in fp32, and this device would train these runs in {step.precision}: "
                            "pass --precision fp32")
    if step.ranks.enabled:
        raise MnistGanError("a sweep runs in one process: do not start it with torchrun")
    need, free = estimate_bytes(step, runs), available_bytes(step.device)
    if free is not None and need > 0.8 * free:
        raise MnistGanError(f"{runs} runs at once need about {need / 2**30:.1f} GiB (estimate) and "
                            f"{free / 2**30:.1f} GiB is free on {step.device}: sweep fewer runs at once")


class StackedStep:
    """K GanSteps' iteration as one computation; `steps[k]` holds run k's state after `write_back()`."""

    def __init__(self, steps: list[GanStep],
                 own_rng: Sequence[Callable[[], contextlib.AbstractContextManager]] | None = None) -> None:
        """`own_rng[k]()`: a context in which torch's global RNG is run k's (None: all runs draw from the global
        RNG as it is, which only matches single runs when nothing draws from it)."""
        check_stackable([step.config for step in steps])
        self.steps, first = steps, steps[0]
        self.own_rng = list(own_rng) if own_rng is not None else [contextlib.nullcontext] * len(steps)
        self.config, self.loss, self.device, self.precision = first.config, first.loss, first.device, first.precision
        self.G, self.D = StackedNet([s.G for s in steps]), StackedNet([s.D for s in steps])
        self.G_ema = StackedNet([s.G_ema for s in steps]) if first.G_ema is not None else None
        self.optimizers_g = [view_optimizer(s.optimizer_g, self.G.module_views(k)) for k, s in enumerate(steps)]
        self.optimizers_d = [view_optimizer(s.optimizer_d, self.D.module_views(k)) for k, s in enumerate(steps)]
        self.ema_views = [[self.G_ema.params[name].detach()[k] for name in self.G_ema.names]
                          for k in range(len(steps))] if self.G_ema is not None else []
        self.real_target = torch.tensor([s.real_target for s in steps], device=self.device)  # (K,)

    def __len__(self) -> int:
        return len(self.steps)

    def __call__(self, batches: list[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
        """One iteration of every run on its own batch (real (B, C, 28, 28), labels (B,) or None); returns (K, 4):
        each run's d_loss, g_loss, D(x), D(G(z)), as GanStep returns them."""
        real = torch.stack([r for r, _ in batches])  # (K, B, C, 28, 28)
        labels = None if batches[0][1] is None else torch.stack([y for _, y in batches])  # (K, B)

        # (1) Update D: n_critic times on this real batch, against fresh fakes
        train = self.config.train
        for critic in range(train.n_critic):
            z, fake_labels = self._noise(labels)  # (K, B, z_dim); (K, B) or None
            if train.reuse_fakes and critic == train.n_critic - 1:  # G learns from these below: graph kept
                fake = self._generate(z, fake_labels, train=True)
            else:
                with torch.no_grad():
                    fake = self._generate(z, fake_labels, train=not train.fake_in_eval_mode)
            fake_for_d = fake.detach()
            real_logits, fake_logits = self._d_outputs(real, fake_for_d, labels, fake_labels)  # (K, B/m) each
            loss_d = vmap(self.loss.d)(real_logits, fake_logits, self.real_target) \
                + self._penalty(real, fake_for_d, labels)  # (K,)
            self._descend(self.D, self.optimizers_d, loss_d)

        # (2) Update G: through D, whose weights take no gradient here
        if not train.reuse_fakes:
            z, fake_labels = self._noise(labels, for_g=True)
            fake = self._generate(z, fake_labels, train=True)  # (K, B, C, 28, 28)
        with torch.no_grad():
            d_weights = self.D.weights(training=True)
        with autocast(self.device, self.precision):
            (fake_seen,) = self._augment(fake)
            fake_logits_g = self._call_d(d_weights, fake_seen, fake_labels).float()  # (K, B/m)
        loss_g = self._g_loss(fake_logits_g, z, fake)  # (K,)
        self._descend(self.G, self.optimizers_g, loss_g)
        self._update_ema()

        for step in self.steps:
            step.iteration += 1
        score = self.loss.score
        return torch.stack([loss_d.detach(), loss_g.detach(), score(real_logits.detach()).mean(1),
                            score(fake_logits.detach()).mean(1)], dim=1).float()  # (K, 4)

    def _noise(self, labels: torch.Tensor | None, for_g: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each run's z from its own noise generator, and its fakes' labels, as its GanStep draws them (for the G
        update: in --diversity's pairs)."""
        drawn = []
        for k, step in enumerate(self.steps):
            own_labels = None if labels is None else labels[k]
            if for_g:
                drawn.append(step._noise_for_g(own_labels))
            else:
                z = step._noise()
                drawn.append((z, step._fake_labels(z, own_labels)))
        zs, fake_labels = zip(*drawn, strict=True)
        return torch.stack(zs), None if fake_labels[0] is None else torch.stack(fake_labels)

    def _augment(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """--augment-shift's random shifts of each (K, B, C, 28, 28) batch, each run's offsets drawn from its own
        global RNG in the order given (a single run's order), or the batches as they are."""
        shift = self.config.train.augment_shift
        if not shift:
            return images
        offsets: list[list[torch.Tensor]] = []
        for own_rng in self.own_rng:
            with own_rng():
                offsets.append([shift_offsets(batch.shape[1], shift) for batch in images])  # (B, 2) each
        return tuple(random_shift(batch.flatten(0, 1), shift, offsets=torch.cat([run[i] for run in offsets]))
                     .view(batch.shape) for i, batch in enumerate(images))

    def _penalty(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | float:
        """What each run's D loss adds (GanStep._penalty: the loss's own penalty, R1), (K,) or 0.0, through D's
        gradient with respect to its input: each run's images get their own D, so one backward pass over the
        sum gives every run's gradient."""
        train, total = self.config.train, 0.0
        if self.loss.penalty is not None:  # WGAN-GP: each run's mixing weights from its own global RNG
            alphas = []
            for own_rng in self.own_rng:
                with own_rng():
                    alphas.append(torch.rand(train.batch_size, 1, 1, 1))
            if train.gp_weight:
                alpha = torch.stack(alphas).to(real.device, real.dtype)  # (K, B, 1, 1, 1)
                mixed = (alpha * real + (1 - alpha) * fake.detach().float()).requires_grad_(True)
                grad = self._input_gradient(mixed, labels)  # (K, B, C, 28, 28)
                terms = gradient_penalty_terms(grad.flatten(0, 1)).view(len(self.steps), -1)  # (K, B)
                total = total + self._per_run("gp_weight") * terms.mean(1)
        if train.r1_gamma:
            grad = self._input_gradient(real.detach().requires_grad_(True), labels)
            terms = r1_terms(grad.flatten(0, 1)).view(len(self.steps), -1)  # (K, B)
            total = total + self._per_run("r1_gamma") / 2 * terms.mean(1)
        return total

    def _per_run(self, name: str) -> torch.Tensor:
        """Each run's value of a TrainConfig scalar, (K,)."""
        return torch.tensor([getattr(step.config.train, name) for step in self.steps], device=self.device)

    def _input_gradient(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """d(sum of D's logits)/d(images), keeping the graph for the penalty's own backward pass."""
        logits = self._call_d(self.D.weights(True), images, labels)
        (grad,) = torch.autograd.grad(logits.sum(), images, create_graph=True)
        return grad

    def _g_loss(self, fake_logits: torch.Tensor, z: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Each run's G loss (K,): the loss of its logits, of the k D rates most real under --top-k, plus
        --diversity's mode-seeking term over its pairs."""
        train = self.config.train
        if not (train.top_k or train.diversity):
            return vmap(self.loss.g)(fake_logits)
        losses = []
        for k, step in enumerate(self.steps):
            loss = self.loss.g(step._top_k(fake_logits[k]))
            if train.diversity:
                loss = loss + step.config.train.diversity * step._mode_seeking(z[k], fake[k].float())
            losses.append(loss)
        return torch.stack(losses)

    def _generate(self, z: torch.Tensor, fake_labels: torch.Tensor | None, train: bool) -> torch.Tensor:
        self.G.base.train(train)
        with autocast(self.device, self.precision):
            if fake_labels is None:
                return vmap(lambda w, z: functional_call(self.G.base, w, (z,)))(self.G.weights(True), z)
            return vmap(lambda w, z, y: functional_call(self.G.base, w, (z, y)))(self.G.weights(True), z, fake_labels)

    def _call_d(self, weights: dict, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            return vmap(lambda w, x: functional_call(self.D.base, w, (x,)))(weights, images)
        return vmap(lambda w, x, y: functional_call(self.D.base, w, (x, y)))(weights, images, labels)

    def _d_outputs(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None,
                   fake_labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits (K, B/m) for the real and the fake batches: one pass over both (joint_d_batch) or two, each
        with its own power iteration, as a single run's D."""
        with autocast(self.device, self.precision):
            real, fake = self._augment(real, fake)
            if self.config.train.joint_d_batch:
                pair = None if labels is None else torch.cat([labels, fake_labels], dim=1)
                logits = self._call_d(self.D.weights(True), torch.cat([real, fake.to(real.dtype)], dim=1),
                                      pair).float()  # (K, 2B/m)
                half = logits.shape[1] // 2
                return logits[:, :half], logits[:, half:]
            real_logits = self._call_d(self.D.weights(True), real, labels).float()
            return real_logits, self._call_d(self.D.weights(True), fake, fake_labels).float()

    @staticmethod
    def _descend(net: StackedNet, optimizers: list[torch.optim.Optimizer], loss: torch.Tensor) -> None:
        """Each run's gradient of its own loss (the sum's gradient, slice by slice), then each run's update."""
        # contiguous: a batched backward may hand a transposed gradient, and the fused kernels read it flat
        grads = [grad.contiguous() for grad in torch.autograd.grad(loss.sum(), [net.params[n] for n in net.names])]
        for k, optimizer in enumerate(optimizers):
            for parameter, grad in zip(optimizer.param_groups[0]["params"], grads, strict=True):
                parameter.grad = grad[k]
            optimizer.step()

    def _update_ema(self) -> None:
        """G_ema <- decay * G_ema + (1 - decay) * G per run (GanStep's update_ema, warm-up included)."""
        if self.G_ema is None:
            return
        with torch.no_grad():
            for k, step in enumerate(self.steps):
                decay = min(step.config.train.ema_decay, (1 + step.iteration) / (10 + step.iteration))
                torch._foreach_lerp_(self.ema_views[k], self.optimizers_g[k].param_groups[0]["params"], 1 - decay)
            for name in self.G_ema.buffer_names:
                self.G_ema.buffers[name].copy_(self.G.buffers[name])

    def read_buffers(self, k: int) -> None:
        """Take run k's buffers from its GanStep again (re-clustering sets G's cluster shares there)."""
        step = self.steps[k]
        for net, module in ((self.G, step.G), (self.D, step.D), (self.G_ema, step.G_ema)):
            if net is not None:
                net.buffers_from(module, k)

    def write_back(self, runs: list[int] | None = None) -> None:
        """Copy each run's (or `runs`') weights, buffers, last gradients and optimizer state into its GanStep."""
        for k in range(len(self.steps)) if runs is None else runs:
            step = self.steps[k]
            for net, module, optimizer, own in ((self.G, step.G, self.optimizers_g[k], step.optimizer_g),
                                                (self.D, step.D, self.optimizers_d[k], step.optimizer_d)):
                net.copy_into(module, k)
                for parameter, view in zip(module.parameters(), optimizer.param_groups[0]["params"], strict=True):
                    parameter.grad = None if view.grad is None else view.grad.clone()
                own.load_state_dict(copied_state(optimizer.state_dict()))
            if self.G_ema is not None:
                self.G_ema.copy_into(step.G_ema, k)
