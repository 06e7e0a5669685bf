"""`duckpacs serve` on a PostgreSQL index when PostgreSQL goes away and comes back, and when
serve is killed: checked from the outside, with DCMTK's storescu and C-FIND.

- PostgreSQL stopped during an ingest: arrivals get a failure status (0xA700, Refused: Out
  of Resources, PS3.4 B.2.3) instead of a success the index cannot follow, C-FIND fails
  (0xC001) and QIDO answers 503, none of them hangs; PostgreSQL started again: arrivals are
  accepted again by the same process (no restart) and every acknowledged instance is
  findable.
- SIGKILL of serve's process group during an ingest, a few rounds: after the restart every
  acknowledged instance is findable, once (the catch-up from this node's store marks).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests import crash_support as cs
from tests.helpers import dcmtk_env, require_tool
from tests.pg_serve_support import configure_archive
from tests.pg_support import Cluster

pytestmark = pytest.mark.interop

_STATUS = re.compile(r"Received Store Response \((.+)\)")


def store_statuses(port: int, files: list[Path]) -> list[str]:
    """storescu of ``files`` one association each; the response text of each."""
    out = []
    for path in files:
        run = subprocess.run(
            [require_tool("storescu"), "-v", "-aet", cs.SCU_AE, "-aec", "DUCKPACS",
             "127.0.0.1", str(port), str(path)],
            capture_output=True, text=True, env=dcmtk_env(), timeout=60,
        )  # fmt: skip
        found = _STATUS.findall(run.stdout + run.stderr)
        out.append(found[0] if found else "no response")
    return out


def c_find_status(port: int, study: str) -> int:
    """The final status of an IMAGE-level C-FIND of ``study``."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind,
    )

    ae = AE(ae_title=cs.SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="DUCKPACS")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study
    query.SOPInstanceUID = ""
    last = -1
    try:
        for status, _identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            if status:
                last = int(status.Status)
    finally:
        assoc.release()
    return last


def test_postgresql_down_refuses_then_resumes_without_restart(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    study, files = cs.write_study(tmp_path / "in", 160, 4242)
    data = tmp_path / "archive"
    configure_archive(data, pg_cluster)
    server = cs.start_server(data)
    pid = server.process.pid
    acked: list[Path] = []
    try:
        first = cs.storescu(server.dimse_port, files[:100])
        time.sleep(0.3)
        pg_cluster.stop()  # during the ingest
        try:
            out, _ = first.communicate(timeout=120)
            acked += cs.acknowledged(out)
            # An arrival while nothing is pending may still be acknowledged (it is durable in
            # the store, and pending): the commit that follows meets the closed server and
            # from then on arrivals are refused.
            probe = iter(files[100:120])
            deadline = time.monotonic() + 30
            while True:
                path = next(probe)
                status = store_statuses(server.dimse_port, [path])[0]
                if status.startswith("Success"):
                    acked.append(path)
                elif status.startswith("Refused: OutOfResources"):
                    break
                else:
                    raise AssertionError(f"unexpected status while down: {status}")
                assert time.monotonic() < deadline, "arrivals never refused"
                time.sleep(0.3)
            down = store_statuses(server.dimse_port, files[120:123])
            assert all(s.startswith("Refused: OutOfResources") for s in down), down
            assert c_find_status(server.dimse_port, study) == 0xC001
            qido = requests.get(
                f"http://127.0.0.1:{server.http_port}/dicom-web/studies", timeout=30
            )
            assert qido.status_code == 503 and qido.headers["Retry-After"]
        finally:
            pg_cluster.start()
        deadline = time.monotonic() + 60
        while True:  # the same process accepts again once PostgreSQL answers
            status = store_statuses(server.dimse_port, files[123:124])[0]
            if status.startswith("Success"):
                break
            assert time.monotonic() < deadline, f"arrivals still refused: {status}"
            time.sleep(0.5)
        later = cs.storescu(server.dimse_port, files[124:])
        out, _ = later.communicate(timeout=120)
        acked += [files[123], *cs.acknowledged(out)]
        assert server.process.poll() is None and server.process.pid == pid
        deadline = time.monotonic() + 30
        while True:
            found = cs.find_uids(server.dimse_port, study)
            missing = {cs.sop_uid(p) for p in acked} - set(found)
            if not missing:
                break
            assert time.monotonic() < deadline, f"{len(missing)} acknowledged not findable"
            time.sleep(0.5)
        assert len(found) == len(set(found))
        assert set(found) <= {cs.sop_uid(p) for p in files}
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("cycle", range(3))
def test_acknowledged_c_stores_survive_sigkill_on_postgresql(
    tmp_path: Path, pg_cluster: Cluster, cycle: int
) -> None:
    from tests.test_crash_recovery import dimse_cycle

    configure_archive(tmp_path / "archive", pg_cluster)
    dimse_cycle(tmp_path, seed=7000 + cycle)


def test_reindex_rebuilds_the_postgresql_index_from_the_store(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    import psycopg

    study, files = cs.write_study(tmp_path / "in", 40, 4343)
    data = tmp_path / "archive"
    dsn = configure_archive(data, pg_cluster)
    server = cs.start_server(data)
    try:
        out, _ = cs.storescu(server.dimse_port, files).communicate(timeout=120)
        assert len(cs.acknowledged(out)) == 40
    finally:
        assert server.stop() == 0
    with psycopg.connect(dsn, password=pg_cluster.PASSWORD, autocommit=True) as con:
        con.execute("TRUNCATE instances, attributes, series, studies, patients, store_marks")
    run = cs.duckpacs("reindex", "--data", str(data), "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"instances": 40' in run.stdout
    # The command-line readers, with serve stopped, query PostgreSQL directly.
    found = cs.duckpacs("find", "--data", str(data), "--level", "image", "--json",
                        f"StudyInstanceUID={study}", "InstanceNumber=")  # fmt: skip
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert sorted(int(r["InstanceNumber"]) for r in rows) == list(range(1, 41))
    sql = cs.duckpacs("sql", "--data", str(data), "--format", "json",
                      "SELECT count(*) AS n FROM elements WHERE keyword = 'EchoTime'")  # fmt: skip
    assert sql.returncode == 0, sql.stderr
    assert json.loads(sql.stdout) == [{"n": 40}]
    for statement in ("DELETE FROM instances", "DELETE FROM instances RETURNING iid"):
        refused = cs.duckpacs("sql", "--data", str(data), statement)
        assert refused.returncode != 0 and refused.stderr.startswith("duckpacs: error: SQL:")
    assert "only reading" in refused.stderr
    again = cs.duckpacs("sql", "--data", str(data), "--format", "json",
                        "SELECT count(*) AS n FROM instances")  # fmt: skip
    assert json.loads(again.stdout) == [{"n": 40}]
    server = cs.start_server(data)
    try:
        assert sorted(cs.find_uids(server.dimse_port, study)) == sorted(map(cs.sop_uid, files))
    finally:
        assert server.stop() == 0


def test_an_embedded_archive_switched_to_postgresql_is_indexed_at_first_start(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    study, files = cs.write_study(tmp_path / "in", 30, 4444)
    data = tmp_path / "archive"
    server = cs.start_server(data)  # embedded first
    try:
        out, _ = cs.storescu(server.dimse_port, files).communicate(timeout=120)
        assert len(cs.acknowledged(out)) == 30
    finally:
        assert server.stop() == 0
    (data / "duckpacs.toml").unlink()
    configure_archive(data, pg_cluster)
    server = cs.start_server(data)
    try:
        assert sorted(cs.find_uids(server.dimse_port, study)) == sorted(map(cs.sop_uid, files))
    finally:
        assert server.stop() == 0


def _two_nodes(tmp_path: Path, cluster: Cluster) -> tuple[str, list[cs.Server]]:
    """Two serve processes, each with its own data folder, sharing one PostgreSQL index."""
    dsn = configure_archive(tmp_path / "a", cluster, node="node-a")
    text = (tmp_path / "a" / "duckpacs.toml").read_text().replace("node-a", "node-b")
    secret = tmp_path / "b-pgpass"
    secret.write_text(cluster.PASSWORD + "\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "duckpacs.toml").write_text(
        text.replace(str(tmp_path / "a-pgpass"), str(secret))
    )
    return dsn, [cs.start_server(tmp_path / "a"), cs.start_server(tmp_path / "b")]


def _rows_by_node(dsn: str, cluster: Cluster) -> dict[str, str]:
    import psycopg

    with psycopg.connect(dsn, password=cluster.PASSWORD) as con:
        return {
            str(u): str(n) for u, n in con.execute("SELECT sop_instance_uid, node FROM instances")
        }


def test_two_nodes_keep_first_across_nodes_and_store_a_shared_study_once(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    study, first = cs.write_study(tmp_path / "v1", 20, 4545)
    _, second = cs.write_study(tmp_path / "v2", 20, 4545, rows=32)  # same UIDs, other bytes
    _, shared = cs.write_study(tmp_path / "shared", 60, 4646)
    dsn, (a, b) = _two_nodes(tmp_path, pg_cluster)
    try:
        out, _ = cs.storescu(a.dimse_port, first).communicate(timeout=120)
        assert len(cs.acknowledged(out)) == 20
        time.sleep(1)  # A's committer has written its rows
        statuses = store_statuses(b.dimse_port, second[:3])
        assert not any(s.startswith("Success") for s in statuses), statuses  # kept first
        # The same study sent to both nodes at once: each instance stored once.
        senders = [cs.storescu(node.dimse_port, shared) for node in (a, b)]
        acked = set()
        for sender in senders:
            acked |= {cs.sop_uid(p) for p in cs.acknowledged(sender.communicate(timeout=120)[0])}
        shared_study = cs.sop_uid(shared[0])  # any instance of it; the study UID below
        assert shared_study
        deadline = time.monotonic() + 30
        while True:
            rows = _rows_by_node(dsn, pg_cluster)
            if {cs.sop_uid(p) for p in shared} <= set(rows):
                break
            assert time.monotonic() < deadline, "a shared instance is missing"
            time.sleep(0.3)
        assert acked == {cs.sop_uid(p) for p in shared}
        assert all(rows[cs.sop_uid(p)] == "node-a" for p in first)  # A's version kept
        for node in (a, b):  # found from either node
            assert sorted(cs.find_uids(node.dimse_port, study)) == sorted(map(cs.sop_uid, first))
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def test_a_stalled_postgresql_fails_calls_within_the_timeout_then_resumes(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """A table lock held elsewhere stalls every statement: calls fail after ``index.timeout``
    (3 s here) instead of hanging past a peer's timeout, and work resumes once it is gone."""
    import psycopg

    study, files = cs.write_study(tmp_path / "in", 40, 4747)
    data = tmp_path / "archive"
    dsn = configure_archive(data, pg_cluster)
    server = cs.start_server(data)
    acked: list[Path] = []
    try:
        out, _ = cs.storescu(server.dimse_port, files[:10]).communicate(timeout=120)
        acked += cs.acknowledged(out)
        blocker = psycopg.connect(dsn, password=pg_cluster.PASSWORD)
        try:
            blocker.execute("LOCK TABLE instances IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            assert c_find_status(server.dimse_port, study) == 0xC001
            assert time.monotonic() - started < 20  # the timeout, not the peer's patience
            probe = iter(files[10:30])
            while True:  # acknowledged ones wait in the writer; then arrivals are refused
                path = next(probe)
                status = store_statuses(server.dimse_port, [path])[0]
                if status.startswith("Success"):
                    acked.append(path)
                else:
                    assert status.startswith("Refused: OutOfResources"), status
                    break
        finally:
            blocker.rollback()
            blocker.close()
        deadline = time.monotonic() + 60
        while not store_statuses(server.dimse_port, files[30:31])[0].startswith("Success"):
            assert time.monotonic() < deadline, "arrivals still refused"
            time.sleep(0.5)
        acked.append(files[30])
        deadline = time.monotonic() + 30
        while missing := {cs.sop_uid(p) for p in acked} - set(
            cs.find_uids(server.dimse_port, study)
        ):
            assert time.monotonic() < deadline, f"{len(missing)} acknowledged not findable"
            time.sleep(0.5)
    finally:
        assert server.stop() == 0
