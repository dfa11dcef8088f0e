"""Tests written for the mutants the mutation run (python -m benchmarks.mutation; docs/reliability.md, "Mutation
testing") found alive: each pins by value a behaviour of the losses, the metrics, the training step, checkpoints,
the run directory or the web API's path checks that no earlier test looked at closely enough."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from helpers import png_bytes, tiny_config, tiny_run_config

from mnist_gan.errors import MnistGanError
from mnist_gan.evaluation.metrics import frechet_distance_by_eigenvalues, kernel_distance, stacked_mnist_modes
from mnist_gan.gan.losses import bce_d, lsgan_d, r1_penalty
from mnist_gan.gan.step import GanStep
from mnist_gan.run import checkpoint as checkpoints
from mnist_gan.run import directory as rundir
from mnist_gan.run.checkpoint import (
    _check_state,
    _field_problem,
    _unpickling_reason,
    check_config_edits,
    load_checkpoint,
    load_latest_checkpoint,
    models_from_checkpoint,
)
from mnist_gan.run.directory import RunDir

# ------------------------------------------------------------------------------------------ losses


def test_lsgan_d_regresses_real_to_one_unless_told_otherwise():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([0.25, -1.0])
    expected = 0.5 * (((real - 1) ** 2).mean() + (fake ** 2).mean())  # 0.5 * (0.625 + 0.53125)
    assert lsgan_d(real, fake).item() == pytest.approx(expected.item()) == pytest.approx(0.578125)


def test_bce_d_labels_real_one_unless_told_otherwise():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([0.25, -1.0])
    expected = 0.5 * (torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean())
    assert bce_d(real, fake).item() == pytest.approx(expected.item())
    assert bce_d(real, fake).item() == pytest.approx(bce_d(real, fake, 1.0).item())


def test_r1_penalty_is_differentiable_so_d_learns_from_it():
    # D(x) = <w, x>: the gradient is w for every image, so the penalty is |w|^2 and its gradient in w is 2 w
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0, 0.0]))

    def D(images, labels=None):
        return images.flatten(1) @ w

    penalty = r1_penalty(D, torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0)))
    assert penalty.item() == pytest.approx(5.25)
    penalty.backward()
    assert torch.allclose(w.grad, 2 * w.detach())


# ------------------------------------------------------------------------------------------ metrics


def test_frechet_distance_by_eigenvalues_is_the_closed_form_for_commuting_covariances():
    # Diagonal covariances commute: Tr((s1 s2)^(1/2)) = sum sqrt(a_i b_i), and the traces differ on purpose.
    mu1, mu2 = np.array([1.0, 2.0, 0.5]), np.array([0.0, -1.0, 0.5])
    a, b = np.array([4.0, 9.0, 1.0]), np.array([1.0, 4.0, 16.0])
    expected = 1 + 9 + 0 + a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()  # 10 + 14 + 21 - 2 * 12 = 21
    assert expected == 21
    assert frechet_distance_by_eigenvalues(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(21, abs=1e-9)
    assert frechet_distance_by_eigenvalues(mu2, np.diag(b), mu1, np.diag(a)) == pytest.approx(21, abs=1e-9)
    assert frechet_distance_by_eigenvalues(2.0, 9.0, 0.0, 1.0) == pytest.approx(4 + 9 + 1 - 2 * 3, abs=1e-9)


class SeenDigits:
    """Stands in for the feature classifier: records the images it is shown and reads digit d from an image filled
    with -1 + d / 5."""

    def __init__(self):
        self.seen = None

    def features_and_probabilities(self, images):
        self.seen = images
        assert images.shape[1:] == (1, 28, 28)  # one digit a channel, as the classifier takes them
        digits = ((images.flatten(1).mean(1) + 1) * 5).round().long().clamp(0, 9)  # (N,)
        return None, torch.nn.functional.one_hot(digits, 10).double()


def _stacked_pixels(modes: list[int]) -> torch.Tensor:
    """uint8 images (N, 3, 28, 28) of the given modes, each of their digits even (pixel 25.5 * d is exact)."""
    digits = torch.tensor([[m // 100, m // 10 % 10, m % 10] for m in modes])  # (N, 3)
    return (digits * 25.5).round().to(torch.uint8)[:, :, None, None].expand(-1, -1, 28, 28)


def test_stacked_modes_reads_uint8_pixels_as_exact_values_in_minus_one_to_one():
    classifier = SeenDigits()
    result = stacked_mnist_modes(_stacked_pixels([0, 246, 246, 802]), classifier)  # 8 * 25.5 = 204 (not 255)
    assert result["modes"] == 3 and result["n"] == 4
    assert result["histogram"][246] == 2 and result["histogram"][0] == result["histogram"][802] == 1
    assert classifier.seen.dtype == torch.float32 and classifier.seen.shape == (12, 1, 28, 28)
    assert classifier.seen[0].unique().tolist() == [-1.0]  # pixel 0
    assert classifier.seen[4].unique().item() == pytest.approx((102 - 127.5) / 127.5, abs=1e-7)  # digit 4
    classifier = SeenDigits()
    stacked_mnist_modes(torch.full((1, 3, 28, 28), 255, dtype=torch.uint8), classifier)
    assert classifier.seen.unique().tolist() == [1.0]


def test_stacked_modes_histogram_has_every_mode_and_kl_counts_single_samples():
    result = stacked_mnist_modes(_stacked_pixels([4, 68, 68]), SeenDigits())
    assert len(result["histogram"]) == 1000 and result["modes"] == 2
    shares = np.array([1 / 3, 2 / 3])
    assert result["kl"] == pytest.approx(float((shares * np.log(shares * 1000)).sum()), rel=1e-12)


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 28), (3, 28, 28)])
def test_stacked_modes_refuses_images_that_are_not_three_channels(shape):
    with pytest.raises(MnistGanError, match=re.escape(f"got {shape}")):
        stacked_mnist_modes(torch.zeros(shape), SeenDigits())


def test_kid_takes_subsets_of_two_and_refuses_fewer():
    x = np.arange(12, dtype=np.float64).reshape(4, 3) / 10
    mean, std, size = kernel_distance(x, x[::-1] + 1, subsets=3, subset_size=1000)
    assert size == 2 and np.isfinite(mean) and np.isfinite(std)
    with pytest.raises(MnistGanError, match="KID needs at least 2 images on each side, got 4 and 4"):
        kernel_distance(x, x, subsets=3, subset_size=1)


# ------------------------------------------------------------------------------------------ step


def test_mode_seeking_term_compares_each_pair_of_images_with_its_pair_of_noise():
    from types import SimpleNamespace

    step = SimpleNamespace(config=SimpleNamespace(model=SimpleNamespace(pack=1)))
    z = torch.tensor([[0.0, 1.0, 2.0], [0.0, 3.0, 1.0], [5.0, 1.0, 1.0], [5.0, 2.0, 4.0]])  # pairs (0, 1), (2, 3)
    fake = torch.arange(16, dtype=torch.float32).view(4, 1, 2, 2) ** 1.5
    image_gap = torch.cat([(fake[0] - fake[1]).abs().flatten(), (fake[2] - fake[3]).abs().flatten()]).mean()
    noise_gap = torch.cat([(z[0] - z[1]).abs(), (z[2] - z[3]).abs()]).mean()  # (0 + 2 + 1 + 0 + 1 + 3) / 6
    assert noise_gap.item() == pytest.approx(7 / 6)
    expected = 1 / (image_gap / noise_gap + 1e-5)
    assert GanStep._mode_seeking(step, z, fake).item() == pytest.approx(expected.item(), rel=1e-6)


# ------------------------------------------------------------------------------------------ run directory


def test_run_file_pattern_matches_the_files_their_temporaries_and_the_last_link_temporary():
    # Built at import time, so the tests of the run directory only ever see the patterns the module made then.
    pattern = rundir._run_file_pattern(r"config\.json|metrics\.jsonl")
    for name in ("config.json", "metrics.jsonl", ".config.json.ab12_x9.tmp", ".last.ckpt.tmp"):
        assert pattern.fullmatch(name), name
    for name in ("config.jsonx", "config.json.tmp", ".config.json.AB.tmp", ".config.json..tmp", "last.ckpt.tmp",
                 ".losses.png.ab.tmp"):
        assert not pattern.fullmatch(name), name


def test_default_run_directory_is_runs_preset_and_the_time():
    config = tiny_run_config("dcgan")
    run = RunDir.default(config)
    assert run.path.parent == rundir.Path("runs")
    assert re.fullmatch(rf"{re.escape(config.preset)}-\d{{8}}-\d{{6}}", run.path.name), run.path.name


def test_read_config_returns_what_record_config_wrote(tmp_path):
    config = tiny_run_config("dcgan", iterations=7)
    run = RunDir(tmp_path)
    run.record_config(config)
    assert run.read_config() == config and run.read_config().train.iterations == 7


def test_overwrite_says_what_kept_the_replaced_runs_remains(tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text("")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rundir.shutil, "rmtree", refuse)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mnist_gan"), RunDir(out).create(tiny_run_config("dcgan"),
                                                                                  overwrite=True):
        pass
    said = [r.getMessage() for r in caplog.records if "remains" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("(Permission denied)"), said
    assert (out / "config.json").read_text() != "{}"  # the new run took the name


def test_overwrite_protects_the_current_directory_even_with_no_home(monkeypatch):
    def homeless():
        raise RuntimeError("Could not determine home directory")

    monkeypatch.setattr(rundir.Path, "home", staticmethod(homeless))
    assert rundir._protected_paths(None) == [(rundir.Path.cwd().resolve(), "the current directory")]


def test_a_new_run_uses_an_empty_existing_directory(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunDir(out).create(tiny_run_config("dcgan")) as run:
        assert run.read_config() == tiny_run_config("dcgan")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "samples"]


def test_a_run_folder_that_cannot_be_made_is_one_error_naming_the_run(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder goes")
    with pytest.raises(MnistGanError) as raised:
        RunDir(tmp_path)._populate(tmp_path, tiny_run_config("dcgan"))
    assert str(raised.value) == f"{tmp_path}: cannot create run directory (File exists)"


def test_last_link_on_a_file_system_without_symlinks_is_skipped_quietly(tmp_path, monkeypatch):
    def no_symlinks(self, target):
        raise OSError(1, "Operation not permitted")

    (tmp_path / "checkpoints").mkdir()
    newest = tmp_path / "checkpoints" / "iter_00000002.ckpt"
    newest.write_bytes(b"")
    monkeypatch.setattr(rundir.Path, "symlink_to", no_symlinks)
    RunDir(tmp_path).point_last(newest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


# ------------------------------------------------------------------------------------------ checkpoints


def test_a_checkpoint_without_both_generator_states_is_named_so():
    state = {"iteration": 3, "epoch": 0, "config": {}, "G": {}, "D": {}, "optimizer_g": {}, "optimizer_d": {},
             "rng": {"noise": torch.zeros(1)}}
    assert _field_problem(state) == "rng lacks the noise and torch generator states"
    assert _field_problem({**state, "rng": {"noise": torch.zeros(1), "torch": torch.zeros(1)}}) is None
    both = {"noise": torch.zeros(1), "torch": torch.zeros(1)}
    assert _field_problem({**state, "rng": both, "clusters": "junk"}) == "clusters is not a dict of tensors"


def _state(**changes) -> dict:
    config = tiny_run_config("dcgan")
    return {"format_version": checkpoints.FORMAT_VERSION, "config": config.to_dict(), "epoch": 0,
            **GanStep(config).state_dict(), **changes}


def test_a_checkpoint_of_an_unknown_format_version_or_other_weights_names_the_file_and_the_value():
    with pytest.raises(MnistGanError, match=re.escape("x.ckpt: not an mnist-gan checkpoint (format version 0)")):
        _check_state(_state(format_version=0), 10**9, rundir.Path("x.ckpt"))
    state = _state()
    name = next(iter(state["G"]))
    with pytest.raises(MnistGanError, match=r"^x\.ckpt: "):
        _check_state(_state(G={**state["G"], name: torch.zeros(3, 3, 3)}), 10**9, rundir.Path("x.ckpt"))


def test_a_refused_class_reads_as_a_refusal_not_as_damage(monkeypatch, tmp_path):
    import pickle

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError("Weights only load failed. WeightsUnpickler error: Unsupported class x.Y")

    monkeypatch.setattr(checkpoints.torch, "load", refuse)
    with pytest.raises(MnistGanError, match=r"^x\.ckpt: refused to load: .*\(Unsupported class x\.Y\)$"):
        checkpoints._unpickle(None, rundir.Path("x.ckpt"))


def test_a_zip_that_torch_did_not_write_is_refused_before_torch_reads_it(tmp_path):
    import zipfile

    path = tmp_path / "iter_00000001.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/notes.txt", "hello")
    with pytest.raises(MnistGanError, match=re.escape("(a zip archive without data.pkl, so not one torch.save wrote)")):
        load_checkpoint(path)


def test_a_missing_checkpoint_is_named_a_checkpoint_file(tmp_path):
    with pytest.raises(MnistGanError, match=re.escape(f"{tmp_path / 'iter_1.ckpt'}: no such checkpoint file")):
        load_checkpoint(tmp_path / "iter_1.ckpt")


def test_resume_with_an_unreadable_config_says_to_delete_it(tmp_path):
    config_file = tmp_path / "config.json"
    config_file.write_text("{not json")
    with pytest.raises(MnistGanError) as raised:
        check_config_edits(config_file, tiny_run_config("dcgan"), tmp_path / "iter_00000002.ckpt", False)
    assert str(raised.value).startswith(f"{config_file}: ")
    assert str(raised.value).endswith(f"; --resume continues with the settings of {tmp_path / 'iter_00000002.ckpt'}: "
                                      "delete the file to have them written there again")


def test_each_checkpoint_passed_over_is_one_warning_with_its_reason(tmp_path, caplog):
    damaged = tmp_path / "checkpoints" / "iter_00000002.ckpt"
    damaged.parent.mkdir()
    damaged.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(MnistGanError) as expected:
        load_checkpoint(damaged)
    reason = str(expected.value).removeprefix(f"{damaged}: ")
    with caplog.at_level(logging.WARNING, logger="mnist_gan"), pytest.raises(MnistGanError, match="no usable"):
        load_latest_checkpoint(tmp_path)
    assert [r.getMessage() for r in caplog.records] == [f"skipping {damaged}: {reason}"]
    assert reason.startswith("not a readable checkpoint (")


def test_an_unpickling_error_without_torchs_words_is_unsupported_content():
    assert _unpickling_reason(ValueError("no known phrase here")) == "unsupported content"
    assert _unpickling_reason(ValueError("Weights only load failed. WeightsUnpickler error: Unsupported "
                                         "operand 149. Please use something else")) == "Unsupported operand 149"


def test_a_checkpoint_whose_generator_diverged_is_refused_naming_the_generator():
    config = tiny_run_config("dcgan")
    step = GanStep(config)
    state = {"config": config.to_dict(), **step.state_dict()}
    name = next(key for key, value in state["G"].items() if value.is_floating_point())
    state["G"] = {**state["G"], name: torch.full_like(state["G"][name], float("nan"))}
    with pytest.raises(MnistGanError, match=r"^x\.ckpt: generator weights are unusable \("):
        models_from_checkpoint(state, "x.ckpt")


# ------------------------------------------------------------------------------------------ web API


@pytest.fixture
def grids_run(tmp_path):
    """A run directory with no checkpoint yet and two sample grids, at iterations 0 and 5."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "samples").mkdir()
    first, second = png_bytes(np.zeros((4, 4), np.uint8)), png_bytes(np.full((4, 4), 200, np.uint8))
    (run / "samples" / "iter_00000000.png").write_bytes(first)
    (run / "samples" / "iter_00000005.png").write_bytes(second)
    return run, first, second


def test_run_grid_answers_the_png_of_each_iteration_from_zero(grids_run):
    from mnist_gan.serve.webapi import Api

    run, first, second = grids_run
    api = Api(run)
    reply = api.handle("run_grid", [("iteration", "0")])
    assert (reply.status, reply.media_type, reply.body, reply.headers) == (200, "image/png", first,
                                                                          {"X-Iteration": "0"})
    reply = api.handle("run_grid", [])  # the newest
    assert (reply.status, reply.media_type, reply.body, reply.headers) == (200, "image/png", second,
                                                                          {"X-Iteration": "5"})
    missing = api.handle("run_grid", [("iteration", "3")])
    assert missing.status == 404
    assert missing.body == b'{"error": "no sample grid at that iteration (yet)"}'


def test_reload_refuses_parameters_and_says_when_there_is_nothing_to_load(grids_run):
    from mnist_gan.serve.webapi import Api

    api = Api(grids_run[0])
    reply = api.handle("reload", [("iteration", "5")])
    assert (reply.status, reply.body) == (400, b'{"error": "unknown parameter \'iteration\'; this request takes: none"}')
    reply = api.handle("reload", [])
    assert (reply.status, reply.body) == (409, b'{"error": "no checkpoint yet: nothing to load"}')


def test_overwrite_that_cannot_put_the_old_run_back_names_the_run_and_where_it_is_whole(tmp_path, monkeypatch):
    """The new run cannot take the name, and then the old one cannot move back: one error names the run as the
    user gave it and the folder that holds the old run, whole."""
    import mnist_gan.io.dirswap as dirswap

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    real_rename, real_os_rename = rundir.rename, dirswap.os.rename

    def new_cannot_take_the_name(source, target, shown):
        if target == out.resolve() and source.name != out.name:
            raise MnistGanError(f"{shown}: cannot replace (injected)")
        real_rename(source, target, shown)

    def old_cannot_move_back(source, target, *args, **kwargs):
        if target == out.resolve() and "replaced" in str(source):
            raise PermissionError(13, "Permission denied")
        real_os_rename(source, target, *args, **kwargs)

    monkeypatch.setattr(rundir, "rename", new_cannot_take_the_name)
    monkeypatch.setattr(dirswap.os, "rename", old_cannot_move_back)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MnistGanError) as refused:
        with RunDir(out).create(tiny_run_config("dcgan"), overwrite=True):
            pass
    message = str(refused.value)
    aside = [p for p in tmp_path.iterdir() if "replaced" in p.name]
    assert message.startswith(f"{out}: --overwrite failed and could not move the old run back"), message
    assert len(aside) == 1 and message.endswith(f"it is whole in {aside[0]}")
    assert (aside[0] / "config.json").read_text() == "{}" and not out.exists()


# ---------------------------------------------------------------------------------------- GanStep's survivors

def test_ema_warm_up_averages_with_a_tenth_at_the_first_iteration():
    """update_ema's decay is min(decay, (1 + t) / (10 + t)): 0.1 at t = 0, so the average moves 90% of the way."""
    from mnist_gan.gan.step import update_ema

    G, G_ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = G_ema.weight.detach().clone()
    update_ema(G_ema, G, decay=0.999, iteration=0)
    torch.testing.assert_close(G_ema.weight, 0.1 * before + 0.9 * G.weight.detach(), rtol=0, atol=1e-6)


def test_label_smoothing_lowers_the_real_target():
    assert GanStep(tiny_config("dcgan", label_smoothing=0.1)).real_target == pytest.approx(0.9)
    assert GanStep(tiny_config("dcgan")).real_target == 1.0


def test_fakes_for_d_are_made_in_the_steps_precision():
    step = GanStep(tiny_config("dcgan"))
    step.precision = "bf16"  # autocast on the CPU runs anywhere, fast or not
    fake, _ = step._fakes_for_d(None)
    assert fake.dtype == torch.bfloat16


def test_top_k_without_an_epoch_length_keeps_the_first_epochs_k():
    step = GanStep(tiny_config("dcgan", top_k=True), batches_per_epoch=None)
    logits = torch.arange(8.0)
    assert step._top_k(logits).tolist() == logits.topk(len(step._top_k(logits))).values.tolist()
    assert len(step._top_k(logits)) == 8  # top_k_count at epoch 0 keeps every fake


def test_non_finite_weights_name_the_network():
    step = GanStep(tiny_config("dcgan"))
    with torch.no_grad():
        next(step.G.parameters()).fill_(float("nan"))
    with pytest.raises(MnistGanError, match=r"^training diverged: G has non-finite weights at iteration 7;"):
        step.check_finite(7)


def test_a_state_that_does_not_fit_names_its_source():
    step = GanStep(tiny_config("dcgan"))
    state = step.state_dict()
    state["rng"] = {"noise": torch.zeros(3, dtype=torch.uint8), "torch": state["rng"]["torch"]}
    with pytest.raises(MnistGanError, match=r"^runs/x/last\.ckpt: optimizer or RNG state does not fit this run \("):
        GanStep(tiny_config("dcgan")).load_state_dict(state, "runs/x/last.ckpt")
