"""Byte-exact round trips through the store (issue 4: "Round trip").

Every file of pydicom's test data, of the synthetic corpus and of the shared corpus when present
(``.dcm.gz`` files gunzipped, as an archive would receive them) is stored and read back; the
SHA-256 must be the original's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from duckpacs._core import Store
from duckpacs.errors import ArchiveLockedError, StorageError
from tests.store_helpers import batches, corpus_files, pydicom_files, read_original


def _round_trip(store: Store, files: list[Path]) -> None:
    for batch in batches(files, 64):
        originals = [read_original(p) for p in batch]
        locations = store.put_many(originals)
        for path, data, loc in zip(batch, originals, locations, strict=True):
            back = store.get(loc)
            assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest(), path
            assert store.meta(loc)["sha256"] == hashlib.sha256(data).hexdigest()
            assert store.sha256(loc) == hashlib.sha256(data).hexdigest()  # metadata alone


def test_every_pydicom_test_file_round_trips(tmp_path: Path) -> None:
    files = pydicom_files()
    assert len(files) > 100
    with Store(tmp_path / "store", writer_id=1) as store:
        _round_trip(store, files)
        assert store.verify(deep=True)["damaged"] == []
        assert store.stats()["instances"] == len(files)


def test_every_corpus_file_round_trips(tmp_path: Path) -> None:
    files = corpus_files()
    # Small packs, so that even the synthetic corpus alone (4 MB, under 1 MB stored) spans
    # several.
    with Store(tmp_path / "store", writer_id=1, pack_size=1 << 18) as store:
        _round_trip(store, files)
        stats = store.stats()
        assert stats["instances"] == len(files)
        assert stats["packs"] > 1


def test_put_get_and_single_put_are_durable_across_reopen(tmp_path: Path) -> None:
    data = read_original(pydicom_files()[0])
    with Store(tmp_path, writer_id=7) as store:
        loc = store.put(data)
        assert store.writer_id == 7
    with Store(tmp_path) as reader:
        assert reader.get(loc) == data
        assert [e["location"] for e in reader.scan()] == [loc]


def test_delete_hides_an_instance_from_scan(tmp_path: Path) -> None:
    files = pydicom_files()[:5]
    with Store(tmp_path, writer_id=1) as store:
        locs = store.put_many([read_original(p) for p in files])
        store.delete(locs[2])
        live = [e["location"] for e in store.scan(headers=False)]
        assert live == locs[:2] + locs[3:]
        assert store.stats()["deleted_instances"] == 1
        with pytest.raises(StorageError):
            store.delete(store.delete(locs[0]))  # a tombstone is not an instance


def test_one_writer_id_per_process(tmp_path: Path) -> None:
    with Store(tmp_path, writer_id=1), pytest.raises(ArchiveLockedError):
        Store(tmp_path, writer_id=1)
    Store(tmp_path, writer_id=1).close()  # released on close


def test_reads_of_bad_locations_fail_cleanly(tmp_path: Path) -> None:
    with Store(tmp_path, writer_id=1) as store:
        loc = store.put(b"\x00" * 300)
        for bad in [(loc[0], loc[1], loc[2] + 1), (loc[0], 1, loc[2]), (loc[0], loc[1], 1 << 40)]:
            with pytest.raises(StorageError):
                store.get(bad)
        with pytest.raises(FileNotFoundError):
            store.get((loc[0] + 1, loc[1], loc[2]))
    with Store(tmp_path) as reader, pytest.raises(StorageError):
        reader.put(b"read-only")
    closed = Store(tmp_path)
    closed.close()
    with pytest.raises(ValueError):
        closed.get(loc)


def test_concurrent_puts_share_fsyncs(tmp_path: Path) -> None:
    """Group commit: 8 threads putting at once need far fewer fsyncs than puts."""
    from concurrent.futures import ThreadPoolExecutor

    payloads = [bytes([i % 251]) * (1000 + i) for i in range(400)]
    with Store(tmp_path, writer_id=1) as store, ThreadPoolExecutor(8) as pool:
        locs = list(pool.map(store.put, payloads))
        assert store.sync_count < len(payloads)
        assert [store.get(loc) for loc in locs] == payloads
