"""The index owner and its remote clients: calls, group commit, errors, wrong authkey."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from duckpacs.archive import ipc
from duckpacs.archive.types import IndexEntry, InstanceRef, Location
from duckpacs.errors import ArchiveIndexError
from tests.memory_archive import MemoryCatalog


def entry(uid: str, pack: int = 0) -> IndexEntry:
    ref = InstanceRef(
        uid, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", Location(pack, 0, 10)
    )
    return IndexEntry(ref, {"SOPInstanceUID": uid, "PatientID": "P1", "StudyInstanceUID": "9.9"})


class CountingCatalog(MemoryCatalog):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.marks: list[dict[int, int]] = []

    def add(
        self, entries: list[IndexEntry], marks: dict[int, int] | None = None
    ) -> list[InstanceRef | None]:
        self.batches.append(len(entries))
        self.marks.append(dict(marks or {}))
        return super().add(entries, marks)


@pytest.fixture
def owner(tmp_path: Path):  # type: ignore[no-untyped-def]
    catalog = CountingCatalog()
    server = ipc.IndexOwner(catalog, ipc.socket_path(tmp_path), b"secret", flush_interval=60)
    server.start()
    yield server, catalog
    server.stop()


def test_adds_are_batched_and_visible_to_every_later_read(owner) -> None:  # type: ignore[no-untyped-def]
    server, catalog = owner
    client = ipc.RemoteCatalog(server.address, b"secret")
    results: dict[str, object] = {}

    def add(uid: str) -> None:
        results[uid] = ipc.RemoteCatalog(server.address, b"secret").add([entry(uid)])

    threads = [threading.Thread(target=add, args=(f"1.2.{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert all(r == [None] for r in results.values())
    assert catalog.batches == []  # acknowledged, not yet written (flush interval is 60 s)
    assert client.lookup("1.2.3") == entry("1.2.3").ref  # lookups see the pending rows
    assert client.add([entry("1.2.0", pack=5)]) == [entry("1.2.0").ref]  # already there
    found = client.find("STUDY", {"PatientID": "P1"}, ["StudyInstanceUID"])
    assert found == [{"StudyInstanceUID": "9.9"}]  # a read flushes first
    assert catalog.batches == [8]  # in one batch
    assert client.lookup("nope") is None
    assert len(client.locate("STUDY", {"StudyInstanceUID": "9.9"})) == 8


def test_store_marks_travel_with_the_flush_that_holds_every_earlier_add(owner) -> None:  # type: ignore[no-untyped-def]
    """Marks sent with adds are committed with the batch of every entry pending when they
    arrived (never before it), the highest per pack winning (duckpacs.archive.recovery)."""
    server, catalog = owner
    client = ipc.RemoteCatalog(server.address, b"secret")
    client.add([entry("1.4.1")], {7: 100})
    client.add([entry("1.4.2")], {7: 300, 8: 50})
    client.add([], {7: 200})  # a late, lower mark from another association
    assert catalog.marks == []  # nothing written yet
    server.flush()
    assert catalog.batches == [2]
    assert catalog.marks == [{7: 300, 8: 50}]
    client.add([], {8: 90})  # marks alone (a worker stopping) still reach the index
    server.flush()
    assert catalog.marks[-1] == {8: 90}


def test_committer_flushes_when_idle(tmp_path: Path) -> None:
    catalog = CountingCatalog()
    server = ipc.IndexOwner(catalog, ipc.socket_path(tmp_path), b"k", flush_interval=0.05)
    server.start()
    try:
        ipc.RemoteCatalog(server.address, b"k").add([entry("1.3.1"), entry("1.3.2")])
        deadline = time.monotonic() + 5
        while not catalog.batches and time.monotonic() < deadline:
            time.sleep(0.01)
        assert catalog.batches == [2]
    finally:
        server.stop()


def test_errors_cross_the_channel(owner) -> None:  # type: ignore[no-untyped-def]
    server, _catalog = owner
    client = ipc.RemoteCatalog(server.address, b"secret")
    with pytest.raises(ArchiveIndexError, match="KeyError"):
        client.find("NOLEVEL", {}, [])
    intruder = ipc.RemoteCatalog(server.address, b"wrong key")
    with pytest.raises(Exception):  # noqa: B017 (multiprocessing's AuthenticationError)
        intruder.lookup("1.2")
    assert client.lookup("1.2") is None  # the owner still serves the honest client
