"""The named data sets: where each one's files come from (checksums, mirrors, offline copies), its class names, and
the checksummed downloads into the cache, EMNIST's one large archive included.

Checksums: MD5 of the files as their publishers serve them, the same sums torchvision's datasets/mnist.py checks
(MNIST, FASHION, KMNIST; EMNIST's gzip.zip). Offline copies: Debian's `dataset-fashion-mnist` package installs
Fashion-MNIST under /usr/share/datasets/fashion-mnist; neither Debian nor PyPI ships KMNIST or EMNIST (PyPI's
`emnist` package downloads the same archive at run time), so those two come from the download (then the cache).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import string
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from mnist_gan.errors import MnistGanError, clip
from mnist_gan.io.files import atomic_write_bytes, atomic_write_text
from mnist_gan.io.untrusted import CHUNK_BYTES, check_zip, open_regular

logger = logging.getLogger(__name__)

# A downloaded file: MNIST's largest is 9.9 MB, Fashion-MNIST's 26 MB (a mirror serving more is not serving them).
MAX_DOWNLOAD_BYTES = 64 * 2**20
# EMNIST's gzip.zip, all six EMNIST sets in one archive, is 562 MB; it is streamed to disk, never held in memory.
MAX_ARCHIVE_BYTES = 640 * 2**20
# One file taken from an archive: EMNIST letters' largest holds 98 MB of pixels before compression.
MAX_MEMBER_BYTES = 128 * 2**20
DOWNLOAD_TIMEOUT_S = 5.0
MANIFEST = "verified.md5"  # sums of files taken from a verified archive, as `md5sum` writes them

DIGITS = tuple(string.digits)
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
KANA = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")  # KMNIST's ten hiragana, romanised
LETTERS = tuple(string.ascii_lowercase)  # EMNIST letters: upper and lower case merged, labels 1-26 as published

# The standard names of an IDX directory's four files, under which every named set is cached.
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")


def _idx(*values: str | None, reverse: bool = False) -> dict:
    """{IDX file name: value} for the four IDX_FILES in their order; reverse: {value: IDX file name}."""
    pairs = zip(IDX_FILES, values, strict=True)
    return {value: name for name, value in pairs} if reverse else dict(pairs)


SOURCES: dict[str, dict] = {
    "mnist": {
        "files": _idx("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                      "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        "local": [], "classes": DIGITS,
    },
    "fashion-mnist": {
        "files": _idx("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                      "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "local": ["/usr/share/datasets/fashion-mnist"], "classes": FASHION,
    },
    "kmnist": {
        "files": _idx("bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
                      "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"),
        "mirrors": ["http://codh.rois.ac.jp/kmnist/dataset/kmnist/"],
        "local": [], "classes": KANA,
    },
    "emnist-letters": {
        # No sums of the single files are published: the archive's is checked, and the four letters files taken
        # from it are recorded in MANIFEST beside them, so that the cache is checked on every later load.
        "files": _idx(None, None, None, None),
        "archive": {"url": "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/gzip.zip",
                    "md5": "58c8d27c78d21e728a6bc7b3cc06412e",
                    "members": _idx(*(f"gzip/emnist-letters-{split}-{kind}-ubyte.gz" for split in ("train", "test")
                                      for kind in ("images-idx3", "labels-idx1")), reverse=True)},
        "mirrors": [], "local": [], "classes": LETTERS,
        "first_label": 1,  # labels 1-26 as published: shifted to 0-25
        "transposed": True,  # images stored column by column: transposed back to MNIST's orientation
    },
}


def class_names(name: str) -> tuple[str, ...] | None:
    """The class names of the named set `name` (label i is names[i]), or None when `name` is not one."""
    spec = SOURCES.get(name)
    return None if spec is None else tuple(spec.get("classes") or ())


# --------------------------------------------------------------------------------------------- checksums

def md5_of(path: Path, max_bytes: int = MAX_MEMBER_BYTES) -> str:
    digest = hashlib.md5()
    with open_regular(path, "cached download", max_bytes) as (handle, _):
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def expected_sums(name: str, target: Path) -> dict[str, str] | None:
    """filename -> MD5 that the cache of `name` must match: the table's, or for files taken from an archive the
    MANIFEST written when it was verified (None when there is none, or it is damaged)."""
    files = SOURCES[name]["files"]
    if all(files.values()):
        return files
    try:
        with open_regular(target / MANIFEST, "checksum manifest", 4096) as (handle, _):
            lines = handle.read().decode("ascii").splitlines()
    except (OSError, MnistGanError, UnicodeDecodeError):
        return None
    sums = {filename: md5 for md5, filename in (line.split("  ", 1) for line in lines if line.count("  ") == 1)}
    hexadecimal = set("0123456789abcdef")
    if sorted(sums) != sorted(files) or not all(len(md5) == 32 and set(md5) <= hexadecimal for md5 in sums.values()):
        return None
    return sums


def cached(name: str, cache_dir: Path) -> Path | None:
    """The cache directory of `name` if it holds every file with the right checksum; a bad file is noted."""
    target = cache_dir / name
    sums = expected_sums(name, target) if target.is_dir() else None
    if sums is None:
        return None
    for filename, md5 in sums.items():
        path = target / filename
        if not path.is_file():
            return None
        try:
            good = md5_of(path) == md5
        except (OSError, MnistGanError):
            good = False
        if not good:
            logger.warning(f"{path} is corrupt or incomplete (checksum mismatch); not using it")
            return None
    return target


# --------------------------------------------------------------------------------------------- downloads

def _download(url: str, destination: Path, md5: str) -> None:
    """Fetch url to destination atomically, refusing data whose checksum is wrong."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        payload = response.read(MAX_DOWNLOAD_BYTES + 1)
    if len(payload) > MAX_DOWNLOAD_BYTES:
        raise OSError(f"{url} serves more than {MAX_DOWNLOAD_BYTES:,} bytes")
    digest = hashlib.md5(payload).hexdigest()
    if digest != md5:
        raise OSError(f"checksum mismatch for {url}: got {digest}, expected {md5}")
    atomic_write_bytes(destination, payload)


def ensure_downloaded(name: str, cache_dir: Path, errors: list[str] | None = None) -> Path | None:
    """Make sure the cache holds the verified IDX files of `name`; return the directory, or None if offline.

    Files already cached are checked against their checksum and fetched again when corrupt or partial. Why a
    download failed is appended to `errors` when given, else logged as a warning. The first file that no mirror
    serves ends the attempt, so an unreachable network costs one short timeout per mirror.
    """
    spec = SOURCES[name]
    target = cache_dir / name
    if os.environ.get("MNIST_GAN_OFFLINE"):
        return None
    if "archive" in spec:
        return _ensure_archive(name, target, errors)
    for filename, md5 in spec["files"].items():
        path = target / filename
        if path.exists() and md5_of(path) == md5:
            continue
        failures = []
        for mirror in spec["mirrors"]:
            try:
                _download(mirror + filename, path, md5)
                break
            except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, checksum mismatches,
                failures.append(f"{mirror}: {error}")  # and transfers cut short (IncompleteRead)
        else:
            _failed(f"{filename}, {len(failures)} mirror(s) tried; {failures[0][:200] if failures else 'none'}", errors)
            return None
    return target


def _failed(reason: str, errors: list[str] | None) -> None:
    if errors is None:
        logger.warning(f"could not download {reason}")
    else:
        errors.append(reason)


def _ensure_archive(name: str, target: Path, errors: list[str] | None) -> Path | None:
    """Stream the set's archive to disk (at most MAX_ARCHIVE_BYTES), check its MD5, take out only its own
    members under the standard IDX names, record their sums in MANIFEST and delete the archive."""
    archive = SOURCES[name]["archive"]
    tmp = None
    try:
        target.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=target, prefix=".archive.", suffix=".tmp")
        os.close(handle)
        digest = _stream(archive["url"], Path(tmp))
        if digest != archive["md5"]:
            raise OSError(f"checksum mismatch: got {digest}, expected {archive['md5']}")
        sums = _extract(Path(tmp), archive["members"], target)
    except (OSError, http.client.HTTPException, zipfile.BadZipFile, MnistGanError) as error:
        _failed(f"{archive['url']}: {clip(error, 200)}", errors)
        return None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)  # the archive is never kept: only its members are
    atomic_write_text(target / MANIFEST, "".join(f"{md5}  {filename}\n" for filename, md5 in sums.items()))
    return target


def _stream(url: str, path: Path) -> str:
    """Copy url's body into path, refusing more than MAX_ARCHIVE_BYTES; return its MD5."""
    digest, size = hashlib.md5(), 0
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(path, "wb") as out:
        while chunk := response.read(CHUNK_BYTES):
            size += len(chunk)
            if size > MAX_ARCHIVE_BYTES:
                raise OSError(f"{url} serves more than {MAX_ARCHIVE_BYTES:,} bytes")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _extract(path: Path, members: dict[str, str], target: Path) -> dict[str, str]:
    """Write the archive's `members` (member name -> file name) into target; return file name -> MD5."""
    sums = {}
    with zipfile.ZipFile(path) as archive:
        check_zip(archive, path.stat().st_size, str(path), max_members=1000, max_total=4 * MAX_ARCHIVE_BYTES)
        for member, filename in members.items():
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise OSError(f"the archive lacks {member}") from None
            if info.file_size > MAX_MEMBER_BYTES:
                raise OSError(f"{member}: {info.file_size:,} bytes is more than an IDX member can be")
            payload = archive.read(info)
            sums[filename] = hashlib.md5(payload).hexdigest()
            atomic_write_bytes(target / filename, payload)
    return sums
