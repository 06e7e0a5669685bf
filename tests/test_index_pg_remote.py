"""Other nodes' instances with packs on S3: once ``read_remote`` is on, the PostgreSQL index
returns another node's instance at ``pack | number << 48`` (its writer's number from the
``nodes`` table) and names that node through ``on_node`` before its first location;
without it the refusal stays. The archive turns it on only with ``[store] backend = "s3"``
(:mod:`duckpacs.archive.shared_packs`). The store's side (``Store.name_node`` and the
ranged GETs) is the Rust store's: here a recorder stands in for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from duckpacs import config, store_config
from duckpacs.errors import ArchiveIndexError, ConfigError
from tests import index_truth as truth
from tests.index_rows import build_batch
from tests.pg_support import Cluster

REMOTE = 1 << 48


class NamingStore:
    """Records the nodes named to it, as ``Store.name_node`` would receive them."""

    def __init__(self) -> None:
        self.named: list[tuple[int, str]] = []

    def name_node(self, number: int, name: str) -> None:
        self.named.append((number, name))


@pytest.fixture
def nodes(pg_cluster: Cluster) -> Iterator[tuple[Any, Any]]:
    """Nodes ``node-a`` and ``node-b`` on a fresh index; a holds two instances in pack 3."""
    from duckpacs.index.pg.db import PgIndex

    dsn = pg_cluster.database()
    a = PgIndex.open(pg_cluster.config("node-a", dsn))
    b = PgIndex.open(pg_cluster.config("node-b", dsn))
    records = truth.distinct(3)
    a.add_batch(build_batch(
        (r.ds, {**r.extra, "pack": 3, "offset": 64 * i}) for i, r in enumerate(records[:2])
    ))  # fmt: skip
    b.add_batch(build_batch([(records[2].ds, {**records[2].extra, "pack": 3, "offset": 0})]))
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def uids(ix: Any, node: str) -> list[str]:
    rows = ix.sql(f"SELECT sop_instance_uid FROM instances WHERE node = '{node}' ORDER BY 1")
    return [str(r[0]) for r in rows.rows]


def test_without_read_remote_another_nodes_instance_stays_refused(
    nodes: tuple[Any, Any],
) -> None:
    a, b = nodes
    a.node_number()
    with pytest.raises(ArchiveIndexError, match="retrieve it from that node"):
        b.instance_refs(uids(a, "node-a"))


def test_another_nodes_instances_come_at_remote_pack_ids(nodes: tuple[Any, Any]) -> None:
    a, b = nodes
    assert a.node_number() == 1
    store = NamingStore()
    b.read_remote(store.name_node)
    theirs = b.instance_refs(uids(a, "node-a"))
    assert sorted((r[3], r[4]) for r in theirs) == [(3 | REMOTE, 0), (3 | REMOTE, 64)]
    assert store.named == [(1, "node-a")]  # once, before the first location came back
    found = b.locations("study", {"StudyInstanceUID": truth.distinct(1)[0].ds.StudyInstanceUID})
    assert {r[3] for r in found} == {3 | REMOTE}
    mine = b.instance_refs(uids(b, "node-b"))
    assert [(r[3], r[4]) for r in mine] == [(3, 0)]  # its own: plain pack ids
    assert store.named == [(1, "node-a")]
    assert a.instance_refs(uids(a, "node-a"))[0][3] == 3  # a itself is not told anything


def test_a_node_not_registered_yet_is_looked_up_again(nodes: tuple[Any, Any]) -> None:
    a, b = nodes
    b.node_number()  # b is 1, a has no number yet
    store = NamingStore()
    b.read_remote(store.name_node)
    with pytest.raises(ArchiveIndexError, match="no number in the nodes table"):
        b.instance_refs(uids(a, "node-a"))
    assert store.named == []
    assert a.node_number() == 2
    assert {r[3] for r in b.instance_refs(uids(a, "node-a"))} == {3 | 2 << 48}
    assert store.named == [(2, "node-a")]


def test_a_failed_naming_is_tried_again(nodes: tuple[Any, Any]) -> None:
    a, b = nodes
    a.node_number()
    calls: list[int] = []

    def flaky(number: int, name: str) -> None:
        calls.append(number)
        if len(calls) == 1:
            raise RuntimeError("store busy")

    b.read_remote(flaky)
    with pytest.raises(RuntimeError):
        b.instance_refs(uids(a, "node-a"))
    assert b.instance_refs(uids(a, "node-a"))
    assert calls == [1, 1]


@pytest.fixture
def s3_configured(tmp_path: Path) -> Iterator[None]:
    """``[store] backend = "s3"`` configured in this process (the endpoint is never dialled
    here: nothing reads a pack)."""
    env = {
        "DUCKPACS_INDEX_BACKEND": "postgres", "DUCKPACS_INDEX_DSN": "postgresql://x@y/z",
        "DUCKPACS_STORE_BACKEND": "s3", "DUCKPACS_STORE_ENDPOINT": "http://127.0.0.1:9",
        "DUCKPACS_STORE_BUCKET": "archive", "DUCKPACS_NODE": "node-b",
        "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
    }  # fmt: skip
    store_config.configure(config.load(env=env, cwd=tmp_path), env)
    yield
    store_config._configured = None


@pytest.mark.usefixtures("s3_configured")
def test_the_archive_connects_index_and_store_only_with_s3(
    nodes: tuple[Any, Any], tmp_path: Path
) -> None:
    from duckpacs.archive import shared_packs
    from duckpacs.index import Index

    a, b = nodes
    a.node_number()
    store = NamingStore()
    shared_packs.connect(b, store, writer=True)  # as Archive.open does on the s3 path
    assert [(n["name"], n["number"]) for n in b.nodes()] == [("node-a", 1), ("node-b", 2)]
    assert {r[3] for r in b.instance_refs(uids(a, "node-a"))} == {3 | REMOTE}
    assert store.named == [(1, "node-a")]
    reading = NamingStore()
    shared_packs.name_registered_nodes(b, reading)  # a client reading the server's answers
    assert reading.named == [(1, "node-a"), (2, "node-b")]
    with Index.open(tmp_path) as embedded, pytest.raises(ConfigError, match="index.backend"):
        shared_packs.connect(embedded, store, writer=False)


def test_without_s3_the_archive_leaves_the_index_as_it_was(nodes: tuple[Any, Any]) -> None:
    from duckpacs.archive import shared_packs

    a, b = nodes
    a.node_number()
    shared_packs.connect(b, NamingStore(), writer=True)
    listed = [(n["name"], n["number"]) for n in b.nodes()]
    assert listed == [("node-a", 1), ("node-b", None)]  # b did not register
    with pytest.raises(ArchiveIndexError, match="retrieve it from that node"):
        b.instance_refs(uids(a, "node-a"))


def test_archive_and_client_open_with_remote_reads_on_s3(
    nodes: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Archive.open on the s3 path registers the node and hands the store its ``remote``
    settings; it and the command line's reading archive no longer refuse another node's
    instance (here one whose node never registered, so no store is asked to read it)."""
    from duckpacs.archive import Archive, layout
    from duckpacs.archive.client import open_client
    from duckpacs.index import backend

    a, _ = nodes
    data = tmp_path / "data"
    env = {
        "DUCKPACS_INDEX_BACKEND": "postgres", "DUCKPACS_INDEX_DSN": a.config.dsn,
        "PGPASSWORD": Cluster.PASSWORD, "DUCKPACS_NODE": "node-s",
        "DUCKPACS_STORE_BACKEND": "s3", "DUCKPACS_STORE_ENDPOINT": "http://127.0.0.1:9",
        "DUCKPACS_STORE_BUCKET": "archive", "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b", "DUCKPACS_DATA_DIR": str(data),
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = config.load(cwd=tmp_path)
    real_store = layout._core.Store
    remotes: list[dict[str, Any]] = []

    def store_recording_remote(path: Any, remote: Any = None, **options: Any) -> Any:
        remotes.append(remote)  # the S3 side is the Rust store's (and its tests')
        return real_store(path, **options)

    monkeypatch.setattr(layout._core, "Store", store_recording_remote)
    theirs = uids(a, "node-a")[0]
    try:
        backend.configure(settings)
        store_config.configure(settings)
        archive = Archive.open(data)
        try:
            assert remotes[-1]["node"] == "node-s" and remotes[-1]["bucket"] == "archive"
            assert [n["name"] for n in archive.index.nodes() if n["number"]] == ["node-s"]
            with pytest.raises(ArchiveIndexError, match="no number in the nodes table"):
                archive.locate("image", {"SOPInstanceUID": theirs})
        finally:
            archive.close()
        client = open_client(settings)
        try:
            with pytest.raises(ArchiveIndexError, match="no number in the nodes table"):
                client.locate("image", {"SOPInstanceUID": theirs})
        finally:
            client._queries.index.close()  # the command line's process would just end
    finally:
        monkeypatch.undo()
        backend.configure(config.load())
        store_config._configured = None


def test_the_duplicate_check_never_names_this_nodes_store_for_another_nodes_record(
    nodes: tuple[Any, Any], tmp_path: Path
) -> None:
    """The write path compares a new copy with the indexed one and, under
    ``on_conflict = replace``, tombstones it: another node's (pack, offset) must not read
    or tombstone the record of *this* node's store that sits at the same place."""
    from duckpacs import _core
    from duckpacs.index.pg.db import FOREIGN

    a, b = nodes
    a.node_number()
    theirs = uids(a, "node-a")
    reader = b.reader()
    found = reader.locate_uids(theirs)
    assert sorted(v[:2] for v in found.values()) == [(3 | FOREIGN, 0), (3 | FOREIGN, 64)]
    # A store that has a record at that very place still refuses the foreign location.
    store = _core.Store(tmp_path / "store", writer_id=1)
    own = store.put(b"x" * 100)
    with pytest.raises(Exception, match="object storage"):
        store.delete((own[0] | FOREIGN, own[1], own[2]))
    assert bytes(store.get(own)) == b"x" * 100
    # With the bucket read, the same rows come at the node's remote pack ids, named first.
    named = NamingStore()
    b.read_remote(named.name_node)
    found = reader.locate_uids(theirs)
    assert sorted(v[:2] for v in found.values()) == [(3 | REMOTE, 0), (3 | REMOTE, 64)]
    assert named.named == [(1, "node-a")]
    mine = reader.locate_uids(uids(b, "node-b"))
    assert [v[:2] for v in mine.values()] == [(3, 0)]
    reader.close()
