"""``duckpacs cluster move-to`` and ``cluster verify`` (issue 26): an embedded archive made
a node of a shared archive (PostgreSQL index, packs in s3s-fs), resumable when killed, and
then served by another node byte for byte.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import crash_support as cs
from tests.pg_serve_support import configure_archive
from tests.pg_support import Cluster
from tests.s3_support import S3Server
from tests.test_cluster_s3 import add_node, retrieved, store_section, wait_for

pytestmark = pytest.mark.usefixtures("s3_credentials")


def embedded_archive(
    root: Path, count: int, seed: int, rows: int = 64
) -> tuple[Path, str, list[Path]]:
    """An embedded archive that received ``count`` instances by C-STORE."""
    study, files = cs.write_study(root / "in", count, seed, rows=rows)
    data = root / "archive"
    server = cs.start_server(data)
    try:
        out, _ = cs.storescu(server.dimse_port, files).communicate(timeout=600)
        assert len(cs.acknowledged(out)) == count
    finally:
        assert server.stop() == 0
    return data, study, files


def join_cluster(data: Path, cluster: Cluster, s3: S3Server, node: str) -> str:
    """Point the archive's configuration at the shared index and bucket (what the user
    does by hand before ``move-to``); returns the connection string."""
    (data / "duckpacs.toml").unlink()
    dsn = configure_archive(data, cluster, node=node)
    with (data / "duckpacs.toml").open("a") as f:
        f.write(store_section(s3))
    return dsn


def assert_node_b_serves(tmp_path: Path, data: Path, study: str, files: list[Path]) -> None:
    """A second node, which never held the study, retrieves it byte for byte by C-GET."""
    b = cs.start_server(add_node(data, tmp_path / "b", "node-b"))
    try:
        got = wait_for(lambda: retrieved(b.dimse_port, study, files), 60, "C-GET from B")
        for path in files:
            assert got[cs.sop_uid(path)] == cs.dataset_bytes(path)
    finally:
        assert b.stop() == 0


def move_to(data: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "duckpacs.cli.main", "cluster", "move-to", "--data", str(data),
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env=dict(os.environ),
    )  # fmt: skip


def test_move_to_indexes_uploads_verifies_and_another_node_serves_it(
    tmp_path: Path, pg_cluster: Cluster, s3_server: S3Server
) -> None:
    data, study, files = embedded_archive(tmp_path, 40, 9100)
    join_cluster(data, pg_cluster, s3_server, "migrated")
    run = move_to(data)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    report = json.loads(out)
    assert report["complete"], report
    assert report["instances"] == {"store": 40, "index": 40, "embedded_index": 40}
    assert report["verified"]["checked"] == 40 and report["verified"]["damaged"] == []
    assert s3_server.objects("site/migrated/")
    # A second run has nothing left to upload and still verifies.
    again = move_to(data)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert json.loads(out)["uploaded_packs"] == 0
    verify = cs.duckpacs("cluster", "verify", "--deep", "--json", "--data", str(data))
    assert verify.returncode == 0, verify.stderr
    nodes = json.loads(verify.stdout)["nodes"]
    assert [(n["node"], n["checked"], n["damaged"]) for n in nodes] == [("migrated", 40, [])]
    # Node B, which never held these instances, serves them from the bucket.
    assert_node_b_serves(tmp_path, data, study, files)


def test_move_to_killed_at_random_moments_resumes_and_completes(
    tmp_path: Path, pg_cluster: Cluster, s3_server: S3Server
) -> None:
    data, study, files = embedded_archive(tmp_path, 160, 9200, rows=512)
    join_cluster(data, pg_cluster, s3_server, "migrated")
    rng = random.Random(9200)
    kills = 0
    for _ in range(3):
        run = move_to(data)
        time.sleep(rng.uniform(0.3, 2.0))
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            kills += 1
        run.communicate(timeout=60)
    final = move_to(data)
    out, err = final.communicate(timeout=600)
    assert final.returncode == 0, err
    report = json.loads(out)
    assert report["complete"], report
    assert report["instances"]["index"] == report["instances"]["store"] == 160
    assert report["verified"]["checked"] == 160
    assert kills, "every run finished before its kill: the data set is too small"
    assert_node_b_serves(tmp_path, data, study, files)


def test_cluster_verify_reports_a_pack_missing_from_the_bucket(
    tmp_path: Path, pg_cluster: Cluster, s3_server: S3Server
) -> None:
    data, _, _ = embedded_archive(tmp_path, 12, 9300)
    join_cluster(data, pg_cluster, s3_server, "migrated")
    run = move_to(data)
    assert run.communicate(timeout=300) and run.returncode == 0
    for key in s3_server.objects("site/migrated/"):
        (s3_server.root / s3_server.BUCKET / key).unlink()
    verify = cs.duckpacs("cluster", "verify", "--json", "--data", str(data))
    assert verify.returncode == 2, verify.stderr
    (node,) = json.loads(verify.stdout)["nodes"]
    assert (node["checked"], node["not_in_bucket"], node["damaged"]) == (0, 12, [])
