"""train(config): the GAN loop. Each iteration is one D step then one G step, as in the tutorial.

The run directory holds config.json, metrics.jsonl, samples/ (grids, progress.gif), losses.png, checkpoints/
(with last.ckpt pointing at the newest) and generator.safetensors.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from mnist_gan import distributed
from mnist_gan.checkpoint import (
    checkpoint_name,
    config_from_checkpoint,
    export_generator,
    list_checkpoints,
    load_latest_checkpoint,
    load_state,
    save_checkpoint,
)
from mnist_gan.config import RunConfig, validate
from mnist_gan.data import ImageDataset, load_dataset, note, random_shift, shift_offsets, to_float
from mnist_gan.diagnose import Monitor, loss_problems, sample_problems
from mnist_gan.errors import MnistGanError
from mnist_gan.files import atomic_write_text, exclusive_lock, remove_stale_temporaries
from mnist_gan.losses import get_loss, make_d_penalty
from mnist_gan.models import build_discriminator, build_generator, sample_z
from mnist_gan.sample import grid_inputs, save_gif, save_grid
from mnist_gan.device import (
    autocast,
    configure_backend,
    configure_threads,
    maybe_compile,
    resolve_device,  # noqa: F401  (re-exported: mnist_gan.training.resolve_device is public)
    resolve_precision,
    to_channels_last,
    training_flops_per_image,
)

GRID_SIZE = 64  # an 8x8 grid from one fixed noise batch, so frames compare


@dataclass
class TrainResult:
    """What a finished (or interrupted) run leaves behind."""

    run_dir: Path
    iteration: int
    checkpoint: Path | None
    interrupted: bool = False
    history: list[dict] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)  # sample-quality figures, with --eval-every


def make_optimizer(module: nn.Module, config: RunConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """SGD (the tutorial: lr 0.0005, momentum 0.9, Nesterov) or Adam, as the config says; lr defaults to --lr."""
    train = config.train
    lr = lr or train.lr
    # The fused kernels update all parameters in one pass (CPU and CUDA); the maths is the same as the loop's.
    fused = next(module.parameters()).device.type in ("cpu", "cuda")
    if train.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=lr, momentum=train.momentum, nesterov=train.nesterov,
                               fused=fused)
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(train.beta1, train.beta2), fused=fused)


def update_ema(G_ema: nn.Module, G: nn.Module, decay: float, iteration: int) -> None:
    """G_ema <- decay * G_ema + (1 - decay) * G, the decay warmed up over the first steps; buffers are copied."""
    decay = min(decay, (1 + iteration) / (10 + iteration))
    with torch.no_grad():
        for average, current in zip(G_ema.parameters(), G.parameters(), strict=True):
            average.lerp_(current, 1 - decay)
        for average, current in zip(G_ema.buffers(), G.buffers(), strict=True):
            average.copy_(current)


def epoch_order(n: int, epoch: int, config: RunConfig) -> torch.Tensor:
    """The image order of one epoch: a function of (seed, epoch) alone, so a resumed run sees the same batches."""
    if not config.data.shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(config.train.seed * 1_000_003 + epoch))


def check_run_dir(run_dir: Path, overwrite: bool) -> bool:
    """Raise MnistGanError unless `run_dir` may be used; return True if it is a run to be replaced."""
    if run_dir.exists() and not run_dir.is_dir():
        raise MnistGanError(f"{run_dir}: exists and is not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise MnistGanError(f"{run_dir}: run directory exists; use --resume {run_dir} to continue it "
                                "or --overwrite to replace it")
        if not (run_dir / "config.json").exists() and not (run_dir / "checkpoints").is_dir():
            raise MnistGanError(f"{run_dir}: --overwrite only replaces run directories (this one has no "
                                "config.json); choose another --out")
        return True
    return False


def prepare_run_dir(out: str | Path | None, config: RunConfig, overwrite: bool) -> Path:
    """Create a fresh run directory, refusing to touch an existing one unless asked to replace it."""
    run_dir = Path(out) if out else Path("runs") / f"{config.preset}-{datetime.now():%Y%m%d-%H%M%S}"
    if check_run_dir(run_dir, overwrite):
        with exclusive_lock(run_dir):  # never delete a run another process is writing
            shutil.rmtree(run_dir)
    try:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
    except OSError as error:
        raise MnistGanError(f"{run_dir}: cannot create run directory ({error.strerror or error})") from None
    return run_dir


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked at the end of each iteration, so a stop never splits a step."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __call__(self, signum, frame) -> None:
        if self.signal_name is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def train(config: RunConfig | None, out: str | Path | None = None, *, resume: bool = False,
          overwrite: bool = False, dataset: ImageDataset | None = None, progress: bool = True) -> TrainResult:
    """Train G and D as `config` says, writing everything into the run directory `out`.

    With resume=True, `out` must be an existing run: its newest complete checkpoint is restored (weights,
    optimizers, RNG, step) and only `config.train.iterations`/`epochs` are taken from `config` (None keeps the
    run's own). A run stopped before its first checkpoint starts again from iteration 0. While training, the
    run directory is locked against other mnist-gan processes.
    """
    with contextlib.ExitStack() as resources:
        return _train(config, out, resources, resume=resume, overwrite=overwrite, dataset=dataset,
                      progress=progress)


def _train(config: RunConfig | None, out: str | Path | None, resources: contextlib.ExitStack, *, resume: bool,
           overwrite: bool, dataset: ImageDataset | None, progress: bool) -> TrainResult:
    state = None
    if resume:
        if out is None or not Path(out).is_dir():
            raise MnistGanError(f"--resume: {out} is not a run directory")
        run_dir = Path(out)
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone writes the run
            resources.enter_context(exclusive_lock(run_dir))
            for directory in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
                remove_stale_temporaries(directory)  # left by a writer that was killed mid-write
        if list_checkpoints(run_dir) or not (run_dir / "config.json").is_file():
            checkpoint_path, state = load_latest_checkpoint(run_dir)
            saved = config_from_checkpoint(state, checkpoint_path)
        else:
            saved = _read_run_config(run_dir)
            note(f"{run_dir} has no checkpoint yet: starting it again from iteration 0")
        if config is not None:
            saved.train.iterations, saved.train.epochs = config.train.iterations, config.train.epochs
        config = saved
    else:
        if config is None:
            raise ValueError("train() needs a config unless it resumes a run")
        run_dir = None  # created once the data has loaded, so a data error leaves nothing behind
        if out is not None:
            check_run_dir(Path(out), overwrite)  # refuse before the (slow) data load
    validate(config)
    get_loss(config)  # an unknown loss or an impossible combination stops here, before any data loads

    ranks, device = distributed.setup(config.train.device, config.train.batch_size)  # one process unless torchrun
    configure_backend(device)
    configure_threads()
    if dataset is None:
        dataset = load_dataset(config.data)
    batch_size = config.train.batch_size
    batches_per_epoch = len(dataset) // batch_size
    if batches_per_epoch == 0:
        raise MnistGanError(f"--batch-size {batch_size} is larger than the data set ({len(dataset)} images)")
    note(f"data: {len(dataset)} images from {dataset.source}")
    all_labels = conditional_labels(dataset, config, device)
    total = config.train.iterations or config.train.epochs * batches_per_epoch
    torch.manual_seed(config.train.seed)
    G, D = build_generator(config.model), build_discriminator(config.model)
    # The precision depends on the model's size; one this device cannot run stops here, before the run directory
    # is touched. (Counting runs one no-grad inference pass: no RNG drawn, no BatchNorm statistics changed.)
    flops = training_flops_per_image(G, D, config.model.z_dim, config.model.conditional)["total"]
    precision = resolve_precision(config.train.precision, device, flops,
                                  compiled=config.train.compile and not ranks.enabled)

    if run_dir is None and not ranks.is_main:  # only rank 0 writes files
        run_dir = Path(out or "runs/not-written")
    elif run_dir is None:
        run_dir = prepare_run_dir(out, config, overwrite)
        resources.enter_context(exclusive_lock(run_dir))
        atomic_write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")

    G, D = to_channels_last(G.to(device)), to_channels_last(D.to(device))
    optimizer_g = make_optimizer(G, config, config.train.lr_g)
    optimizer_d = make_optimizer(D, config, config.train.lr_d)
    loss = get_loss(config)
    d_penalty = make_d_penalty(loss, config.train)  # what D's loss adds: WGAN-GP's penalty, R1
    real_target = 1.0 - config.train.label_smoothing  # one-sided label smoothing

    # Per-image random draws (shifts, WGAN-GP's mixing weights) are made for the global batch and sharded like the
    # noise, so that N processes compute what one process would, rather than N copies of one rank's draws.
    def augment(images: torch.Tensor) -> torch.Tensor:
        if not config.train.augment_shift:
            return images
        offsets = ranks.shard(shift_offsets(batch_size, config.train.augment_shift))
        return random_shift(images, config.train.augment_shift, offsets=offsets)

    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if config.train.ema_decay else None
    G_sample = G_ema or G  # what grids, exports and evaluation see
    noise_rng = torch.Generator().manual_seed(config.train.seed)
    fixed_z, fixed_labels = grid_inputs(GRID_SIZE, config.model, config.train.seed + 1, device)
    start, history = 0, []
    last_checkpoint: Path | None = None  # the newest checkpoint known to be good
    if state is not None:
        load_state(G, state["G"], "generator", checkpoint_path)
        load_state(D, state["D"], "discriminator", checkpoint_path)
        try:
            optimizer_g.load_state_dict(state["optimizer_g"])
            optimizer_d.load_state_dict(state["optimizer_d"])
            noise_rng.set_state(state["rng"]["noise"])
            torch.set_rng_state(state["rng"]["torch"])
        except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as error:
            raise MnistGanError(f"{checkpoint_path}: optimizer or RNG state does not fit this run "
                                f"({type(error).__name__}: {str(error)[:200]})") from None
        if G_ema is not None:
            load_state(G_ema, state.get("G_ema", state["G"]), "generator average", checkpoint_path)
        start, last_checkpoint = state["iteration"], checkpoint_path
        note(f"resuming {run_dir} from {checkpoint_path.name} at iteration {start} of {total}")
        if start >= total:
            note(f"nothing to do: the run already has {start} iterations (pass a larger --iterations)")
    if resume and ranks.is_main:
        history = _truncate_metrics(run_dir / "metrics.jsonl", start)

    images = dataset.images.to(device)  # whole data set, uint8, resident on the device
    if config.train.compile and ranks.enabled:
        note("--compile is not combined with several processes yet; training eagerly")
    G_step, D_step = maybe_compile([G, D], config.train.compile and not ranks.enabled, device)  # same weights
    cuda_graphs = G_step is not G and device.type == "cuda"
    # With torchrun: the G step trains G through DDP (gradients averaged), the D step D; the frozen D of the G
    # step and the no-grad G of the D step run unwrapped, so DDP never waits for gradients that do not come.
    G_train = distributed.wrap(distributed.global_batchnorm(G, device), ranks, device) if ranks.enabled else G_step
    D_train = distributed.wrap(distributed.global_batchnorm(D, device), ranks, device) if ranks.enabled else D_step
    why = " (auto: too small a model for bf16 to pay here)" if config.train.precision == "auto" and \
        precision == "fp32" and resolve_precision("auto", device) == "bf16" else ""
    note(f"device {device}, precision {precision}{why}, {torch.get_num_threads()} CPU threads"
         + (", compiled" if G_step is not G else ""))
    metrics_path = run_dir / "metrics.jsonl" if ranks.is_main else Path(os.devnull)
    metrics_file = resources.enter_context(open(metrics_path, "a", encoding="utf-8"))
    window_values = []  # per iteration since the last log: (loss_d, loss_g, D(x), D(G(z))), on the device
    epoch_records, window_start = [], time.perf_counter()
    stop = StopRequest()

    def checkpoint(iteration: int) -> Path:
        if window_values:  # never save a state that a non-finite loss has already spoilt
            _check_losses(torch.stack(window_values), iteration, last_checkpoint)
        try:
            _check_finite(G, D, iteration)
        except MnistGanError as error:
            raise MnistGanError(f"{error}; {_last_good(last_checkpoint)}") from None
        path = run_dir / "checkpoints" / checkpoint_name(iteration)
        if not ranks.is_main:
            return path
        save_checkpoint(path, {
            "iteration": iteration, "epoch": iteration // batches_per_epoch, "config": config.to_dict(),
            "G": G.state_dict(), "D": D.state_dict(), **({"G_ema": G_ema.state_dict()} if G_ema else {}),
            "optimizer_g": optimizer_g.state_dict(), "optimizer_d": optimizer_d.state_dict(),
            "rng": {"noise": noise_rng.get_state(), "torch": torch.get_rng_state()},
        })
        _point_last(run_dir, path)
        _rotate(run_dir, config.train.keep, path)
        export_generator(G_sample, config.model, run_dir / "generator.safetensors", iteration)
        return path

    monitor, pending_problems = Monitor(), []

    def report(source: str, problems: list, iteration: int) -> None:
        for problem in monitor.update(source, problems):
            bar.write(f"mnist-gan: warning at iteration {iteration}: {problem.message}", file=sys.stderr)
            pending_problems.append(problem.code)

    def grid(iteration: int) -> None:  # conditional: one row per class
        if not ranks.is_main:
            return
        G_sample.eval()
        with torch.no_grad():
            images = G_sample(fixed_z, fixed_labels).float()  # (64, 1, 28, 28); conditional (8C, ...)
        G.train()
        save_grid(images, run_dir / "samples" / f"iter_{iteration:08d}.png", nrow=8)
        if iteration > 0:
            report("samples", sample_problems(images), iteration)

    def log(iteration: int) -> None:
        nonlocal window_start, postfix
        values = ranks.mean(torch.stack(window_values))  # (window, 4), averaged over the processes
        _check_losses(values, iteration, last_checkpoint)
        record = _log_record(values.mean(0), iteration, batches_per_epoch, batch_size * len(values),
                             time.perf_counter() - window_start)
        history.append(record)
        report("losses", loss_problems(history, loss.absolute_score), iteration)
        if pending_problems:
            record["warnings"] = pending_problems[:]
            pending_problems.clear()
        try:  # one whole line per write; a resume drops a half line a kill may leave
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
        except OSError as error:
            raise MnistGanError(f"{metrics_path}: cannot write ({error.strerror or error})") from None
        epoch_records.append(record)
        postfix = _postfix(record)
        bar.set_postfix_str(postfix + _fid_text(evaluations), refresh=False)
        window_values.clear()
        window_start = time.perf_counter()

    evaluator, postfix = None, ""
    evaluations = [r for r in history if "fid" in r]  # sample-quality lines of a resumed run
    history = [r for r in history if "fid" not in r]
    if config.train.eval_every and start < total and ranks.is_main:  # other ranks only wait for rank 0
        from mnist_gan.metrics import Evaluator

        evaluator = Evaluator.for_dataset(dataset, config.data.cache_dir, device=device)  # real features, once

    def evaluate(iteration: int) -> None:
        figures = _evaluate(evaluator, G_sample, config, iteration, batches_per_epoch)
        metrics_file.write(json.dumps(figures) + "\n")
        metrics_file.flush()
        evaluations.append(figures)
        bar.set_postfix_str(postfix + _fid_text(evaluations), refresh=False)

    if start == 0 and total > 0:
        grid(0)

    bar = _progress_bar(total, start, progress and ranks.is_main)
    iteration = start
    deadline = time.perf_counter() + 60 * config.train.max_minutes if config.train.max_minutes else math.inf
    with stop.installed():
        while iteration < total and not _should_stop(stop, deadline, ranks, iteration % config.train.log_every == 0,
                                                     device):
            if cuda_graphs:  # a new step: the graphs' previous outputs (all consumed by now) may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            epoch, index = divmod(iteration, batches_per_epoch)
            if index == 0 or iteration == start:
                order = epoch_order(len(images), epoch, config).to(device)
            batch = ranks.shard(order[index * batch_size:(index + 1) * batch_size])  # this process' part
            real = to_float(images[batch]).contiguous(memory_format=torch.channels_last)  # (B, 1, 28, 28)
            labels = None if all_labels is None else all_labels[batch]  # (B,) conditional: fakes get real's labels

            # (1) Update D: maximise log D(x) + log(1 - D(G(z))), n_critic times on this real batch
            for _ in range(config.train.n_critic):
                z = ranks.shard(sample_z(batch_size, config.model, noise_rng, device))
                with torch.no_grad(), autocast(device, precision):
                    G.train(not config.train.fake_in_eval_mode)
                    fake = G_step(z, labels)  # (B, 1, 28, 28)
                    G.train()
                with autocast(device, precision):  # losses and D's probabilities stay fp32: .float() on the logits
                    real_seen, fake_seen = augment(real), augment(fake)  # D sees both through the same augmentation
                    if config.train.joint_d_batch:
                        pair = None if labels is None else labels.repeat(2)
                        logits = D_train(torch.cat([real_seen, fake_seen.to(real.dtype)]), pair).float()  # (2B,)
                        real_logits, fake_logits = logits[:len(real)], logits[len(real):]
                    else:
                        real_logits = D_train(real_seen, labels).float()
                        fake_logits = D_train(fake_seen, labels).float()
                # WGAN-GP's mixing weights: drawn for the global batch and sharded, like augment's shifts
                alpha = ranks.shard(torch.rand(batch_size, 1, 1, 1)) if loss.penalty is not None else None
                loss_d = (loss.d(real_logits, fake_logits, real_target)
                          + d_penalty(D, real, fake.float(), labels, alpha))
                optimizer_d.zero_grad(set_to_none=True)
                loss_d.backward()
                optimizer_d.step()

            # (2) Update G: through a frozen D, labels "real"
            z = ranks.shard(sample_z(batch_size, config.model, noise_rng, device))
            D.requires_grad_(False)
            with autocast(device, precision):
                fake_logits_g = D_step(augment(G_train(z, labels)), labels).float()  # (B,)
            loss_g = loss.g(fake_logits_g)
            optimizer_g.zero_grad(set_to_none=True)
            loss_g.backward()
            optimizer_g.step()
            D.requires_grad_(True)
            if G_ema is not None:
                update_ema(G_ema, G, config.train.ema_decay, iteration)

            iteration += 1
            window_values.append(torch.stack([loss_d.detach(), loss_g.detach(),
                                              loss.score(real_logits.detach()).mean(),
                                              loss.score(fake_logits.detach()).mean()]).float())

            if iteration % config.train.log_every == 0 or iteration == total:
                log(iteration)
            if evaluator is not None and iteration % config.train.eval_every == 0:
                evaluate(iteration)
            bar.update(1)
            if config.train.sample_every and iteration % config.train.sample_every == 0:
                grid(iteration)
            if config.train.checkpoint_every and iteration % config.train.checkpoint_every == 0:
                last_checkpoint = checkpoint(iteration)
            if iteration % batches_per_epoch == 0 and epoch_records:
                bar.write(_epoch_summary(iteration // batches_per_epoch, epoch_records), file=sys.stderr)
                epoch_records = []
    if window_values:  # stopped between log steps (signal or --max-minutes)
        log(iteration)
    if evaluator is not None and iteration > start and stop.signal_name is None and \
            (not evaluations or evaluations[-1]["iteration"] != iteration):
        evaluate(iteration)  # and at the end
    bar.close()

    interrupted = stop.signal_name is not None
    if last_checkpoint is None or last_checkpoint.name != checkpoint_name(iteration):
        last_checkpoint = checkpoint(iteration)
    if not (config.train.sample_every and iteration % config.train.sample_every == 0) and iteration > start:
        grid(iteration)
    if ranks.is_main:
        save_gif(sorted((run_dir / "samples").glob("iter_*.png")), run_dir / "samples" / "progress.gif")
    if history and ranks.is_main:
        plot_losses(history, run_dir / "losses.png", evaluations)
    if interrupted:
        note(f"stopped by {stop.signal_name} at iteration {iteration}; checkpoint {last_checkpoint}. "
             f"Continue with: mnist-gan train --resume {run_dir}")
    else:
        note(f"done: {iteration} iterations; run directory {run_dir}")
    return TrainResult(run_dir, iteration, last_checkpoint, interrupted, history, evaluations)


def _should_stop(stop: StopRequest, deadline: float, ranks, at_log_step: bool, device: torch.device) -> bool:
    """A signal or --max-minutes ends the run; with several processes they agree at log steps, so all stop at
    the same iteration."""
    wanted = stop.signal_name is not None or time.perf_counter() >= deadline
    if not ranks.enabled:
        return wanted
    return at_log_step and ranks.any(wanted, device)


def conditional_labels(dataset: ImageDataset, config: RunConfig, device: torch.device) -> torch.Tensor | None:
    """The data set's labels on the training device for a conditional run, else None."""
    if not config.model.conditional:
        return None
    if dataset.labels is None:
        raise MnistGanError(f"--conditional needs labelled images, and {dataset.source} has no labels "
                            "(use an IDX directory or .npz with labels, or a folder with one sub-folder per class)")
    labels = dataset.labels
    if int(labels.min()) < 0 or int(labels.max()) >= config.model.num_classes:
        raise MnistGanError(f"--conditional: labels range over {int(labels.min())}..{int(labels.max())}, "
                            f"outside 0..{config.model.num_classes - 1}; set --num-classes")
    return labels.to(device)


def _log_record(means: torch.Tensor, iteration: int, batches_per_epoch: int, images: int, seconds: float) -> dict:
    d_loss, g_loss, d_real, d_fake = means.tolist()
    return {"iteration": iteration, "epoch": (iteration - 1) // batches_per_epoch + 1,
            "d_loss": d_loss, "g_loss": g_loss, "d_x": d_real, "d_g_z": d_fake,
            "images_per_s": images / max(seconds, 1e-9), "time": time.time()}


def _postfix(record: dict) -> str:
    return (f"ep {record['epoch']} d_loss {record['d_loss']:.4f} g_loss {record['g_loss']:.4f} "
            f"D(x) {record['d_x']:.3f} D(G(z)) {record['d_g_z']:.3f}")


def _fid_text(evaluations: list[dict]) -> str:
    return f" FID {evaluations[-1]['fid']:.2f}" if evaluations else ""


def _evaluate(evaluator, G: nn.Module, config: RunConfig, iteration: int, batches_per_epoch: int) -> dict:
    """Score TRAINING_EVAL_SAMPLES samples of G (same noise every time, so the figures compare)."""
    from mnist_gan.metrics import TRAINING_EVAL_SAMPLES, TRAINING_KID_SUBSETS

    result = evaluator.evaluate_generator(G, config.model, TRAINING_EVAL_SAMPLES, seed=config.train.seed,
                                          kid_subsets=TRAINING_KID_SUBSETS)
    keep = ("fid", "kid", "kid_std", "classifier_score", "confidence", "classes_covered", "class_kl", "precision",
            "recall", "memorization", "class_histogram")
    return {"iteration": iteration, "epoch": (iteration - 1) // batches_per_epoch + 1,
            **{key: result[key] for key in keep}, "eval_n": result["n"], "eval_seconds": result["seconds"],
            "time": time.time()}


def _epoch_summary(epoch: int, records: list[dict]) -> str:
    mean = {k: sum(r[k] for r in records) / len(records) for k in ("d_loss", "g_loss", "d_x", "d_g_z", "images_per_s")}
    return (f"epoch {epoch}: d_loss {mean['d_loss']:.4f}  g_loss {mean['g_loss']:.4f}  D(x) {mean['d_x']:.3f}  "
            f"D(G(z)) {mean['d_g_z']:.3f}  {mean['images_per_s']:.0f} img/s  (through iteration {records[-1]['iteration']})")


def _progress_bar(total: int, start: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, unit="it", dynamic_ncols=True, file=sys.stderr)


def _last_good(checkpoint: Path | None) -> str:
    return f"the last good checkpoint, {checkpoint}, is kept" if checkpoint else "no checkpoint was written"


def _check_losses(values: torch.Tensor, iteration: int, last_checkpoint: Path | None) -> None:
    """Raise if any loss in `values` (window, 4), the iterations up to `iteration`, is NaN or infinite."""
    finite = torch.isfinite(values[:, :2]).all(1)  # (window,)
    if bool(finite.all()):
        return
    first = int((~finite).nonzero()[0])
    loss_d, loss_g = values[first, :2].tolist()
    raise MnistGanError(f"training diverged: non-finite loss at iteration {iteration - len(values) + first + 1} "
                        f"(d_loss={loss_d}, g_loss={loss_g}); stopped without saving; "
                        f"{_last_good(last_checkpoint)}; try a lower --lr")


def _check_finite(G: nn.Module, D: nn.Module, iteration: int) -> None:
    for name, module in (("G", G), ("D", D)):
        for tensor in module.state_dict().values():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise MnistGanError(f"training diverged: {name} has non-finite weights at iteration {iteration}; "
                                    "stopped without saving; try a lower --lr")


def _point_last(run_dir: Path, newest: Path) -> None:
    """Make run_dir/last.ckpt a relative link to the newest checkpoint, replaced atomically."""
    link, tmp = run_dir / "last.ckpt", run_dir / ".last.ckpt.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(newest.relative_to(run_dir))
        tmp.replace(link)
    except OSError:  # file systems without symlinks: --resume and generate still find checkpoints/
        tmp.unlink(missing_ok=True)


def _rotate(run_dir: Path, keep: int, newest: Path) -> None:
    for old in list_checkpoints(run_dir)[:-keep]:
        if old != newest:
            old.unlink(missing_ok=True)


def _read_run_config(run_dir: Path) -> RunConfig:
    """The config.json of a run directory, as a RunConfig."""
    path = run_dir / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise MnistGanError(f"{path}: cannot read the run's configuration ({error})") from None
    if not isinstance(raw, dict):
        raise MnistGanError(f"{path}: not a run configuration")
    try:
        return RunConfig.from_dict(raw)
    except (TypeError, ValueError) as error:
        raise MnistGanError(f"{path}: invalid configuration ({error})") from None


def _truncate_metrics(path: Path, iteration: int) -> list[dict]:
    """Drop logged lines past the checkpoint being resumed (and any half-written last line)."""
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            step = record.get("iteration") if isinstance(record, dict) else None
            if isinstance(step, int) and step <= iteration and (not records or step >= records[-1]["iteration"]):
                records.append(record)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return records


def plot_losses(history: list[dict], path: str | Path, evaluations: list[dict] | None = None) -> Path:
    """Plot d_loss and g_loss (and D's outputs, and FID when evaluated) over iterations to a PNG."""
    import io

    from matplotlib.figure import Figure  # not pyplot: a notebook's backend and open figures stay as they are

    from mnist_gan.files import atomic_write_bytes

    steps = [r["iteration"] for r in history]
    fig = Figure(figsize=(16.5 if evaluations else 11, 4))
    axes = fig.subplots(1, 3 if evaluations else 2)
    ax_loss, ax_prob = axes[:2]
    ax_loss.plot(steps, [r["d_loss"] for r in history], label="d_loss")
    ax_loss.plot(steps, [r["g_loss"] for r in history], label="g_loss")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_prob.plot(steps, [r["d_x"] for r in history], label="D(x)")
    ax_prob.plot(steps, [r["d_g_z"] for r in history], label="D(G(z))")
    ax_prob.set_xlabel("iteration")
    ax_prob.set_ylim(0, 1)
    ax_prob.legend()
    ax_prob.grid(alpha=0.3)
    if evaluations:
        ax_fid = axes[2]
        ax_fid.plot([r["iteration"] for r in evaluations], [r["fid"] for r in evaluations], "o-", label="FID")
        ax_fid.set_xlabel("iteration")
        ax_fid.set_ylabel("FID (classifier features)")
        fids = [r["fid"] for r in evaluations]
        if min(fids) > 0 and max(fids) > 10 * min(fids):  # FID falls by orders of magnitude as G learns
            ax_fid.set_yscale("log")
        ax_fid.legend()
        ax_fid.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
