"""The ``nodes`` table of the PostgreSQL index: one number per node name, drawn once and
race-free between nodes (it goes into the pack ids other nodes read from S3), heartbeats,
and the listing ``duckpacs cluster status`` shows (with each node's instance count)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from duckpacs.errors import ArchiveIndexError
from tests import index_truth as truth
from tests.index_rows import build_batch
from tests.pg_support import Cluster


@pytest.fixture
def dsn(pg_cluster: Cluster) -> str:
    return pg_cluster.database()


@pytest.fixture
def opened(pg_cluster: Cluster, dsn: str) -> Iterator[Any]:
    """``opened(node, read_only=False)``: a PgIndex on the test's database, closed after."""
    from duckpacs.index.pg.db import PgIndex

    indexes: list[Any] = []

    def open_(node: str, read_only: bool = False) -> Any:
        indexes.append(PgIndex.open(pg_cluster.config(node, dsn), read_only))
        return indexes[-1]

    yield open_
    for ix in indexes:
        ix.close()


def superuser_sql(dsn: str, sql: str) -> None:
    with psycopg.connect(dsn, password=Cluster.PASSWORD, autocommit=True) as con:
        con.execute(sql)  # type: ignore[arg-type]


def test_each_node_gets_one_number_for_good(opened: Any) -> None:
    a, b = opened("node-a"), opened("node-b")
    assert (a.node_number(), b.node_number()) == (1, 2)
    assert opened("node-a").node_number() == 1  # the same name again: the same number
    assert opened("node-c").node_number() == 3


def test_nodes_registering_at_once_get_distinct_numbers(opened: Any) -> None:
    indexes = [opened(f"node-{n}") for n in range(8)]
    numbers: dict[str, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(indexes))

    def register(ix: Any) -> None:
        try:
            start.wait()
            numbers[ix.config.node] = ix.node_number()
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=register, args=(ix,)) for ix in indexes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(numbers.values()) == list(range(1, 9))


def test_heartbeat_and_listing_with_instance_counts(opened: Any) -> None:
    records = truth.distinct(6)
    a, b = opened("node-a"), opened("node-b")
    a.add_batch(build_batch((r.ds, r.extra) for r in records[:4]))
    b.add_batch(build_batch((r.ds, r.extra) for r in records[4:]))
    a.node_number()
    b.heartbeat(3, 4096, 1000, 2**20)  # registers b first
    before = {n["name"]: n for n in a.nodes()}
    assert (before["node-a"]["number"], before["node-b"]["number"]) == (1, 2)
    assert before["node-a"]["pending_packs"] is None
    assert before["node-b"]["pending_packs"] == 3 and before["node-b"]["cache_limit"] == 2**20
    assert (before["node-a"]["instances"], before["node-b"]["instances"]) == (4, 2)
    assert 0 <= before["node-b"]["seen_seconds_ago"] < 60
    a.heartbeat(0, 0, 5, 10)
    after = {n["name"]: n for n in a.nodes()}
    assert after["node-a"]["last_seen"] >= before["node-a"]["last_seen"]
    assert (after["node-a"]["cache_bytes"], after["node-a"]["cache_limit"]) == (5, 10)


def test_a_node_holding_instances_without_a_number_is_listed_last(opened: Any) -> None:
    records = truth.distinct(2)
    a, b = opened("node-a"), opened("node-b")
    a.add_batch(build_batch((r.ds, r.extra) for r in records))
    b.node_number()
    listed = a.nodes()
    assert [(n["name"], n["number"]) for n in listed] == [("node-b", 1), ("node-a", None)]
    assert listed[1]["instances"] == 2 and listed[1]["last_seen"] is None


def test_an_index_from_before_gets_the_table_and_readers_cope_without_it(
    opened: Any, dsn: str
) -> None:
    opened("node-a")
    superuser_sql(dsn, "DROP TABLE nodes")  # as an index written before the table existed
    reader = opened("node-r", read_only=True)
    assert reader.nodes() == []
    with pytest.raises(ArchiveIndexError, match="read-only"):
        reader.node_number()
    with pytest.raises(ArchiveIndexError, match="read-only"):
        reader.heartbeat(0, 0, 0, 0)
    assert opened("node-a").node_number() == 1  # a writer's opening creates it again
    assert [n["name"] for n in reader.nodes()] == ["node-a"]


def test_a_lost_row_is_registered_again_by_the_heartbeat(opened: Any, dsn: str) -> None:
    a = opened("node-a")
    assert a.node_number() == 1
    superuser_sql(dsn, "DELETE FROM nodes")
    a.heartbeat(1, 2, 3, 4)
    assert [(n["name"], n["pending_bytes"]) for n in a.nodes()] == [("node-a", 2)]
