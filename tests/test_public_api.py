"""The Python API as the README shows it: names imported from `mnist_gan` are the functions, and a run started
with train() and continued with resume() ends where one uninterrupted run does."""

from __future__ import annotations

import inspect

import torch

from mnist_gan.run.checkpoint import load_checkpoint


def test_the_readme_import_line_gives_functions():
    from mnist_gan import evaluate_generator, generate, load_generator, resume, train

    for function in (train, resume, generate, load_generator, evaluate_generator):
        assert inspect.isfunction(function), f"{function!r} is not a function"
    assert [train.__name__, resume.__name__] == ["train", "resume"]


def test_train_then_resume_equals_one_run(tmp_path, small_npz):
    from mnist_gan import preset, resume, train

    def config(iterations: int):
        config = preset("recommended")
        config.data.data, config.data.limit = str(small_npz), 64
        config.model.width, config.train.batch_size, config.train.device = 8, 16, "cpu"
        config.model.self_condition = 8  # 64 images: the preset's 100 clusters would be refused
        config.train.iterations, config.train.sample_every, config.train.log_every = iterations, 0, 1
        return config

    whole = train(config(6), tmp_path / "whole", progress=False)
    first = train(config(3), tmp_path / "parts", progress=False)
    assert first.iteration == 3
    second = resume(tmp_path / "parts", iterations=6, progress=False)  # crosses into epoch 2 (4 batches each)
    assert (second.run_dir, second.iteration, second.interrupted) == (tmp_path / "parts", 6, False)
    assert [r["iteration"] for r in second.history] == list(range(1, 7))
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(second.checkpoint)
    for net in ("G", "D", "G_ema"):
        for key, value in a[net].items():
            assert torch.equal(value, b[net][key]), f"{net}.{key}"
