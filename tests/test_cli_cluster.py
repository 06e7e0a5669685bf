"""``duckpacs cluster status``: the nodes of a shared archive as the PostgreSQL index knows
them (number, heartbeat, instances, uploads pending, cache use), run as a user runs it; one
clear line on an embedded archive; never a credential in its output."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import index_truth as truth
from tests.index_rows import build_batch
from tests.pg_serve_support import configure_archive
from tests.pg_support import Cluster

SECRET = "s3-secret-never-shown"


def cluster_status(data: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "duckpacs.cli.main", "cluster", "status", "--data", str(data),
         *args],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )  # fmt: skip


@pytest.fixture
def shared(tmp_path: Path, pg_cluster: Cluster) -> Iterator[Path]:
    """An archive folder configured for a PostgreSQL index where node-a (3 instances,
    heartbeat given), node-b (registered, silent) and node-c (1 instance, never registered)
    wrote."""
    from duckpacs.index.pg.db import PgIndex

    data = tmp_path / "data"
    dsn = configure_archive(data, pg_cluster, node="node-b")
    records = truth.distinct(4)
    a = PgIndex.open(pg_cluster.config("node-a", dsn))
    b = PgIndex.open(pg_cluster.config("node-b", dsn))
    c = PgIndex.open(pg_cluster.config("node-c", dsn))
    try:
        a.add_batch(build_batch((r.ds, r.extra) for r in records[:3]))
        c.add_batch(build_batch([(records[3].ds, records[3].extra)]))
        a.heartbeat(2, 4096, 3 * 2**20, 256 * 2**20)
        b.node_number()
    finally:
        for ix in (a, b, c):
            ix.close()
    yield data


def test_status_lists_the_nodes_with_their_heartbeats(shared: Path) -> None:
    run = cluster_status(shared, "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["index"]["node"] == "node-b" and report["store"] == {"backend": "local"}
    by_name = {n["name"]: n for n in report["nodes"]}
    assert [n["name"] for n in report["nodes"]] == ["node-a", "node-b", "node-c"]
    a, b, c = by_name["node-a"], by_name["node-b"], by_name["node-c"]
    assert (a["number"], a["instances"], a["pending_packs"], a["pending_bytes"]) == (1, 3, 2, 4096)
    assert (a["cache_bytes"], a["cache_limit"]) == (3 * 2**20, 256 * 2**20)
    assert 0 <= a["seen_seconds_ago"] < 600 and a["last_seen"].startswith("20")
    assert (b["number"], b["instances"], b["pending_packs"]) == (2, 0, None)
    assert (c["number"], c["instances"], c["last_seen"]) == (None, 1, None)

    text = cluster_status(shared)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("index: PostgreSQL postgresql://") and "node-b" in lines[0]
    assert lines[1].startswith("store: local")
    assert lines[2].split() == ["NODE", "NUMBER", "LAST", "SEEN", "INSTANCES", "UPLOADS",
                                "PENDING", "CACHE"]  # fmt: skip
    row_a = next(line for line in lines if line.startswith("node-a"))
    assert "2 packs, 4.0 KiB" in row_a and "3.0 MiB of 256.0 MiB" in row_a and " s ago" in row_a
    row_c = next(line for line in lines if line.startswith("node-c"))
    assert row_c.split()[1:3] == ["-", "never"]


def test_status_shows_the_bucket_but_never_the_credentials(shared: Path) -> None:
    with (shared / "duckpacs.toml").open("a") as f:
        f.write('[store]\nbackend = "s3"\nendpoint = "http://127.0.0.1:9"\nbucket = "archive"\n')
    env = {"AWS_ACCESS_KEY_ID": "AKIA-NOT-SHOWN", "AWS_SECRET_ACCESS_KEY": SECRET}
    for args in (("--json",), ()):
        run = cluster_status(shared, *args, env=env)
        assert run.returncode == 0, run.stderr
        assert SECRET not in run.stdout + run.stderr
        assert "AKIA-NOT-SHOWN" not in run.stdout + run.stderr
    report = json.loads(cluster_status(shared, "--json", env=env).stdout)
    assert report["store"] == {
        "backend": "s3", "endpoint": "http://127.0.0.1:9", "bucket": "archive",
        "prefix": "duckpacs", "region": "us-east-1",
    }  # fmt: skip


def test_an_embedded_archive_gets_one_clear_line(tmp_path: Path) -> None:
    run = cluster_status(tmp_path / "data")
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "duckpacs: error: cluster status needs the shared PostgreSQL index ([index] backend = "
        '"postgres"); this archive\'s index is the embedded one, so it has one node'
    ]
