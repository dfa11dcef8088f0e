"""`mnist-gan sweep`: K runs stepped as one batched computation compute what K single runs compute, write
ordinary run directories, resume exactly, and mark a diverged run while the others go on."""

from __future__ import annotations

import contextlib
import json
import sys

import pytest
import torch
from helpers import one_error_line, tiny_config

from mnist_gan.errors import MnistGanError
from mnist_gan.gan import stacked
from mnist_gan.gan.stacked import StackedStep
from mnist_gan.gan.step import GanStep
from mnist_gan.training import sweep as sweep_loop
from mnist_gan.training.loop import resume, train
from mnist_gan.training.sweep import resume_runs_together, train_runs_together


def _config(name: str = "recommended", seed: int = 0, **train):
    config = tiny_config(name, {"self_condition": 5} if name == "recommended" else None,
                         precision="fp32", seed=seed, **train)
    return config


def _max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                            strict=True) if x.is_floating_point())


class _OwnRng:
    """One run's global RNG state, swapped in around what the stack draws for that run (as the sweep does)."""

    def __init__(self) -> None:
        self.state = torch.get_rng_state()

    @contextlib.contextmanager
    def __call__(self):
        torch.set_rng_state(self.state)
        try:
            yield
        finally:
            self.state = torch.get_rng_state()


def _single_and_stacked(name: str, real: torch.Tensor, iterations: int, batches_per_epoch: int | None = None,
                        per_run: list[dict] | None = None, **train):
    """Three seeds trained alone, and the same three as one stack, on the same batches; run k with per_run[k]'s
    settings too."""
    per_run = per_run or [{}] * 3
    labels = torch.arange(len(real)) % 5 if name == "recommended" else None
    singles, single_stats = [], []
    for seed in range(3):  # each built and trained in turn, so each draws from its own seed's global RNG
        singles.append(GanStep(_config(name, seed, **train, **per_run[seed]), batches_per_epoch=batches_per_epoch))
        single_stats.append([singles[-1](real, labels) for _ in range(iterations)])
    steps, own_rng = [], []
    for seed in range(3):  # each run's global RNG as its GanStep left it, as a single run's
        steps.append(GanStep(_config(name, seed, **train, **per_run[seed]), batches_per_epoch=batches_per_epoch))
        own_rng.append(_OwnRng())
    together = StackedStep(steps, own_rng)
    stacked_stats = [together([(real, labels)] * 3) for _ in range(iterations)]  # (3, 4) each
    together.write_back()
    return singles, single_stats, steps, stacked_stats


def _assert_matches(singles, single_stats, steps, stacked_stats, bound: float) -> None:
    """Each stacked run against its single run: the first iteration's figures to float32 rounding, every
    iteration's to 2e-3, G's and D's weights within `bound`."""
    for k in range(len(singles)):
        assert torch.allclose(single_stats[k][0], stacked_stats[0][k], atol=1e-5)
        for i in range(len(stacked_stats)):
            assert torch.allclose(single_stats[k][i], stacked_stats[i][k], atol=2e-3)
        assert _max_difference(singles[k].G, steps[k].G) <= bound
        assert _max_difference(singles[k].D, steps[k].D) <= bound


def test_a_stack_of_sgd_runs_matches_single_runs_to_rounding(real):
    """dcgan (BatchNorm in G and D) with SGD: the batched kernels round differently, and nothing amplifies it:
    1e-5 after 3 iterations."""
    singles, single_stats, steps, stacked_stats = _single_and_stacked("dcgan", real, 3, optimizer="sgd", lr=0.01)
    for k in range(3):
        assert _max_difference(singles[k].G, steps[k].G) < 1e-5
        assert _max_difference(singles[k].D, steps[k].D) < 1e-5
        for i in range(3):
            assert torch.allclose(single_stats[k][i], stacked_stats[i][k], atol=1e-5)
    assert _max_difference(singles[0].G, steps[1].G) > 1e-2  # the seeds' runs differ: each run is its own


def test_a_stack_of_the_default_preset_matches_single_runs(real):
    """recommended (Adam, spectral norm, EMA, self-condition, pack 2): the first iteration's figures agree to
    float32 rounding; after that Adam's first steps (lr * sign of the gradient) turn a rounding difference in a
    near-zero gradient into a step of up to 2 lr on that weight, so the bound is in units of lr."""
    iterations, lr = 4, 4e-4
    singles, single_stats, steps, stacked_stats = _single_and_stacked("recommended", real, iterations)
    labels = torch.arange(len(real)) % 5
    _assert_matches(singles, single_stats, steps, stacked_stats, bound=2 * iterations * lr)
    for k in range(3):
        assert _max_difference(singles[k].G_ema, steps[k].G_ema) <= 2 * iterations * lr
        assert steps[k].iteration == iterations
        state = steps[k].optimizer_d.state_dict()["state"][0]
        assert float(state["step"]) == iterations  # the optimizer state came back with the weights
        # the run's own spectrally normalised D still runs (the stack's plain copy left its class alone)
        assert steps[k].D(real, labels).shape == singles[k].D(real, labels).shape == (len(real) // 2,)
    assert _max_difference(singles[0].G, steps[1].G) > 1e-2


@pytest.mark.parametrize("train", [
    {"augment_shift": 2},  # offsets from each run's own global RNG
    {"r1_gamma": 1.0},  # a double backward through the batched D
    {"loss": "wgan-gp"},  # the same, at mixing weights from each run's global RNG
    {"top_k": True, "top_k_min": 0.5},
    {"diversity": 1.0},  # pairs of z, and a term over each run's own pairs
    {"reuse_fakes": True},  # G learns from the D update's fakes
    {"per_run": [{"r1_gamma": 0.5}, {"r1_gamma": 2.0}, {"r1_gamma": 8.0}]},  # a weight per run
    {"per_run": [{"diversity": 0.5, "top_k": True, "top_k_min": 0.25}, {"diversity": 2.0, "top_k": True},
                 {"diversity": 4.0, "top_k": True, "top_k_min": 0.9}]},
], ids=["augment_shift", "r1_gamma", "wgan-gp", "top_k", "diversity", "reuse_fakes", "r1_gamma per run",
        "diversity per run"])
def test_the_stack_carries_out_augmentation_penalties_top_k_and_diversity_as_single_runs_do(real, train):
    """Each setting changes the figures, and a stack computes them as the three single runs do: the first
    iteration's to float32 rounding, the weights after four within the Adam bound above (one epoch per iteration,
    so --top-k's k falls from the second)."""
    iterations = 4
    singles, single_stats, steps, stacked_stats = _single_and_stacked("recommended", real, iterations,
                                                                      batches_per_epoch=1, **train)
    plain = GanStep(_config("recommended", 0), batches_per_epoch=1)
    plain_stats = torch.stack([plain(real, torch.arange(len(real)) % 5) for _ in range(iterations)])
    assert (torch.stack(single_stats[0]) - plain_stats).abs().max() > 1e-3  # the setting is on: it moves them
    _assert_matches(singles, single_stats, steps, stacked_stats, bound=2 * iterations * singles[0].config.train.lr)


def test_settings_that_change_the_code_path_are_refused_naming_them():
    with pytest.raises(MnistGanError, match="these settings differ: model.width, train.loss"):
        wider = _config()
        wider.model.width = 16
        stacked.check_stackable([_config(), _config(loss="hinge"), wider])
    with pytest.raises(MnistGanError, match="does not support compile=True"):
        stacked.check_stackable([_config(compile=True)])
    with pytest.raises(MnistGanError, match=r"^r1_gamma, diversity: 0 \(off\) in some runs"):
        stacked.check_stackable([_config(r1_gamma=1.0), _config(diversity=1.0)])
    stacked.check_stackable([_config(r1_gamma=1.0, seed=0), _config(r1_gamma=2.0, seed=1)])  # both on: one stack


def _runs(small_npz, seeds=(0, 1), **train):
    configs = []
    for seed in seeds:
        config = _config(seed=seed, iterations=8, checkpoint_every=4, sample_every=4, **train)
        config.data.data, config.data.limit = str(small_npz), 128
        configs.append(config)
    return configs


def test_each_run_of_a_sweep_is_an_ordinary_run(tmp_path, small_npz):
    """With shifts drawn from each run's own global RNG and D-feature re-clustering at iteration 4, a run of the
    sweep logs what the same run alone logs; without the shifts it would log something else."""
    configs = _runs(small_npz, augment_shift=2, recluster_every=4)
    outcomes = train_runs_together(configs, [tmp_path / "a", tmp_path / "b"])
    assert [(o.status, o.iterations) for o in outcomes] == [("finished", 8), ("finished", 8)]
    alone = train(configs[1], tmp_path / "alone", progress=False)
    together = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in together] == [r["iteration"] for r in alone.history] == [2, 4, 6, 8]
    for mine, theirs in zip(together, alone.history, strict=True):
        assert mine["d_loss"] == pytest.approx(theirs["d_loss"], abs=5e-3)
        assert mine["g_loss"] == pytest.approx(theirs["g_loss"], abs=5e-3)
    unshifted = train(_runs(small_npz, recluster_every=4)[1], tmp_path / "unshifted", progress=False).history
    assert max(abs(a["d_loss"] - b["d_loss"]) for a, b in zip(unshifted, alone.history, strict=True)) > 2e-2
    for name in ("iter_00000004.ckpt", "iter_00000008.ckpt"):
        assert (tmp_path / "b" / "checkpoints" / name).is_file()
    assert (tmp_path / "b" / "generator.safetensors").is_file()
    state = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)
    assert state["iteration"] == 8 and state["config"]["train"]["seed"] == 1
    more = resume(tmp_path / "b", iterations=10, progress=False)  # `train --resume RUN` works on it unchanged
    assert more.iteration == 10


def test_a_sweep_trains_in_fp32_where_auto_would_pick_bf16(tmp_path, small_npz, monkeypatch):
    from mnist_gan.gan import device as hardware

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(hardware, "CPU_BF16_MIN_FLOPS_PER_STEP", 0)  # every step "large enough" for bf16
    configs = _runs(small_npz)
    for config in configs:
        config.train.precision, config.train.iterations = "auto", 2
    assert GanStep(configs[0]).precision == "bf16", "alone, this run would train in bf16"
    outcomes = train_runs_together(configs, [tmp_path / "a", tmp_path / "b"])
    assert [(o.status, o.iterations) for o in outcomes] == [("finished", 2), ("finished", 2)]
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["precision"] == "fp32"
    assert configs[0].train.precision == "auto", "the caller's config is left as it was"
    for config in configs:
        config.train.precision = "bf16"
    with pytest.raises(MnistGanError, match="a sweep trains in fp32"):
        train_runs_together(configs, [tmp_path / "c", tmp_path / "d"])
    assert not (tmp_path / "c").exists()


def test_a_sweep_resumes_exactly_after_a_stop(tmp_path, small_npz, monkeypatch):
    """Bit for bit, each run's global RNG (its shifts' source) included."""
    train_runs_together(_runs(small_npz, augment_shift=2), [tmp_path / "whole0", tmp_path / "whole1"])
    over = sweep_loop._over
    def signalled_at_4(member, stop, started):  # as if SIGTERM came during iteration 4
        if member.iteration >= 4:
            stop.signal_name = "SIGTERM"
        return over(member, stop, started)

    monkeypatch.setattr(sweep_loop, "_over", signalled_at_4)
    first = train_runs_together(_runs(small_npz, augment_shift=2), [tmp_path / "cut0", tmp_path / "cut1"])
    assert [(o.status, o.iterations) for o in first] == [("interrupted", 4)] * 2
    monkeypatch.setattr(sweep_loop, "_over", over)
    rest = resume_runs_together([tmp_path / "cut0", tmp_path / "cut1"])
    assert [(o.status, o.iterations) for o in rest] == [("finished", 8)] * 2
    for k in range(2):
        whole = torch.load(tmp_path / f"whole{k}" / "last.ckpt", weights_only=True)
        cut = torch.load(tmp_path / f"cut{k}" / "last.ckpt", weights_only=True)
        for part in ("G", "D", "G_ema"):
            for key, tensor in whole[part].items():
                assert torch.equal(tensor, cut[part][key]), (k, part, key)


def test_a_diverging_run_is_marked_and_the_others_go_on(tmp_path, small_npz):
    configs = _runs(small_npz)
    configs[0].train.lr_d = 1e38  # D's weights overflow within a few steps
    outcomes = train_runs_together(configs, [tmp_path / "bad", tmp_path / "good"])
    assert outcomes[0].status == "diverged" and outcomes[0].iterations < 8
    assert (outcomes[1].status, outcomes[1].iterations) == ("finished", 8)
    assert torch.load(tmp_path / "good" / "last.ckpt", weights_only=True)["iteration"] == 8


def test_a_sweep_larger_than_memory_is_refused_before_training(tmp_path, small_npz, monkeypatch):
    monkeypatch.setattr(stacked, "available_bytes", lambda device: 2**20)
    with pytest.raises(MnistGanError, match=r"2 runs at once need about .* GiB \(estimate\)"):
        train_runs_together(_runs(small_npz), [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "a").exists()


def test_on_evaluation_stops_one_run_and_the_outcomes_carry_the_figures(tmp_path, small_npz, monkeypatch):
    """Evaluations stand in for the evaluator (its classifier takes a minute to train): the figure is the
    iteration times the seed + 1, so each run's values are its own."""
    from types import SimpleNamespace

    from mnist_gan.evaluation import evaluator
    from mnist_gan.training import recorder

    monkeypatch.setattr(evaluator.Evaluator, "for_dataset", staticmethod(lambda *a, **k: SimpleNamespace(
        classifier=None)))
    monkeypatch.setattr(recorder, "_eval_record", lambda _, step, iteration, per_epoch: {
        "kind": "eval", "iteration": iteration, "epoch": 1, "fid": float(iteration * (step.config.train.seed + 1))})
    calls = []

    def on_evaluation(index, iteration, figures):
        calls.append((index, iteration, figures["fid"]))
        return index == 0 and iteration == 4  # stop run 0 at its second evaluation

    outcomes = train_runs_together(_runs(small_npz, eval_every=2), [tmp_path / "a", tmp_path / "b"],
                                   on_evaluation=on_evaluation)
    assert [(o.status, o.iterations) for o in outcomes] == [("stopped", 4), ("finished", 8)]
    assert outcomes[1].evaluations == [{"iteration": i, "fid": 2.0 * i} for i in (2, 4, 6, 8)]
    assert calls == [(0, 2, 2.0), (1, 2, 4.0), (0, 4, 4.0), (1, 4, 8.0), (1, 6, 12.0), (1, 8, 16.0)]
    assert torch.load(tmp_path / "a" / "last.ckpt", weights_only=True)["iteration"] == 4


def test_the_sweep_command_writes_the_index_and_results(tmp_path, small_npz, cli):
    out = tmp_path / "sweep"
    common = ["--data", small_npz, "--limit", 64, "--batch-size", 8, "--width", 8, "--self-condition", 5,
              "--iterations", 2, "--log-every", 1, "--precision", "fp32", "--no-progress"]
    status, stdout, err = cli(["sweep", "--seeds", "0-1", "--lr-d", "4e-4,8e-4", "--out", out, *common])
    assert status == 0, err
    index = json.loads((out / "sweep.json").read_text())
    assert [(r["name"], r["seed"], r["status"]) for r in index["runs"]] == [
        ("s00-seed0", 0, "finished"), ("s00-seed1", 1, "finished"), ("s01-seed0", 0, "finished"),
        ("s01-seed1", 1, "finished")]
    assert [s["label"] for s in index["settings"]] == ["lr_d=0.0004", "lr_d=0.0008"]
    assert json.loads((out / "runs" / "s01-seed1" / "config.json").read_text())["train"]["lr_d"] == 8e-4
    assert (out / "results.csv").read_text().splitlines()[0] == "setting,runs,finished,diverged"
    assert "lr_d=0.0008: 2/2 finished" in stdout
    status, _, err = cli(["sweep", "--seeds", "0-1", "--out", out, *common])
    assert status == 2 and "holds a sweep already" in one_error_line(err)
    status, _, err = cli(["sweep", "--resume", out, "--no-progress"])  # nothing left to train: the table again
    assert status == 0, err


@pytest.mark.parametrize(("argv", "phrase"), [
    (["--width", "8,16"], "--width takes one value: it changes shapes or the code path"),
    (["--seeds", "3-1"], "--seeds: the range 3-1 is empty"),
    (["--compile"], "a sweep does not support compile=True"),
])
def test_the_sweep_command_refuses_in_one_line(tmp_path, cli, argv, phrase):
    status, _, err = cli(["sweep", "--out", tmp_path / "s", *argv])
    assert status == 2 and phrase in one_error_line(err)
    assert not (tmp_path / "s").exists()


def test_the_seed_spread_benchmark_trains_each_rows_seeds_as_one_sweep_and_summarises_them(
        tmp_path, mnist_5k, quick_classifier_recipe, monkeypatch, capsys):
    """benchmarks/seed_spread.py: each row's seeds are runs of one sweep (ordinary run directories, each its own
    seed), every run is scored, and the row's mean is the mean of its runs' figures."""
    import statistics

    from helpers import write_idx_dir

    from benchmarks import seed_spread

    data = write_idx_dir(tmp_path / "digits", mnist_5k.images[:256], mnist_5k.labels[:256])
    write_idx_dir(data, mnist_5k.images[256:512], mnist_5k.labels[256:512], prefix="t10k")
    tiny = json.dumps({"model.width": 8, "model.self_condition": 10, "train.batch_size": 16})
    monkeypatch.setattr(sys, "argv", ["seed_spread", "--iterations", "3", "--seeds", "0,1", "--n", "200", "--data",
                                      str(data), "--out", str(tmp_path / "out"), "--row", "tiny", "recommended", tiny,
                                      "--baseline", "tiny"])
    seed_spread.main()
    out = capsys.readouterr().out
    runs = [line.split(" | ") for line in out.splitlines() if line.startswith("| tiny | ")]
    assert [(cells[1], cells[2], cells[3]) for cells in runs[:2]] == [("0", "finished", "3"), ("1", "finished", "3")]
    fids = [float(cells[4]) for cells in runs[:2]]
    assert fids[0] != fids[1]  # two seeds, two different generators
    mean_fid = float(runs[2][4].split(" ± ")[0])
    assert mean_fid == pytest.approx(statistics.fmean(fids), abs=2e-3)
    assert "tiny: mean FID / tiny's = 1.000" in out
    for seed in (0, 1):
        config = json.loads((tmp_path / "out" / "tiny" / f"seed{seed}" / "config.json").read_text())
        assert (config["train"]["seed"], config["model"]["width"], config["train"]["iterations"]) == (seed, 8, 3)
