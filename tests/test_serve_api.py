"""`mnist-gan serve`'s API, in-process through Starlette's test client, on tiny real runs: a conditional DCGAN
(Gaussian z, LSGAN) and the unconditional seed model (uniform z); a run whose metrics grow during the test."""

from __future__ import annotations

import base64
import builtins
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO

pytest.importorskip("starlette", reason="mnist-gan serve's extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")  # Starlette 1.x: httpx2 is next

from mnist_gan.run.checkpoint import load_generator  # noqa: E402
from mnist_gan.sampling.sample import generate, generate_nice  # noqa: E402
from mnist_gan.serve.app import allowed_hosts, build_app  # noqa: E402
from mnist_gan.serve.webapi import MAX_SAMPLES, Api  # noqa: E402

LOCAL = "http://127.0.0.1"


def client_for(source, refresh: float = 2.0):
    from starlette.testclient import TestClient

    return TestClient(build_app(Api(source, refresh), allowed_hosts("127.0.0.1")), base_url=LOCAL)


@pytest.fixture(scope="module")
def conditional(conditional_run):
    return client_for(conditional_run)


@pytest.fixture(scope="module")
def unconditional(trained_run):
    return client_for(trained_run.dir)


def pixels(reply: dict) -> np.ndarray:
    """The uint8 images (N, 28, 28) of a JSON samples reply."""
    return np.frombuffer(base64.b64decode(reply["images"]), dtype=np.uint8).reshape(reply["n"], 28, 28)


def as_uint8(images: torch.Tensor) -> np.ndarray:  # as generate's outputs write them (serve shows the same)
    from mnist_gan.data.images import to_uint8

    return to_uint8(images).numpy()


def test_info_describes_the_model_its_directions_and_limits(conditional):
    info = conditional.get("/api/info").json()
    model = info["model"]
    assert model["conditional"] and model["num_classes"] == 10 and model["z_distribution"] == "normal"
    assert model["has_d"] and "lsgan" in model["score_note"]
    assert len(model["directions"]) == 6 and model["directions"] == sorted(model["directions"], reverse=True)
    assert info["run"] is True and info["iteration"] == 20
    assert info["limits"]["max_samples"] == MAX_SAMPLES and info["nice_factor"] == 20


def test_a_shared_view_is_exactly_what_generate_draws(unconditional, trained_run, cli, tmp_path):
    reply = unconditional.get("/api/samples?seed=5&n=9").json()
    model_config, G, _ = load_generator(trained_run.dir)
    assert np.array_equal(pixels(reply), as_uint8(generate(G, model_config, 9, seed=5)))
    assert unconditional.get("/api/samples?seed=5&n=9").json()["images"] == reply["images"]  # same URL, same view
    assert unconditional.get("/api/samples?seed=6&n=9").json()["images"] != reply["images"]
    download = unconditional.get("/api/samples?seed=5&n=9&format=npz")
    assert 'filename="mnist-gan-seed5-n9.npz"' in download.headers["content-disposition"]
    status, _, err = cli(["generate", trained_run.dir, "-n", 9, "--seed", 5, "--format", "npz", "--out", tmp_path / "g.npz"])
    assert status == 0, err
    served = np.load(io.BytesIO(download.content))
    assert np.array_equal(served["images"], np.load(tmp_path / "g.npz")["images"])
    assert served["scores"].shape == (9,)


def test_sliders_move_every_sample_and_zero_is_no_move(conditional):
    base = pixels(conditional.get("/api/samples?seed=1&n=8").json()).astype(int)
    assert np.array_equal(pixels(conditional.get("/api/samples?seed=1&n=8&d=0,0,0").json()), base)
    small = pixels(conditional.get("/api/samples?seed=1&n=8&d=0.5").json()).astype(int)
    large = pixels(conditional.get("/api/samples?seed=1&n=8&d=3").json()).astype(int)
    moved = np.abs(large - base).reshape(8, -1).mean(1)  # mean pixel change of each sample
    assert (moved > 0).all()
    assert np.abs(large - base).mean() > np.abs(small - base).mean() > 0
    other = pixels(conditional.get("/api/samples?seed=1&n=8&d=0,0,0,0,0,3").json()).astype(int)
    assert not np.array_equal(other, large)  # each slider is its own direction


def test_digit_picker_draws_the_chosen_digit(conditional):
    seven = conditional.get("/api/samples?seed=2&n=6&digit=7").json()
    assert seven["labels"] == [7] * 6
    three = conditional.get("/api/samples?seed=2&n=6&digit=3").json()
    assert three["images"] != seven["images"]
    assert conditional.get("/api/samples?seed=2&n=12").json()["labels"] == [i % 10 for i in range(12)]
    assert conditional.get("/api/samples?digit=all&n=2").status_code == 200
    refused = conditional.get("/api/samples?digit=10")
    assert refused.status_code == 400 and "digit must be a whole number in 0..9" in refused.json()["error"]


def test_digit_is_refused_for_an_unconditional_model(unconditional):
    reply = unconditional.get("/api/samples?digit=3")
    assert reply.status_code == 400 and "conditional" in reply.json()["error"]
    assert unconditional.get("/api/info").json()["model"]["conditional"] is False


def test_scores_are_ds_reading_and_nice_is_generate_nice(conditional, conditional_run):
    grid = conditional.get("/api/samples?seed=4&n=10").json()
    assert len(grid["scores"]) == 10 and len(set(grid["scores"])) > 5  # LSGAN: D's output, unclipped
    nice = conditional.get("/api/samples?seed=4&n=10&nice=1").json()
    assert nice["nice"] and nice["scores"] == sorted(nice["scores"], reverse=True)
    model_config, G, D = load_generator(conditional_run)
    expected, _ = generate_nice(G, D, model_config, 10, seed=4)
    assert np.array_equal(pixels(nice), as_uint8(expected))
    # The best of 200 by D score at least as high, on average, as 10 plain draws.
    assert np.mean(nice["scores"]) >= np.mean(grid["scores"])
    refused = conditional.get("/api/samples?nice=1&d=1")
    assert refused.status_code == 400 and "sliders" in refused.json()["error"]


def test_walk_goes_from_one_picked_sample_to_the_other(conditional, unconditional):
    for client in (conditional, unconditional):
        grid = pixels(client.get("/api/samples?seed=9&n=6&d=1.5").json()).astype(int)
        walk = client.get("/api/walk?seed=9&n=6&d=1.5&a=1&b=4&steps=5").json()
        frames = pixels(walk).astype(int)
        assert frames.shape == (5, 28, 28)
        assert np.abs(frames[0] - grid[1]).max() <= 2 and np.abs(frames[-1] - grid[4]).max() <= 2
        assert np.abs(frames[2] - frames[0]).mean() > 0
    same_digit = conditional.get("/api/walk?seed=9&n=6&digit=5&a=1&b=4&steps=4").json()
    assert same_digit["labels"] == [5, 5] and len(same_digit["scores"]) == 4
    two_digits = conditional.get("/api/walk?seed=9&n=6&a=1&b=4&steps=4").json()
    assert two_digits["labels"] == [1, 4] and two_digits["scores"] is None  # halfway D has no class to judge
    strip = conditional.get("/api/walk?a=0&b=1&steps=4&format=png&scale=2")
    from PIL import Image

    image = Image.open(io.BytesIO(strip.content))
    assert strip.headers["content-type"] == "image/png" and image.size == (2 * (4 * 30 + 2), 2 * 32)


def test_png_download_is_the_grid(conditional):
    from PIL import Image

    reply = conditional.get("/api/samples?seed=3&n=16&format=png&scale=3")
    assert reply.status_code == 200 and "attachment" in reply.headers["content-disposition"]
    image = Image.open(io.BytesIO(reply.content))
    assert image.size == (3 * (4 * 30 + 2),) * 2
    tile = np.asarray(image)[3 * 2:3 * 30:3, 3 * 2:3 * 30:3]  # first tile, one pixel per source pixel
    assert np.array_equal(tile, pixels(conditional.get("/api/samples?seed=3&n=16").json())[0])


BAD_REQUESTS = [
    ("/api/samples?n=0", 400, "n must be"), ("/api/samples?n=65", 400, "1..64"), ("/api/samples?n=abc", 400, "n must"),
    ("/api/samples?n=1e3", 400, "n must"), ("/api/samples?seed=-1", 400, "seed must"),
    ("/api/samples?seed=2147483648", 400, "seed must"), ("/api/samples?d=1,2,3,4,5,6,7", 400, "at most 6"),
    ("/api/samples?d=4.5", 400, "-4..4"), ("/api/samples?d=nan", 400, "-4..4"), ("/api/samples?d=inf", 400, "-4..4"),
    ("/api/samples?d=1;2", 400, "numbers"), ("/api/samples?colour=red", 400, "unknown parameter"),
    ("/api/samples?n=4&n=5", 400, "twice"), ("/api/samples?format=gif", 400, "format must"),
    ("/api/samples?scale=9", 400, "scale must"), ("/api/samples?nice=yes", 400, "nice must"),
    ("/api/samples?seed=" + "1" * 300, 400, "longer than"), ("/api/walk?a=2&b=2", 400, "two different"),
    ("/api/walk?a=0&b=20&n=16", 400, "two different"), ("/api/walk?steps=1", 400, "steps must"),
    ("/api/walk?steps=17", 400, "steps must"), ("/api/metrics?since=-1", 400, "since must"),
    ("/api/metrics?generation=x", 400, "generation must"), ("/api/run/grid.png?iteration=../../config.json", 400,
                                                                "iteration must"),
    ("/api/run/grid.png?iteration=7", 404, "no sample grid"), ("/api/info?verbose=1", 400, "unknown parameter"),
    ("/static/app.js?x=1", 400, "no parameters"), ("/static/../mnist_gan/serve/app.py", 404, "no such page"),
    ("/static/%2e%2e/webapi.py", 404, "no such page"), ("/static/serve.py", 404, "no such page"),
    ("/api/run/../../config.json", 404, "no such page"), ("/config.json", 404, "no such page"),
]


@pytest.mark.parametrize("url,status,message", BAD_REQUESTS)
def test_bad_requests_get_a_4xx_and_one_line(conditional, url, status, message):
    reply = conditional.get(url)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in reply.text


def test_wrong_method_and_wrong_host_are_refused(conditional):
    assert conditional.post("/api/samples").status_code == 405
    assert conditional.get("/api/reload").status_code == 405
    evil = conditional.get("/api/info", headers={"host": "attacker.example:8000"})
    assert evil.status_code == 400 and "answers only for" in evil.json()["error"]
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert conditional.get("/api/info", headers={"host": host}).status_code == 200
    assert "attacker.example" not in allowed_hosts("0.0.0.0") and "192.168.1.5" in allowed_hosts("192.168.1.5")


def test_requests_read_only_the_runs_own_files(conditional_run, monkeypatch):
    """Every file a request opens is one of the run's fixed names or an iter_* file found by listing it."""
    client = client_for(conditional_run)
    opened = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(Path(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    for url, _, _ in BAD_REQUESTS:
        client.get(url)
    for url in ("/", "/static/app.js", "/api/info", "/api/run", "/api/metrics", "/api/run/grid.png",
                "/api/run/grid.png?iteration=5", "/api/samples?format=png", "/api/walk?format=npz"):
        assert client.get(url).status_code == 200, url
    monkeypatch.setattr(builtins, "open", real_open)
    run = conditional_run.resolve()
    allowed = {run / "config.json", run / "metrics.jsonl"}
    for path in opened:
        path = path.resolve()
        assert path in allowed or (path.parent == run / "samples" and path.name.startswith("iter_")), path
    assert run / "samples" / "iter_00000005.png" in {p.resolve() for p in opened}


def test_static_page_is_small_self_contained_and_guarded(conditional):
    page = conditional.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    total = 0
    for name in ("app.js", "watch.js", "chart.js", "style.css"):
        asset = conditional.get(f"/static/{name}")
        assert asset.status_code == 200 and f'/static/{name}"' in page.text
        assert "http://" not in asset.text and "https://" not in asset.text  # nothing from elsewhere: works offline
        total += len(asset.content)
    assert total < 60_000
    assert "https://" not in page.text and "http://" not in page.text
    shared = conditional.get("/?seed=3&n=16&digit=7&d=0,1.5")
    assert shared.status_code == 200 and shared.text == page.text  # a shared URL opens the same page


def test_package_data_ships_the_page():
    from fnmatch import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mnist_gan.serve"]
    shipped = sorted(p.name for p in (REPO / "mnist_gan" / "serve" / "static").iterdir())
    from mnist_gan.serve.app import STATIC_FILES

    assert sorted(STATIC_FILES) == shipped
    assert all(any(fnmatch(f"static/{name}", pattern) for pattern in patterns) for name in shipped)


def test_a_single_file_is_explored_without_watching(conditional_run):
    checkpoint = client_for(conditional_run / "checkpoints" / "iter_00000010.ckpt")
    info = checkpoint.get("/api/info").json()
    assert info["run"] is False and info["model"]["has_d"] and "lsgan" in info["model"]["score_note"]
    reply = checkpoint.get("/api/run")
    assert reply.status_code == 404 and "not a run directory" in reply.json()["error"]
    export = client_for(conditional_run / "generator.safetensors")
    assert export.get("/api/info").json()["model"]["has_d"] is False
    assert export.get("/api/samples?n=4").json()["scores"] is None
    refused = export.get("/api/samples?nice=1")
    assert refused.status_code == 409 and "only G" in refused.json()["error"]


def _line(record: dict) -> str:
    return json.dumps(record) + "\n"


def _train_record(iteration: int, t: float, **extra) -> dict:
    return {"kind": "train", "iteration": iteration, "epoch": 1 + (iteration - 1) // 10, "d_loss": 0.5, "g_loss": 1.0,
            "d_x": 0.6, "d_g_z": 0.3, "images_per_s": 100.0, "time": t, **extra}


def test_a_live_run_is_followed_as_its_metrics_grow(conditional_run, tmp_path):
    from mnist_gan.io.files import exclusive_lock

    run = tmp_path / "live"
    shutil.copytree(conditional_run, run, symlinks=True)
    metrics = run / "metrics.jsonl"
    now = time.time()
    metrics.write_text(_line(_train_record(5, now - 30)))
    client = client_for(run)
    first = client.get("/api/metrics").json()
    assert first["reset"] and [r["iteration"] for r in first["records"]] == [5]
    generation = first["generation"]
    with open(metrics, "a") as handle:  # the run appends: two whole lines and half of a third
        handle.write(_line(_train_record(10, now - 20, warnings=["mode-collapse"])) + _line(_train_record(15, now - 10)))
        handle.write('{"kind": "eval", "iteration": 15, "fi')
    grown = client.get(f"/api/metrics?since=1&generation={generation}").json()
    assert not grown["reset"] and [r["iteration"] for r in grown["records"]] == [10, 15] and grown["next"] == 3
    with open(metrics, "a") as handle:  # the half line completes; an evaluation line of a run from before `kind`
        handle.write('d": 40.5}\n' + _line({"iteration": 20, "epoch": 2, "fid": 31.0, "kid": 0.02}) + "not json\n")
        handle.write(_line(_train_record(20, now)))
    more = client.get(f"/api/metrics?since=3&generation={generation}").json()
    assert [(r["kind"], r["iteration"], r.get("fid")) for r in more["records"]] == \
        [("eval", 15, 40.5), ("eval", 20, 31.0), ("train", 20, None)]
    assert more["skipped"] == 1
    status = client.get("/api/run").json()
    assert status["iteration"] == 20 and status["state"] == "finished" and status["progress"] == 1.0
    assert status["warnings"] == [{"iteration": 10, "code": "mode-collapse"}]
    (run / "samples" / "iter_00000025.png").write_bytes((run / "samples" / "iter_00000005.png").read_bytes())
    assert client.get("/api/run").json()["grids"][-1] == 25
    assert client.get("/api/run/grid.png").headers["x-iteration"] == "25"
    with exclusive_lock(run):  # the server holds no lock: a training process could take the run at any time
        assert client.get("/api/run").status_code == 200
    replaced = run / "metrics.new"  # a resume rewrites the file (a new inode): the page starts over
    replaced.write_text(_line(_train_record(5, now)))
    os.replace(replaced, metrics)
    again = client.get(f"/api/metrics?since=5&generation={generation}").json()
    assert again["reset"] and again["generation"] != generation and len(again["records"]) == 1


def test_progress_and_eta_of_a_run_still_training(conditional_run, tmp_path):
    run = tmp_path / "training"
    shutil.copytree(conditional_run, run, symlinks=True)
    config = json.loads((run / "config.json").read_text())

    def status(**train) -> dict:
        config["train"].update(train)
        (run / "config.json").write_text(json.dumps(config))
        return client_for(run).get("/api/run").json()

    now = time.time()  # 10 iterations per epoch, 2 iterations per second, now at iteration 24 of 50, resumed at 2
    before_resume = [_train_record(i, now - 3600 + i) for i in (1, 2)]  # an hour earlier, at another speed
    (run / "metrics.jsonl").write_text("".join(_line(r) for r in before_resume) +
                                       "".join(_line(_train_record(i, now - (24 - i) / 2)) for i in range(4, 25, 4)))
    reply = status(iterations=None, epochs=5, max_minutes=None)
    assert reply["state"] == "training" and reply["iteration"] == 24 and reply["epoch"] == 3
    assert reply["total"] == 50 and not reply["total_exact"]  # 11 iterations per epoch fit the lines as well
    assert reply["iterations_per_s"] == pytest.approx(2.0)
    assert reply["eta_s"] == pytest.approx(13.0) and not reply["eta_by_time_limit"]
    # 500 epochs take 41 more minutes; --max-minutes 3 stops the run first. Its clock started with the resumed
    # session, one logging window (5 iterations of 16 images at 100 images/s: 0.8 s) before its first line, 10 s
    # ago: 169.2 s are left.
    reply = status(epochs=500, max_minutes=3.0)
    assert reply["eta_by_time_limit"] and reply["eta_s"] == pytest.approx(169.2, abs=15)
    reply = status(max_minutes=0.2)  # 12 s: the last line was written at the limit, so the run is over
    assert reply["state"] == "finished" and reply["stopped_by_time_limit"] and not reply["eta_by_time_limit"]
    with open(run / "metrics.jsonl", "a") as handle:  # iteration 21 in epoch 3: 10 per epoch, no other length
        handle.write(_line(_train_record(21, now)))
    assert status(max_minutes=None)["total_exact"]
    os.utime(run / "metrics.jsonl", (now - 3600, now - 3600))
    assert client_for(run).get("/api/run").json()["state"] == "stopped"


def test_a_run_without_a_checkpoint_yet_is_watched_then_reloaded(conditional_run, tmp_path):
    run = tmp_path / "young"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        shutil.copy(conditional_run / name, run / name)
    client = client_for(run)
    info = client.get("/api/info").json()
    assert info["model"] is None and info["run"]
    waiting = client.get("/api/samples")
    assert waiting.status_code == 409 and "no checkpoint yet" in waiting.json()["error"]
    assert client.post("/api/reload").status_code == 409
    shutil.copytree(conditional_run / "checkpoints", run / "checkpoints")
    assert client.get("/api/run").json()["checkpoint"] == 20
    reloaded = client.post("/api/reload").json()
    assert reloaded["iteration"] == 20 and reloaded["model"]["conditional"]
    assert client.get("/api/samples?n=4").status_code == 200


def test_serve_cli_errors_are_one_line_and_status_2(cli, conditional_run, tmp_path, monkeypatch):
    import sys

    status, _, err = cli(["serve", tmp_path / "missing"])
    assert status == 2 and "no such run directory" in err and err.count("\n") == 1
    (tmp_path / "plain").mkdir()
    status, _, err = cli(["serve", tmp_path / "plain", "--port", 0])
    assert status == 2 and "not a run directory" in err
    status, _, err = cli(["serve", conditional_run, "--port", 70000])
    assert status == 2 and "--port must be in 0..65535" in err
    status, _, err = cli(["serve", conditional_run, "--refresh", 0])
    assert status == 2 and "--refresh" in err
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        status, _, err = cli(["serve", conditional_run, "--port", busy.getsockname()[1]])
        assert status == 2 and "cannot listen on 127.0.0.1" in err
    monkeypatch.setitem(sys.modules, "starlette", None)  # as if the [serve] extra were not installed
    status, _, err = cli(["serve", conditional_run])
    assert status == 2 and 'pip install -e ".[serve]"' in err and err.count("\n") == 1


def test_serve_prints_its_url_and_warns_off_loopback(cli, conditional_run, monkeypatch):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: served.append(sockets[0].getsockname()))
    status, out, err = cli(["serve", conditional_run, "--port", 0])
    assert status == 0 and out.strip() == f"http://127.0.0.1:{served[0][1]}/" and "warning" not in err
    status, out, err = cli(["serve", conditional_run, "--port", 0, "--host", "0.0.0.0"])
    assert status == 0 and out.startswith("http://localhost:")
    assert "warning: serving on 0.0.0.0: anyone who can reach this machine can open the page" in err
