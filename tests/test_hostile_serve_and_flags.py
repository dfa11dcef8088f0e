"""Hostile-input cases of issue 27 for `mnist-gan serve` and a few flags: cross-site POSTs, slow and idle
connections, DNS rebinding when bound to every interface, IPv6 URLs, colour generators, SIGINT's exit status,
`--config` channels, the --n-critic bound, interpolate's digit flags and the labels of a conditional ONNX export."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
import torch
from helpers import spawn

pytest.importorskip("starlette", reason="mnist-gan serve's extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

from mnist_gan.errors import MnistGanError  # noqa: E402
from mnist_gan.serve import app as serve_app  # noqa: E402
from mnist_gan.serve.app import allowed_hosts, bind, build_app, url_of  # noqa: E402
from mnist_gan.serve.webapi import Api  # noqa: E402
from mnist_gan.settings.config import RunConfig  # noqa: E402
from mnist_gan.settings.validation import MAX_N_CRITIC, validate  # noqa: E402


def client(source, host: str = "127.0.0.1", extra=(), base_url: str = "http://127.0.0.1"):
    from starlette.testclient import TestClient

    return TestClient(build_app(Api(source), allowed_hosts(host, extra)), base_url=base_url)


@pytest.fixture(scope="module")
def colour_generator(tmp_path_factory):
    """A generator.safetensors of an untrained 3-channel (Stacked MNIST) dcgan G."""
    from mnist_gan.gan.models import build_generator
    from mnist_gan.run.generator_file import export_generator

    model = dataclasses.replace(RunConfig(preset="recommended").model, channels=3, width=8, self_condition=0)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("colour") / "generator.safetensors"
    export_generator(build_generator(model).eval(), model, path, 0)
    return path


@pytest.fixture
def captured_server(monkeypatch):
    """Run `mnist-gan serve` up to uvicorn's run, which records the server instead of serving."""
    import uvicorn

    servers = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: servers.append(self))
    return servers


# ---------- serve: cross-site POSTs ----------

def test_a_cross_site_post_is_refused(trained_run):
    page = client(trained_run.dir)
    for headers in ({"origin": "http://attacker.example"}, {"origin": "null"}, {"origin": "http://127.0.0.1:9999"},
                    {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"}):
        reply = page.post("/api/reload", headers=headers)
        assert reply.status_code == 403, headers
        assert reply.json()["error"].startswith("refused a cross-site request")
    own = page.post("/api/reload", headers={"origin": "http://127.0.0.1", "sec-fetch-site": "same-origin"})
    assert own.status_code == 200 and own.json()["iteration"] == 20
    assert page.post("/api/reload").status_code == 200  # curl and scripts send neither header


# ---------- serve: timeouts ----------

def test_serve_passes_timeouts_and_limits_to_uvicorn(captured_server, cli, trained_run):
    from uvicorn.protocols.http.h11_impl import H11Protocol

    status, _, err = cli(["serve", trained_run.dir, "--port", 0])
    assert status == 0, err
    config = captured_server[0].config
    assert config.timeout_keep_alive == serve_app.KEEP_ALIVE_S == 5
    assert config.h11_max_incomplete_event_size == serve_app.MAX_HEADER_BYTES
    assert config.limit_concurrency == serve_app.MAX_CONNECTIONS
    assert isinstance(config.http, type) and issubclass(config.http, H11Protocol)


def test_slow_request_headers_lose_the_connection(colour_generator, monkeypatch):
    """A client that never finishes its headers is cut off after HEADER_TIMEOUT_S; a whole request is answered."""
    monkeypatch.setattr(serve_app, "HEADER_TIMEOUT_S", 0.3)
    app = build_app(Api(colour_generator), allowed_hosts("127.0.0.1"))
    server = serve_app._uvicorn_classes()[0](serve_app.uvicorn_config(app))
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            start = time.monotonic()
            assert slow.recv(100) == b""  # closed by the server, not answered
            assert time.monotonic() - start < 3
        with socket.create_connection(("127.0.0.1", port), timeout=5) as whole:
            whole.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert whole.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        thread.join(10)


# ---------- serve: Host names when bound to every interface ----------

def test_every_interface_keeps_the_host_check(trained_run):
    assert allowed_hosts("0.0.0.0") is not None and allowed_hosts("[::]") == allowed_hosts("::")
    page = client(trained_run.dir, host="0.0.0.0", extra=["GAN.example"])
    evil = page.get("/api/info", headers={"host": "attacker.example:8000"})
    assert evil.status_code == 400 and "answers only for" in evil.json()["error"]
    for host in ("gan.example:8000", "localhost:8000", "192.168.1.5:8000", "[fe80::1]:8000", socket.gethostname()):
        assert page.get("/api/info", headers={"host": host}).status_code == 200, host
    assert "gan.example" in allowed_hosts("192.168.1.5", ["gan.example"])


def test_allow_host_reaches_the_served_app(captured_server, cli, trained_run):
    from starlette.testclient import TestClient

    status, _, err = cli(["serve", trained_run.dir, "--port", 0, "--host", "0.0.0.0", "--allow-host", "gan.example",
                          "--allow-host", "box.lan"])
    assert status == 0, err
    page = TestClient(captured_server[0].config.app)
    assert page.get("/api/info", headers={"host": "box.lan:8000"}).status_code == 200
    assert page.get("/api/info", headers={"host": "rebound.attacker.example"}).status_code == 400


def test_ipv6_hosts_print_a_valid_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert url_of(sock, "[::]") == url_of(sock, "::") == f"http://localhost:{port}/"
        assert url_of(sock, "[::1]") == url_of(sock, "::1") == f"http://[::1]:{port}/"
        assert url_of(sock, "127.0.0.1") == f"http://127.0.0.1:{port}/"


# ---------- serve: colour generators ----------

def test_a_colour_generator_is_served_in_colour_and_its_npz_is_generates(colour_generator, cli, tmp_path):
    from PIL import Image

    page = client(colour_generator)
    reply = page.get("/api/samples?seed=4&n=6").json()
    assert reply["channels"] == 3
    shown = np.frombuffer(base64.b64decode(reply["images"]), dtype=np.uint8).reshape(6, 3, 28, 28)
    status, _, err = cli(["generate", colour_generator, "-n", 6, "--seed", 4, "--format", "npz", "--out",
                          tmp_path / "g.npz"])
    assert status == 0, err
    generated = np.load(tmp_path / "g.npz")["images"]
    assert generated.shape == (6, 3, 28, 28) and np.array_equal(shown, generated)
    assert not np.array_equal(shown[:, 0], shown[:, 1])  # three different planes, not one repeated
    download = np.load(io.BytesIO(page.get("/api/samples?seed=4&n=6&format=npz").content))
    assert download["images"].dtype == np.uint8 and np.array_equal(download["images"], generated)
    assert Image.open(io.BytesIO(page.get("/api/samples?seed=4&n=6&format=png").content)).mode == "RGB"
    walk = page.get("/api/walk?seed=4&n=6&a=0&b=1&steps=3").json()
    assert walk["channels"] == 3 and len(base64.b64decode(walk["images"])) == 3 * 3 * 784


# ---------- serve: SIGINT ----------

def test_a_signal_that_stops_uvicorn_exits_130(cli, trained_run, monkeypatch):
    import uvicorn

    def stopped_by_ctrl_c(self, sockets):  # as uvicorn returns where SIGINT was ignored (a background job)
        self.handle_exit(signal.SIGINT, None)
    monkeypatch.setattr(uvicorn.Server, "run", stopped_by_ctrl_c)
    status, _, err = cli(["serve", trained_run.dir, "--port", 0])
    assert status == 130 and "interrupted by SIGINT" in err


def test_ctrl_c_exits_130_even_in_a_background_job(trained_run):
    """A shell's background job starts with SIGINT ignored; uvicorn catches it anyway, so the exit must say so."""
    process = spawn(["serve", str(trained_run.dir), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 30
        while True:  # the URL is printed just before uvicorn takes SIGINT over: wait until it answers
            try:
                urllib.request.urlopen(url + "api/info", timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "serve never answered"
                time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130 and "interrupted" in err


# ---------- flags ----------

@pytest.mark.parametrize("channels", [2, -1, 0])
def test_config_with_a_bad_channels_value_is_one_line(channels, cli, tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": {"channels": channels}}))
    status, _, err = cli(["train", "--config", config, "--data", tmp_path / "none", "--out", tmp_path / "run"])
    assert status == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"--channels must be one of 1, 3; got {channels}" in err


def test_n_critic_has_an_upper_bound(cli, tmp_path):
    status, _, err = cli(["train", "--n-critic", MAX_N_CRITIC + 1, "--data", tmp_path / "none", "--out", tmp_path / "r"])
    assert status == 2 and f"--n-critic must be in 1..{MAX_N_CRITIC}" in err and "got 101" in err
    config = RunConfig()
    validate(dataclasses.replace(config, train=dataclasses.replace(config.train, n_critic=MAX_N_CRITIC)))


@pytest.mark.parametrize("flag", ["--from-digit", "--to-digit"])
def test_interpolate_names_the_digit_flag_given(flag, cli, conditional_run, tmp_path):
    status, _, err = cli(["interpolate", conditional_run, flag, 99, "--out", tmp_path / "walk.png"])
    assert status == 2 and f"{flag} must be in 0..9, got 99" in err and "--digit must" not in err
    assert not (tmp_path / "walk.png").exists()


def test_conditional_onnx_refuses_labels_outside_its_classes(cli, conditional_run, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from mnist_gan.run.checkpoint import load_generator
    from mnist_gan.sampling.export import example_inputs, run_onnx

    out = tmp_path / "cond.onnx"
    status, _, err = cli(["export", conditional_run, "--format", "onnx", "--out", out])
    assert status == 0, err
    z, _ = example_inputs(load_generator(conditional_run)[0], 4)  # (4, z_dim)
    for labels in ([0, 10, 2, 3], [-1, 1, 2, 3], [0, 1, 2, 1000]):
        with pytest.raises(MnistGanError, match="labels must be in 0..9"):
            run_onnx(out, z, torch.tensor(labels))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = session.run(["images"], {"z": z.numpy(), "labels": np.array([0, 10, -1, 9])})[0]  # (4, 1, 28, 28)
    poisoned = np.isnan(images).reshape(4, -1).all(axis=1)
    assert poisoned.tolist() == [False, True, True, False]  # in the graph: a bad label gives no digit at all
    assert np.isfinite(run_onnx(out, z, torch.tensor([0, 9, 5, 3])).numpy()).all()
