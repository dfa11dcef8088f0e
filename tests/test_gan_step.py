"""The training step on its own (GanStep) and the run's record (Recorder, NullRecorder), used directly."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from mnist_gan.data.images import ImageDataset, to_float
from mnist_gan.errors import MnistGanError
from mnist_gan.gan.step import GanStep
from mnist_gan.settings.config import preset
from mnist_gan.training.recorder import EVAL, TRAIN, NullRecorder, Recorder, record_kind


def tiny_config(name: str = "recommended", **train):
    """A preset at width 8 and batch 8 on the CPU: a step takes milliseconds."""
    config = preset(name)
    config.model.width = 8
    config.train.batch_size, config.train.device, config.train.log_every = 8, "cpu", 2
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


@pytest.fixture
def real(mnist_5k) -> torch.Tensor:
    return to_float(mnist_5k.images[:8])  # (8, 1, 28, 28) in [-1, 1]


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------------- GanStep

@pytest.mark.parametrize("name, train, model", [
    ("recommended", {}, {}),
    ("dcgan", {"loss": "wgan-gp", "n_critic": 2}, {"d_batchnorm": False}),
    ("dcgan", {"augment_shift": 2, "r1_gamma": 1.0}, {}),
    ("seed", {}, {}),
])
def test_one_step_trains_both_networks_and_reports_four_finite_figures(real, name, train, model):
    config = tiny_config(name, **train)
    for key, value in model.items():
        setattr(config.model, key, value)
    step = GanStep(config)
    G_before, D_before = _weights(step.G), _weights(step.D)
    updates = []
    for optimizer in (step.optimizer_d, step.optimizer_g):
        optimizer.register_step_post_hook(lambda optimizer, args, kwargs: updates.append(optimizer))
    stats = step(real)
    assert stats.shape == (4,) and stats.dtype == torch.float32 and torch.isfinite(stats).all()
    d_loss, g_loss, d_real, d_fake = stats.tolist()
    assert 0 <= d_real <= 1 and 0 <= d_fake <= 1  # D(x), D(G(z)) on the loss's own [0, 1] scale
    for net, before in (("G", G_before), ("D", D_before)):
        after = getattr(step, net).state_dict()
        assert any(not torch.equal(after[k], before[k]) for k in before if before[k].is_floating_point()), net
    assert step.iteration == 1
    assert (step.G_ema is not None) == bool(config.train.ema_decay)
    # (1) n_critic D updates, then (2) one G update
    assert updates == [step.optimizer_d] * config.train.n_critic + [step.optimizer_g]


def test_the_step_holds_two_networks_and_their_average(real):
    """No handles beside G, D and G_ema: eagerly in one process both updates call the networks themselves."""
    step = GanStep(tiny_config())
    networks = {name for name, value in vars(step).items() if isinstance(value, torch.nn.Module)}
    assert networks == {"G", "D", "G_ema"}
    assert step.wrappers.updating("D") == (step.G, step.D) == step.wrappers.updating("G")
    assert step.G_sample is step.G_ema and not step.compiled
    called = []
    for name in ("G", "D"):
        getattr(step, name).register_forward_hook(lambda module, inputs, output, name=name: called.append(name))
    step(real)
    assert called == ["G", "D"] * step.config.train.n_critic + ["G", "D"]  # one D pass on reals and fakes
    assert all(p.requires_grad for p in step.D.parameters())  # D frozen for the G update only
    plain = GanStep(tiny_config(ema_decay=0.0))
    assert plain.G_ema is None and plain.G_sample is plain.G


def test_under_compile_both_updates_call_the_wrappers_and_the_state_keeps_its_keys(real, monkeypatch):
    """--compile's wrappers (spies here, compiling takes a minute) run every forward pass but the penalty's."""
    from mnist_gan.gan import wrappers

    called = []

    class Spy(torch.nn.Module):
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, *inputs):
            called.append(self.module.__class__.__name__)
            return self.module(*inputs)

    monkeypatch.setattr(wrappers, "maybe_compile",
                        lambda modules, enabled, device: [Spy(m) for m in modules] if enabled else modules)
    step = GanStep(tiny_config("dcgan", compile=True, r1_gamma=1.0))
    eager = GanStep(tiny_config("dcgan", r1_gamma=1.0))
    assert step.compiled and not eager.compiled
    assert torch.equal(step(real), eager(real))  # the same maths through the wrappers
    G, D = step.G.__class__.__name__, step.D.__class__.__name__
    assert called == [G, D, D] + [G, D]  # (1) G's fakes, D on reals and on fakes; (2) D(G(z))
    assert step.state_dict()["G"].keys() == eager.state_dict()["G"].keys()


def test_state_dict_round_trip_gives_an_identical_next_step(real):
    config = tiny_config(augment_shift=2)  # draws from torch's global RNG too, which the state carries
    first = GanStep(config)
    first(real)
    saved = copy.deepcopy(first.state_dict())  # the state tensors are live: copy before stepping on
    expected = first(real)
    torch.manual_seed(12345)  # disturb the global RNG: the state must restore it

    second = GanStep(config)
    second.load_state_dict(saved)
    assert second.iteration == 1
    assert torch.equal(second(real), expected)
    for net in ("G", "D", "G_ema"):
        for key, value in getattr(first, net).state_dict().items():
            assert torch.equal(value, getattr(second, net).state_dict()[key]), f"{net}.{key}"


def test_a_state_that_does_not_fit_is_one_clear_error(real):
    saved = copy.deepcopy(GanStep(tiny_config()).state_dict())
    with pytest.raises(MnistGanError, match="run.ckpt: generator weights do not fit"):
        GanStep(tiny_config("seed")).load_state_dict(saved, "run.ckpt")


def test_check_finite_names_the_network():
    step = GanStep(tiny_config())
    step.check_finite(1)
    with torch.no_grad():
        next(step.D.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(MnistGanError, match="D has non-finite weights at iteration 3"):
        step.check_finite(3)


# --------------------------------------------------------------------------------------------- Recorder

class StubEvaluator:
    """Stands in for metrics.Evaluator: the figures an evaluation line keeps, without training a classifier."""

    classifier = None  # the class probe then reads k-means clusters

    def evaluate_generator(self, G, model_config, n, seed, kid_subsets):
        keys = ("fid", "kid", "kid_std", "classifier_score", "confidence", "classes_covered", "class_kl",
                "precision", "recall", "density", "coverage", "memorization")
        return {**dict.fromkeys(keys, 1.0), "class_histogram": [0.1] * 10, "n": n, "seconds": 0.0}


def _record_four_iterations(recorder_class, run_dir, mnist_5k, real, monkeypatch):
    """Steps 1-4 of a tiny run through `recorder_class`: logs at 2 and 4, evaluations at 3 and at the end."""
    from mnist_gan.evaluation.evaluator import Evaluator

    monkeypatch.setattr(Evaluator, "for_dataset", classmethod(lambda cls, *args, **kwargs: StubEvaluator()))
    step = GanStep(tiny_config(sample_every=2, eval_every=3))
    dataset = ImageDataset(mnist_5k.images[:64], None, "mnist", "test digits")
    with recorder_class(step, run_dir, dataset, start=0, total=4, progress=False) as recorder:
        for iteration in range(1, 5):
            recorder.after_step(iteration, step(real))
        recorder.end(4, interrupted=False)
        recorder.finish(4)
    return recorder


def test_recorder_writes_a_kind_on_every_line(tmp_path, mnist_5k, real, monkeypatch):
    (tmp_path / "samples").mkdir()
    recorder = _record_four_iterations(Recorder, tmp_path, mnist_5k, real, monkeypatch)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["iteration"]) for r in lines] == [(TRAIN, 2), (EVAL, 3), (TRAIN, 4), (EVAL, 4)]
    assert all(math.isfinite(r["d_loss"]) for r in lines if r["kind"] == TRAIN)
    assert [r["iteration"] for r in recorder.history] == [2, 4] and len(recorder.evaluations) == 2
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == \
        ["iter_00000000.png", "iter_00000002.png", "iter_00000004.png", "progress.gif"]
    assert (tmp_path / "losses.png").stat().st_size > 0


def test_null_recorder_writes_nothing_but_still_checks_the_losses(tmp_path, mnist_5k, real, monkeypatch):
    recorder = _record_four_iterations(NullRecorder, tmp_path, mnist_5k, real, monkeypatch)
    assert list(tmp_path.iterdir()) == [] and recorder.history == [] and recorder.evaluations == []
    recorder.after_step(5, torch.tensor([float("nan"), 1.0, 0.5, 0.5]))
    with pytest.raises(MnistGanError, match="non-finite loss at iteration 5"):
        recorder.check_losses(5)


def test_record_kind_reads_lines_written_before_the_field():
    assert record_kind({"iteration": 10, "d_loss": 0.5}) == TRAIN
    assert record_kind({"iteration": 10, "fid": 3.0}) == EVAL
    assert record_kind({"kind": EVAL, "iteration": 10}) == EVAL
