"""Property-based tests: the data readers and the checkpoint loaders, fed random bytes and damaged files, either
succeed or raise MnistGanError. They never fail any other way and never hang."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import os
import resource
import signal
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import png_bytes, time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import hostile_files as hostile  # the repository root is on sys.path (python -m pytest)
from mnist_gan.data.arrays import load_npz
from mnist_gan.data.idx import parse_idx, read_idx
from mnist_gan.data.image_folder import load_image_folder
from mnist_gan.errors import MnistGanError
from mnist_gan.gan.weights import build_models
from mnist_gan.run.checkpoint import config_from_checkpoint, load_checkpoint
from mnist_gan.run.generator_file import load_exported_generator
from mnist_gan.settings.config import RunConfig

FUZZ = settings(max_examples=150, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
LIMIT_S = 10  # a reader stuck this long on one input counts as hung


def read_or_our_error(read, payload: bytes, name: str = "input.bin"):
    """Write payload to a fresh file and read it; return the result, or None for a MnistGanError."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_bytes(payload)
        with time_limit(LIMIT_S):
            try:
                return read(path)
            except MnistGanError as error:
                assert str(error) and "\n" not in str(error).strip()  # one line for the user
                return None


def damage(blob: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """Truncate blob to `cut` bytes, then overwrite some bytes."""
    damaged = bytearray(blob[:cut])
    for position, value in flips:
        if damaged:
            damaged[position % len(damaged)] = value
    return bytes(damaged)


damages = st.tuples(st.integers(0, 2**20), st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)),
                                                     max_size=4))

_rng = np.random.default_rng(0)
_IMAGES = _rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
_LABELS = np.array([3, 1, 4, 1], dtype=np.uint8)
VALID_IDX = {"images": hostile.idx_bytes(_IMAGES, 2051), "labels": hostile.idx_bytes(_LABELS, 2049)}


# ------------------------------------------------------------------------------------------ IDX

@FUZZ
@given(payload=st.binary(max_size=4000), compress=st.booleans())
def test_idx_reader_on_random_bytes(payload, compress):
    read_or_our_error(read_idx, gzip.compress(payload) if compress else payload)


@FUZZ
@given(kind=st.sampled_from(sorted(VALID_IDX)), compress=st.booleans(), hurt=damages)
def test_idx_reader_on_damaged_files(kind, compress, hurt):
    blob = gzip.compress(VALID_IDX[kind], mtime=0) if compress else VALID_IDX[kind]
    result = read_or_our_error(read_idx, damage(blob, hurt[0] % (len(blob) + 1), hurt[1]))
    if result is not None:
        assert result.dtype == np.uint8 and result.ndim in (1, 3)


@FUZZ
@given(magic=st.sampled_from([2051, 2049, 2050, 0]), dims=st.lists(st.integers(0, 2**32 - 1), max_size=4),
       body=st.binary(max_size=3200))
def test_idx_parser_on_forged_headers(magic, dims, body):
    raw = magic.to_bytes(4, "big")[:3] + bytes([len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body
    with time_limit(LIMIT_S):
        try:
            array = parse_idx(raw, "forged")
        except MnistGanError:
            return
    assert array.size == len(body)


# ------------------------------------------------------------------------------------------ npz and images

def _npz(compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, x_train=_IMAGES, y_train=_LABELS.astype(np.int64))
    return buffer.getvalue()


VALID_NPZ = {False: _npz(False), True: _npz(True)}


@FUZZ
@given(compressed=st.booleans(), hurt=damages)
def test_npz_reader_on_damaged_files(compressed, hurt):
    blob = VALID_NPZ[compressed]
    dataset = read_or_our_error(load_npz, damage(blob, hurt[0] % (len(blob) + 1), hurt[1]), "data.npz")
    if dataset is not None:
        assert dataset.images.dtype == torch.uint8 and dataset.images.shape[1:] == (28, 28)


@FUZZ
@given(payload=st.binary(max_size=2000), zip_header=st.booleans())
def test_npz_reader_on_random_bytes(payload, zip_header):
    read_or_our_error(load_npz, (b"PK\x03\x04" if zip_header else b"") + payload, "data.npz")


VALID_PNG = png_bytes(_IMAGES[0])


def _read_folder_with(path: Path):
    return load_image_folder(path.parent)


@FUZZ
@given(hurt=damages, random_bytes=st.one_of(st.none(), st.binary(max_size=2000)))
def test_image_folder_reader_on_damaged_images(hurt, random_bytes):
    payload = random_bytes if random_bytes is not None else damage(VALID_PNG, hurt[0] % (len(VALID_PNG) + 1),
                                                                   hurt[1])
    dataset = read_or_our_error(_read_folder_with, payload, "digit.png")
    if dataset is not None:
        assert dataset.images.shape == (1, 28, 28)


# ------------------------------------------------------------------------------------------ checkpoints

VALID_CHECKPOINT = hostile.saved(hostile.tiny_state())  # a tiny real model's complete checkpoint, 30 KB


def test_the_small_checkpoint_is_valid():
    state = read_or_our_error(load_checkpoint, VALID_CHECKPOINT, "x.ckpt")
    assert state is not None and state["iteration"] == 2


@FUZZ
@given(hurt=damages)
def test_checkpoint_loader_on_damaged_checkpoints(hurt):
    blob = VALID_CHECKPOINT
    state = read_or_our_error(load_checkpoint, damage(blob, hurt[0] % (len(blob) + 1), hurt[1]), "x.ckpt")
    if state is not None:
        assert isinstance(state["G"], dict)


@FUZZ
@given(payload=st.binary(max_size=4000), zip_header=st.booleans())
def test_checkpoint_loader_on_random_bytes(payload, zip_header):
    read_or_our_error(load_checkpoint, (b"PK\x03\x04" if zip_header else b"") + payload, "x.ckpt")


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70)
                           | st.floats(allow_subnormal=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=6)
FIELD_NAMES = sorted({name for section in RunConfig().to_dict().values() if isinstance(section, dict)
                      for name in section})


@settings(FUZZ, max_examples=200)
@given(sections=st.dictionaries(st.sampled_from(["model", "data", "train", "other"]),
                                st.one_of(json_values, st.dictionaries(st.sampled_from(FIELD_NAMES), json_values,
                                                                       max_size=4)), max_size=3))
def test_checkpoint_config_is_checked(sections):
    """A checkpoint's config is untrusted too: any values at all give a config or MnistGanError."""
    with time_limit(LIMIT_S):
        try:
            config = config_from_checkpoint({"config": sections}, "x.ckpt")
        except MnistGanError:
            return
    assert isinstance(config, RunConfig)
    if config.model.z_dim <= 256:  # building is the slow part; small models show it accepts what passed
        with time_limit(LIMIT_S):
            try:
                build_models(config.model, "x.ckpt")
            except MnistGanError:
                pass


def _small_export() -> bytes:
    from safetensors.torch import save

    metadata = {"format": "mnist-gan-generator", "format_version": "1", "iteration": "2",
                "model_config": json.dumps({"z_dim": 100})}
    return save({"project.0.weight": torch.zeros(3, 2)}, metadata=metadata)


VALID_EXPORT = _small_export()


@settings(FUZZ, max_examples=60)
@given(hurt=damages, random_bytes=st.one_of(st.none(), st.binary(max_size=2000)))
def test_export_loader_on_damaged_files(hurt, random_bytes):
    blob = VALID_EXPORT
    payload = random_bytes if random_bytes is not None else damage(blob, hurt[0] % (len(blob) + 1), hurt[1])
    # The stand-in weights never fit G: the only acceptable outcome is our error.
    assert read_or_our_error(load_exported_generator, payload, "generator.safetensors") is None


@pytest.mark.parametrize("flips", [[], [(9, 0x41)]])
def test_export_loader_sees_the_damage(flips):
    """Sanity check for the fuzzing above: the undamaged export fails only at the weights."""
    with pytest.raises(MnistGanError, match="weights do not fit|not a readable safetensors"):
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "g.safetensors"
            path.write_bytes(damage(VALID_EXPORT, len(VALID_EXPORT), flips))
            load_exported_generator(path)


# ------------------------------------------------------------------------------------------ hostile inputs
# Small files built to hang a reader or make it allocate gigabytes (benchmarks/hostile_files.py builds them). Each is
# read under a time limit and an address-space limit, so a regression fails here instead of taking the machine.

MEMORY_HEADROOM = 768 * 2**20  # address space a reader may add while reading one hostile input
PEAK_GROWTH_LIMIT = 256 * 2**20  # resident memory the CLI may add on one rejected input (it starts at ~230 MB)
CLI_LIMIT_S = 60  # seconds for one CLI run on a hostile input (it takes well under 1 s; the margin is for load)


def _vm_size() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmSize:")[1].split()[0]) * 1024


@contextlib.contextmanager
def memory_limit(headroom: int = MEMORY_HEADROOM):
    """Cap this process's address space at its current size plus headroom: a reader that tries to allocate
    gigabytes gets MemoryError (which the assertions below tell from a refusal) instead of the machine's RAM."""
    if not Path("/proc/self/status").exists():  # not Linux: the time limits still hold
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def refused(read, path: Path, seconds: float = LIMIT_S) -> str:
    """Read path under the time and memory limits; return the one-line MnistGanError it must raise."""
    with time_limit(seconds), memory_limit():
        try:
            read(path)
        except MnistGanError as error:
            message = str(error)
        else:
            raise AssertionError(f"{path.name} was accepted")
    assert "\n" not in message and len(message) < 600, message
    assert "memory" not in message.lower() and "MemoryError" not in message, message  # a refusal, not a crash
    return message


def run_cli(argv: list, seconds: float = CLI_LIMIT_S) -> tuple[int, str, int]:
    """Run `mnist-gan ARGV` in a forked child under an address-space limit and a time limit.

    Returns (exit status, stderr, growth of the child's peak resident memory in bytes). A fork, not a fresh
    interpreter: importing torch takes 5-15 s on a loaded machine, forking 10 ms; the child runs the real entry
    point all the same.
    """
    import json as json_module

    from mnist_gan.cli.parser import main

    with tempfile.TemporaryDirectory() as directory:
        report = Path(directory) / "report.json"
        limit = _vm_size() + MEMORY_HEADROOM
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            try:
                resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
                torch.set_num_threads(1)
                try:
                    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current resident size
                    start = _status_kb("VmHWM")
                except OSError:  # no reset here: the address-space limit alone bounds the child
                    start = None
                err = io.StringIO()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    try:
                        status = main([str(arg) for arg in argv])
                    except SystemExit as exit_:
                        status = exit_.code
                    except BaseException as error:  # a traceback in the real CLI
                        status, _ = 1, err.write(f"{type(error).__name__}: {error}")
                report.write_text(json_module.dumps({"status": status, "stderr": err.getvalue(),
                                                     "growth": start and (_status_kb("VmHWM") - start) * 1024}))
            finally:
                os._exit(0)
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - started > seconds:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"mnist-gan {' '.join(map(str, argv))} ran past {seconds} s")
            time.sleep(0.02)
        result = json_module.loads(report.read_text())
    return result["status"], result["stderr"], result["growth"]


def _status_kb(field: str) -> int:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="measures memory through Linux's /proc")
@pytest.mark.parametrize("kind", hostile.CASES)
def test_cli_refuses_hostile_input_quickly_in_little_memory(kind, tmp_path, small_npz):
    argv, words = hostile.build_case(kind, tmp_path, small_npz)
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()) < 10 * 2**20
    status, stderr, growth = run_cli(argv)
    lines = stderr.strip().splitlines()
    assert status == 2 and lines and lines[-1].startswith("mnist-gan: error: ") and words in lines[-1], stderr
    assert len(lines[-1]) < 600
    assert (growth or 0) < PEAK_GROWTH_LIMIT, f"peak resident memory grew {growth / 2**20:.0f} MiB"
    assert not (tmp_path / "out.png").exists()


def _place(state: dict, field: str, value) -> dict:
    """state with `value` put at a field path such as "config/model/z_dim" (the leaf is created when missing)."""
    *parents, leaf = field.split("/")
    target = state
    for key in parents:
        target = target[key]
    target[leaf] = value
    return state


def _cyclic(kind: str):
    container = [] if kind == "list" else {}
    container.append(container) if kind == "list" else container.update(me=container)
    return container


PLACES = ["iteration", "epoch", "format_version", "config", "config/model", "config/model/z_dim", "config/train/lr",
          "config/preset", "G", "G/net.0.weight", "D", "G_ema", "optimizer_g", "optimizer_g/param_groups", "rng",
          "rng/noise", "extra"]
nested = st.one_of(
    st.builds(hostile.laughs, depth=st.integers(1, 60), fanout=st.integers(1, 12),
              kind=st.sampled_from([list, tuple, dict])),
    st.sampled_from(["list", "dict"]).map(_cyclic),
    st.integers(1, 5000).map(lambda digits: 10 ** digits),  # integers too wide to format quickly
    st.integers(0, 3).map(lambda megabytes: "x" * (megabytes * 2**20 + 1)))  # text long enough to flood a message


@settings(FUZZ, max_examples=80)
@given(place=st.sampled_from(PLACES), value=nested)
def test_checkpoint_with_nested_shared_structures(place, value):
    """Shared nesting ("billion laughs"), cycles, huge integers and long text anywhere in a checkpoint: loading
    it and building its models answers within the limits, with a short one-line error or a usable state."""
    from mnist_gan.run.checkpoint import models_from_checkpoint

    blob = hostile.saved(_place(hostile.tiny_state(), place, value))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "x.ckpt"
        path.write_bytes(blob)
        with time_limit(LIMIT_S), memory_limit():
            try:
                models_from_checkpoint(load_checkpoint(path), path)
            except MnistGanError as error:
                message = str(error)
                assert "\n" not in message and len(message) < 600, message[:2000]
                assert "memory" not in message.lower(), message


deep_json = st.one_of(
    st.integers(1, 200_000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 200_000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.integers(1, 20_000).map(lambda digits: '{"z_dim": 1' + "0" * digits + "}"),
    # no subnormal floats: a training run earlier in this process flushes them to zero (gan.device), which
    # hypothesis refuses to draw under
    st.builds(lambda key, value: json.dumps({key: value}), st.sampled_from(["z_dim", "width", "num_classes"]),
              st.one_of(st.integers(-2**80, 2**80), st.floats(allow_subnormal=False), st.text(max_size=20),
                        st.none())))


@settings(FUZZ, max_examples=60)
@given(model_config=deep_json, version=st.one_of(st.just("1"), st.text(max_size=6)))
def test_export_with_hostile_metadata(model_config, version):
    """Deep JSON, huge numbers and any text for format_version in an export's metadata: a one-line error
    (the stand-in weights never fit), never a traceback, a hang or a large allocation."""
    from safetensors.torch import save

    blob = save({"net.0.weight": torch.zeros(3, 2)},
                metadata={"format": "mnist-gan-generator", "format_version": version, "model_config": model_config})
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "g.safetensors"
        path.write_bytes(blob)
        refused(load_exported_generator, path)


@settings(FUZZ, max_examples=60)
@given(architecture=st.sampled_from(["seed", "dcgan"]), z_dim=st.integers(1, 10**12), width=st.integers(1, 10**9),
       num_classes=st.integers(2, 10**9), conditional=st.booleans(), spectral_norm=st.booleans())
def test_export_declaring_a_huge_model_is_refused_before_it_is_built(architecture, z_dim, width, num_classes,
                                                                     conditional, spectral_norm):
    """Whatever model the metadata declares, the tiny weights are checked against it on the meta device first:
    refused within the limits unless the declared model is the tiny one."""
    config = dataclasses.replace(hostile.TINY_MODEL, architecture=architecture, z_dim=z_dim, width=width,
                                 num_classes=num_classes, conditional=conditional and architecture == "dcgan",
                                 spectral_norm=spectral_norm)
    with tempfile.TemporaryDirectory() as directory:
        path = hostile.huge_z_dim_export(Path(directory) / "g.safetensors", z_dim)
        hostile._with_metadata(path, model_config=json.dumps(dataclasses.asdict(config)))
        if (config.architecture, config.z_dim, config.width, config.conditional) == ("dcgan", 2, 1, False):
            return
        message = refused(load_exported_generator, path)
        assert any(reason in message for reason in ("do not fit this architecture", "cannot build the model",
                                                    "invalid model config")), message


@settings(FUZZ, max_examples=40)
@given(declared=st.integers(1, 2000), inflated=st.integers(0, 3 * 2**30), compressed=st.booleans())
def test_idx_bomb_is_read_no_further_than_its_header(declared, inflated, compressed):
    """An IDX file whose header declares `declared` images and whose body is `inflated` bytes (a gzip of zeros
    when compressed): read when the two agree, refused otherwise, never inflated past the declaration."""
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (declared, 28, 28))
    body = min(inflated, 2**20) if not compressed else inflated  # a raw file is as large as it says: keep it small
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "train-images-idx3-ubyte.gz"
        path.write_bytes(hostile.gzip_zeros(header, body) if compressed else header + bytes(body))
        if body == declared * 784:
            with time_limit(LIMIT_S), memory_limit():
                assert read_idx(path).shape == (declared, 28, 28)
        else:
            refused(read_idx, path)


@settings(FUZZ, max_examples=40)
@given(rows=st.integers(0, 10**7), inflated=st.integers(0, 3 * 2**30), dtype=st.sampled_from(["|u1", "<f4", "<f8"]),
       labels=st.integers(0, 10**7), deflated=st.booleans())
def test_npz_bomb_is_refused_from_its_headers(rows, inflated, dtype, labels, deflated):
    """An npz whose x_train header declares `rows` images of `dtype` while its member inflates to `inflated`
    bytes: refused before its data is read unless everything agrees (and then the data is small)."""
    itemsize = int(dtype[-1])
    header = hostile.npy_header((rows, 28, 28), dtype)
    data = inflated if deflated else min(inflated, 2**20)
    members = [("x_train.npy", header, data, deflated),
               ("y_train.npy", hostile.npy_header((labels,)) + bytes(min(labels, 2**20)), 0, False)]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.npz"
        path.write_bytes(hostile.zip_archive(members))
        small = not deflated or data <= 64 * 2**20  # past 64 MiB, zeros inflate too far to be read
        if data == rows * 784 * itemsize and labels == rows and 0 < rows <= 10**6 and small:
            with time_limit(LIMIT_S), memory_limit():
                assert len(load_npz(path)) == rows
        else:
            refused(load_npz, path)


@settings(FUZZ, max_examples=30)
@given(inflated=st.integers(0, 3 * 2**30), member=st.sampled_from(["data/0", "data.pkl", "byteorder", "extra"]))
def test_zip_bomb_checkpoint_is_refused_from_its_directory(inflated, member):
    """A real checkpoint with one zip member replaced by (or added as) `inflated` deflated zeros: loaded only when
    the member is harmless, else refused from the zip directory before torch reads it."""
    with zipfile.ZipFile(io.BytesIO(VALID_CHECKPOINT)) as archive:
        members = [(info.filename, archive.read(info), 0, False) for info in archive.infolist()]
    prefix = members[0][0].split("/")[0]
    replaced = [m for m in members if m[0] != f"{prefix}/{member}"]
    replaced.append((f"{prefix}/{member}", b"", inflated, True))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "x.ckpt"
        path.write_bytes(hostile.zip_archive(replaced))
        if inflated > 64 * 2**20 or member == "data.pkl":
            refused(load_checkpoint, path)
        elif member == "extra":
            with time_limit(LIMIT_S), memory_limit():
                assert load_checkpoint(path)["iteration"] == 2
        else:  # a record torch reads: loaded or refused, within the limits
            with time_limit(LIMIT_S), memory_limit():
                try:
                    load_checkpoint(path)
                except MnistGanError as error:
                    assert "\n" not in str(error) and "memory" not in str(error).lower()


@settings(FUZZ, max_examples=60)
@given(dtype=st.sampled_from([np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64]),
       data=st.data())
def test_labels_of_any_integer_dtype(dtype, data):
    """Labels are class numbers below MAX_CLASSES: anything else is refused, naming the true value (a uint64
    label of 2**64 - 1 is not reported as -1)."""
    from mnist_gan.data.images import MAX_CLASSES

    info = np.iinfo(dtype)
    labels = np.array(data.draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=1, max_size=8)), dtype)
    with tempfile.TemporaryDirectory() as directory:
        path = hostile.npz_of(Path(directory) / "d.npz", x_train=np.zeros((len(labels), 28, 28), np.uint8),
                              y_train=labels)
        if 0 <= int(labels.min()) and int(labels.max()) < MAX_CLASSES:
            dataset = load_npz(path)
            assert dataset.labels.tolist() == [int(v) for v in labels]
            assert dataset.num_classes == int(labels.max()) + 1
        else:
            message = refused(load_npz, path)
            assert f"{int(labels.min())}..{int(labels.max())}" in message


# ------------------------------------------------------------------------------------------ non-regular files

def _non_regular(kind: str, path: Path) -> Path:
    import socket

    if kind == "FIFO":
        return hostile.fifo(path)
    if kind == "/dev/zero":
        return hostile.dev_zero_link(path)
    if kind == "directory":
        path.mkdir()
        return path
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))  # the socket file stays after the socket is closed
    server.close()
    return path


def _read_classifier(path: Path):
    from mnist_gan.evaluation.classifier import load_classifier

    return load_classifier(path)


def _read_images(path: Path):
    from mnist_gan.data.arrays import load_images

    return load_images(path)


READERS = {"read_idx": (read_idx, "t10k-images-idx3-ubyte.gz"), "load_npz": (load_npz, "d.npz"),
           "load_checkpoint": (load_checkpoint, "x.ckpt"),
           "load_exported_generator": (load_exported_generator, "g.safetensors"),
           "load_classifier": (_read_classifier, "c.safetensors"), "load_images": (_read_images, "i.npy")}


@pytest.mark.parametrize("kind", ["FIFO", "/dev/zero", "directory", "socket"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_readers_refuse_non_regular_files_at_once(tmp_path, reader, kind):
    read, name = READERS[reader]
    path = _non_regular(kind, tmp_path / name)
    started = time.monotonic()
    message = refused(read, path, seconds=5)
    assert time.monotonic() - started < 2
    assert "not a regular file" in message and str(path) in message


@settings(FUZZ, max_examples=40)
@given(field=st.sampled_from(["num_classes", "width", "n_train", "n_heldout", "heldout_accuracy", "seconds",
                              "version"]),
       value=st.one_of(st.integers(-2**70, 2**70).map(str), st.text(max_size=30),
                       st.sampled_from(["99999999999", "\u0661\u0660", "1e309", "nan", "-0", "\u00b2"])))
def test_cached_classifier_with_absurd_metadata(field, value):
    """A cached classifier whose metadata holds any text in any field: loaded (when the text still means what
    it should) or refused in one line, never a traceback or a huge model."""
    from safetensors.torch import save

    from mnist_gan.evaluation.classifier import FORMAT, FeatureClassifier, load_classifier

    metadata = {"format": FORMAT, "version": "1", "fingerprint": "f" * 64, "num_classes": "10", "width": "32",
                "heldout_accuracy": "0.9", "n_train": "100", "n_heldout": "20", "seconds": "1.0", field: value}
    blob = save(dict(CLASSIFIER_WEIGHTS), metadata=metadata)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.safetensors"
        path.write_bytes(blob)
        with time_limit(LIMIT_S), memory_limit():
            try:
                classifier = load_classifier(path)
            except MnistGanError as error:
                assert "\n" not in str(error) and len(str(error)) < 600
                return
    assert isinstance(classifier.model, FeatureClassifier)
    assert classifier.model.head[-1].out_features == 10


def _classifier_weights() -> dict:
    from mnist_gan.evaluation.classifier import FeatureClassifier

    return {name: tensor.contiguous() for name, tensor in FeatureClassifier(10, 32).state_dict().items()}


CLASSIFIER_WEIGHTS = _classifier_weights()


@pytest.mark.parametrize("shape", [(10**4000, 10**4000, 28), (2**64, 2**64, 2**64), (-1, 28, 28), (3,) * 9])
def test_npy_header_with_forged_dimensions(tmp_path, shape):
    """Dimensions thousands of digits long, negative or too many: one short line, never a formatting error."""
    path = tmp_path / "images.npy"
    path.write_bytes(hostile.npy_header(shape) + bytes(100))
    assert "images.npy" in refused(_read_images, path)
