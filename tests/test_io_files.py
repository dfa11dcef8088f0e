"""Atomic writes: of writers racing to create one file, one wins whole and the others are refused."""

from __future__ import annotations

import threading

from mnist_gan.errors import MnistGanError
from mnist_gan.io.files import atomic_write_bytes


def test_racing_writers_one_wins_whole(tmp_path):
    out = tmp_path / "x.bin"
    results = {}

    def write(index):
        try:
            atomic_write_bytes(out, bytes([index]) * 100_000, replace=False)
            results[index] = "won"
        except MnistGanError as error:
            results[index] = str(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, result in results.items() if result == "won"]
    assert len(winners) == 1 and out.read_bytes() == bytes(winners) * 100_000
    assert all("already exists" in r for i, r in results.items() if i not in winners)
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]
