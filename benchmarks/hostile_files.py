"""Small hostile files, each made in well under a second and under 10 MB: decompression bombs, "billion laughs"
structures, forged headers, non-regular files. Shared by tests/test_fuzz.py and benchmarks/hostile_inputs.py;
it lives here because a benchmark imports the package and its neighbours only, never tests/.

Bombs are written by hand (raw deflate blocks of zeros repeated, CRC-32 of the zeros computed algebraically), so
a file that inflates to gigabytes costs nothing to make and is valid down to its checksums.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from mnist_gan.gan.weights import build_models
from mnist_gan.run.generator_file import export_generator
from mnist_gan.settings.config import ModelConfig, RunConfig

MIB = 2**20
GIB = 2**30
TINY_MODEL = ModelConfig(architecture="dcgan", z_dim=2, width=1, self_condition=0, pack=1)  # real networks, a few KB


# ------------------------------------------------------------------------------------------ zeros, cheaply

def _apply(columns: list[int], value: int) -> int:
    result, bit = 0, 0
    while value:
        if value & 1:
            result ^= columns[bit]
        value >>= 1
        bit += 1
    return result


def crc32_zeros(count: int, crc: int = 0) -> int:
    """zlib.crc32(bytes(count), crc), in milliseconds for any count: crc -> crc32(block, crc) is affine over
    GF(2), so k blocks are that map raised to the k-th power (by squaring)."""
    block = bytes(64 * 1024)
    blocks, rest = divmod(count, len(block))
    offset = zlib.crc32(block, 0)
    power = ([zlib.crc32(block, 1 << i) ^ offset for i in range(32)], offset)  # (linear part's columns, offset)
    result = ([1 << i for i in range(32)], 0)  # the identity
    while blocks:
        if blocks & 1:  # result = power o result
            result = ([_apply(power[0], c) for c in result[0]], _apply(power[0], result[1]) ^ power[1])
        power = ([_apply(power[0], c) for c in power[0]], _apply(power[0], power[1]) ^ power[1])
        blocks >>= 1
    return zlib.crc32(bytes(rest), _apply(result[0], crc) ^ result[1])


def deflate_zeros(prefix: bytes, zeros: int) -> bytes:
    """A raw deflate stream of prefix followed by `zeros` zero bytes (about 1 KB per MiB of zeros)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(zeros, MIB)
    # After a full flush the compressor forgets what came before: each MiB of zeros compresses to the same bytes.
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH) if blocks else b""
    tail = compressor.compress(bytes(rest)) + compressor.flush(zlib.Z_FINISH)
    return head + block * blocks + tail


def gzip_zeros(prefix: bytes, zeros: int) -> bytes:
    """A gzip file of prefix followed by `zeros` zero bytes."""
    size = len(prefix) + zeros
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + deflate_zeros(prefix, zeros)
            + struct.pack("<II", crc32_zeros(zeros, zlib.crc32(prefix)), size & 0xFFFFFFFF))


def zip_archive(members: list[tuple[str, bytes, int, bool]]) -> bytes:
    """A zip of members (name, prefix, zeros after it, deflated?), written by hand (no zip64: under 4 GiB each)."""
    body, directory = io.BytesIO(), io.BytesIO()
    for name, prefix, zeros, deflated in members:
        raw_name = name.encode()
        size = len(prefix) + zeros
        data = deflate_zeros(prefix, zeros) if deflated else prefix + bytes(zeros)
        crc = crc32_zeros(zeros, zlib.crc32(prefix))
        method = zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED
        offset = body.tell()
        body.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size,
                               len(raw_name), 0) + raw_name + data)
        directory.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data),
                                    size, len(raw_name), 0, 0, 0, 0, 0, offset) + raw_name)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), directory.tell(), body.tell(), 0)
    return body.getvalue() + directory.getvalue() + end


def npy_header(shape: tuple, dtype: str = "|u1") -> bytes:
    """The bytes np.save writes before an array's data."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


# ------------------------------------------------------------------------------------------ checkpoints

def tiny_state() -> dict:
    """A complete checkpoint state of a tiny real model (load_checkpoint accepts it)."""
    G, D = build_models(TINY_MODEL, "tiny")
    return {"format_version": 1, "iteration": 2, "epoch": 0, "config": RunConfig(model=TINY_MODEL).to_dict(),
            "G": G.state_dict(), "D": D.state_dict(),
            "optimizer_g": {"state": {0: {"momentum_buffer": torch.zeros(6)}}, "param_groups": [{"lr": 0.1}]},
            "optimizer_d": {"state": {}, "param_groups": []},
            "rng": {"noise": torch.Generator().get_state(), "torch": torch.get_rng_state()}}


def saved(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def laughs(depth: int, fanout: int = 2, kind: type = list):
    """Nested containers, each holding `fanout` references to the one below: depth levels, fanout**depth leaves,
    pickled in a few bytes per level."""
    value = 0
    for _ in range(depth):
        value = kind([value] * fanout) if kind is not dict else {str(i): value for i in range(fanout)}
    return value


def billion_laughs_checkpoint(path: Path, depth: int = 40) -> Path:
    """A checkpoint whose iteration is 2**40 shared references: formatting it whole never ends."""
    state = tiny_state()
    state["iteration"] = laughs(depth)
    path.write_bytes(saved(state))
    return path


def zip_bomb_checkpoint(path: Path, inflated: int = 5 * GIB // 2) -> Path:
    """A real checkpoint whose first tensor's zip member is replaced by `inflated` deflated zeros (~1 KB/MiB)."""
    with zipfile.ZipFile(io.BytesIO(saved(tiny_state()))) as archive:
        members = [(info.filename, archive.read(info), 0, False) for info in archive.infolist()]
    target = next(i for i, m in enumerate(members) if m[0].endswith("/data/0"))
    members[target] = (members[target][0], b"", inflated, True)
    path.write_bytes(zip_archive(members))
    return path


def huge_z_dim_export(path: Path, z_dim: int = 8_000_000) -> Path:
    """A generator export whose metadata declares a z_dim making a 3 GB model (8,000,000 x 98 weights in its
    first layer), over a tiny model's weights."""
    G = build_models(TINY_MODEL, "tiny")[0]
    export_generator(G, TINY_MODEL, path, 1)
    return _with_metadata(path, model_config=json.dumps({**json.loads(_metadata(path)["model_config"]),
                                                         "z_dim": z_dim}))


def nan_export(path: Path) -> Path:
    """A generator export of the tiny model with every weight NaN."""
    G = build_models(TINY_MODEL, "tiny")[0]
    with torch.no_grad():
        for parameter in G.parameters():
            parameter.fill_(float("nan"))
    export_generator(G, TINY_MODEL, path, 1)
    return path


def export_with_version(path: Path, version: str) -> Path:
    """The tiny model's export with format_version replaced (e.g. by a non-ASCII digit)."""
    export_generator(build_models(TINY_MODEL, "tiny")[0], TINY_MODEL, path, 1)
    return _with_metadata(path, format_version=version)


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def _with_metadata(path: Path, **changes: str) -> Path:
    from safetensors.torch import load_file, save_file

    metadata = {**_metadata(path), **changes}
    save_file(load_file(str(path)), str(path), metadata=metadata)
    return path


# ------------------------------------------------------------------------------------------ data

def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def gzip_idx_bomb(directory: Path, images: int = 10, inflated: int = 5 * GIB) -> Path:
    """An IDX directory whose images file's header says `images` images but whose gzip inflates to `inflated`."""
    directory.mkdir(parents=True, exist_ok=True)
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (images, 28, 28))
    (directory / "train-images-idx3-ubyte.gz").write_bytes(gzip_zeros(header, inflated - len(header)))
    labels = np.zeros(images, np.uint8)
    (directory / "train-labels-idx1-ubyte.gz").write_bytes(gzip_zeros(idx_bytes(labels, 2049), 0))
    return directory


def npz_bomb(path: Path, images: int = 4_000_000) -> Path:
    """An npz whose x_train declares `images` images (3.1 GB of deflated zeros) over 10 labels."""
    path.write_bytes(zip_archive([("x_train.npy", npy_header((images, 28, 28)), images * 784, True),
                                  ("y_train.npy", npy_header((10,)) + bytes(10), 0, False)]))
    return path


def npz_member_bomb(path: Path, inflated: int = 3 * GIB) -> Path:
    """An npz whose 'images' header declares 10 images but whose member inflates to `inflated` bytes."""
    path.write_bytes(zip_archive([("images.npy", npy_header((10, 28, 28)), inflated, True)]))
    return path


def npz_of(path: Path, **arrays: np.ndarray) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def crc_corrupt_npz(path: Path) -> Path:
    """A stored npz of 8 images with one data byte changed: only the member's CRC-32 tells."""
    blob = bytearray(npz_of(path, images=np.full((8, 28, 28), 7, np.uint8)).read_bytes())
    blob[blob.index(b"\x07" * 100) + 50] = 8
    path.write_bytes(bytes(blob))
    return path


# ------------------------------------------------------------------------------------------ non-regular files

def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def dev_zero_link(path: Path) -> Path:
    """A symlink to /dev/zero: endless zeros to whoever reads it."""
    path.symlink_to("/dev/zero")
    return path


# ------------------------------------------------------------------------------------------ the CLI on each

def _generate(path: Path, root: Path) -> list:
    return ["generate", path, "--out", root / "out.png"]


def _classifier(data: Path, root: Path) -> list:
    return ["classifier", "--data", data, "--cache-dir", root / "cache"]


def _labels_npz(path: Path, labels: np.ndarray) -> Path:
    return npz_of(path, x_train=np.zeros((len(labels), 28, 28), np.uint8), y_train=labels)


def _run_with_fifo(root: Path) -> Path:
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    fifo(run / "checkpoints" / "iter_00000002.ckpt")
    return run


def _fifo_classifier(small_npz: Path, cache: Path) -> Path:
    """A cache directory whose classifier for small_npz is a FIFO."""
    from mnist_gan.data.arrays import load_npz
    from mnist_gan.evaluation.classifier import cache_path, fingerprint, split

    dataset = load_npz(small_npz)
    path = cache_path(dataset, fingerprint(split(dataset), dataset.num_classes), cache)
    path.parent.mkdir(parents=True)
    fifo(path)
    return cache


# name -> build(root, small labelled npz) -> (CLI arguments, words its one-line error must hold)
CASES = {
    "billion-laughs checkpoint": lambda root, _: (
        _generate(billion_laughs_checkpoint(root / "b.ckpt"), root), "damaged checkpoint (nested more than"),
    "zip-bomb checkpoint": lambda root, _: (
        _generate(zip_bomb_checkpoint(root / "z.ckpt"), root), "likely decompression bomb"),
    "gzip IDX bomb": lambda root, _: (
        _classifier(gzip_idx_bomb(root / "idx"), root), "inflates past the 7,840 bytes its header declares"),
    "npz bomb (classifier)": lambda root, _: (
        _classifier(npz_bomb(root / "n.npz"), root), "likely decompression bomb"),
    "npz bomb (evaluate)": lambda root, _: (["evaluate", npz_bomb(root / "n.npz")], "likely decompression bomb"),
    "npz member bomb": lambda root, _: (["evaluate", npz_member_bomb(root / "m.npz")], "likely decompression bomb"),
    "safetensors with a huge z_dim": lambda root, _: (
        _generate(huge_z_dim_export(root / "h.safetensors"), root), "--z-dim must be at most"),
    "FIFO checkpoint": lambda root, _: (_generate(fifo(root / "f.ckpt"), root), "a named pipe"),
    "FIFO export": lambda root, _: (_generate(fifo(root / "f.safetensors"), root), "a named pipe"),
    "FIFO in a run's checkpoints": lambda root, _: (_generate(_run_with_fifo(root), root), "a named pipe"),
    "FIFO npz to evaluate": lambda root, _: (["evaluate", fifo(root / "f.npz")], "a named pipe"),
    "FIFO data set": lambda root, _: (_classifier(fifo(root / "f.npz"), root), "a named pipe"),
    "FIFO cached classifier": lambda root, small_npz: (
        ["classifier", "--data", small_npz, "--cache-dir", _fifo_classifier(small_npz, root / "cache")],
        "a named pipe"),
    "/dev/zero as a checkpoint": lambda root, _: (_generate(dev_zero_link(root / "z.ckpt"), root),
                                                  "a character device"),
    "/dev/zero as images": lambda root, _: (["evaluate", dev_zero_link(root / "z.npy")], "a character device"),
    "export with NaN weights": lambda root, _: (
        _generate(nan_export(root / "nan.safetensors"), root), "holds NaN or infinite values"),
    "non-ASCII format_version": lambda root, _: (
        _generate(export_with_version(root / "v.safetensors", "\u0661"), root),
        "export format version '\u0661' is not a number"),
    "empty array to evaluate": lambda root, _: (
        ["evaluate", npz_of(root / "e.npz", images=np.zeros((0, 28, 28), np.uint8))], "holds no images"),
    "object array to evaluate": lambda root, _: (
        ["evaluate", npz_of(root / "o.npz", images=np.array([None] * 4, dtype=object))], "Python objects"),
    "CRC-corrupt npz to evaluate": lambda root, _: (
        ["evaluate", crc_corrupt_npz(root / "c.npz")], "Bad CRC-32"),
    "labels of 2**64 - 1": lambda root, _: (
        _classifier(_labels_npz(root / "u.npz", np.full(20, 2**64 - 1, np.uint64)), root),
        "found 18446744073709551615..18446744073709551615"),
    "a label of 10**9": lambda root, _: (
        _classifier(_labels_npz(root / "l.npz", np.arange(20) * 10**8), root), "found 0..1900000000"),
}


def build_case(name: str, root: Path, small_npz: Path) -> tuple[list, str]:
    """(CLI arguments, words its one-line error must hold) for the hostile input `name`, built under root."""
    return CASES[name](root, small_npz)
