"""Two `duckpacs serve` nodes, one archive: the index in PostgreSQL, the packs in S3
(issue 26), checked from the outside as a modality and a workstation see it.

Both services are real: PostgreSQL from Debian in a temporary cluster, and s3s-fs, which
speaks the S3 protocol (signed requests, ranged GETs) over a folder. Each node writes its
packs on its own disk, seals them every ``store.seal_seconds`` and uploads them; the other
node reads them by ranged GETs.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from tests import crash_support as cs
from tests.pg_serve_support import configure_archive
from tests.pg_support import Cluster
from tests.s3_support import S3Server
from tests.test_index_pg_faults import store_statuses

pytestmark = pytest.mark.usefixtures("s3_credentials")


def store_section(
    s3: S3Server, *, seal: float = 0.3, max_pending: int = 1 << 30, local: int = 0
) -> str:
    return "\n".join([
        "[store]",
        'backend = "s3"',
        f'endpoint = "{s3.endpoint}"',
        f'bucket = "{s3.BUCKET}"',
        'prefix = "site"',
        f"seal_seconds = {seal}",
        f"max_pending_bytes = {max_pending}",
        f"local_bytes = {local}",
        "timeout = 3",
    ]) + "\n"  # fmt: skip


def configure_nodes(tmp_path: Path, cluster: Cluster, s3: S3Server, **store: float) -> str:
    """Data folders ``a`` and ``b`` for nodes node-a and node-b on one index and bucket."""
    dsn = configure_archive(tmp_path / "a", cluster, node="node-a")
    with (tmp_path / "a" / "duckpacs.toml").open("a") as f:
        f.write(store_section(s3, **store))  # type: ignore[arg-type]
    add_node(tmp_path / "a", tmp_path / "b", "node-b")
    return dsn


def add_node(data_a: Path, data: Path, name: str) -> Path:
    """Another node's data folder ``data``: node ``data_a``'s configuration (one index and
    bucket) under the node name ``name``, with a password file of its own."""
    text = (data_a / "duckpacs.toml").read_text()
    node_a = text.split('node = "')[1].split('"')[0]
    secret = data.parent / f"{data.name}-pgpass"
    secret.write_text(Cluster.PASSWORD + "\n")
    data.mkdir()
    (data / "duckpacs.toml").write_text(
        text.replace(f'node = "{node_a}"', f'node = "{name}"').replace(
            str(data_a.parent / f"{data_a.name}-pgpass"), str(secret)
        )
    )
    return data


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.1)


def retrieved(port: int, study: str, files: list[Path]) -> dict[str, bytes] | None:
    """C-GET of the study from ``port`` when it gives every instance of ``files``."""
    got = cs.get_study(port, study)
    return got if set(got) >= {cs.sop_uid(p) for p in files} else None


def qido_uids(http_port: int, study: str) -> set[str]:
    r = requests.get(
        f"http://127.0.0.1:{http_port}/dicom-web/studies/{study}/instances", timeout=30
    )
    if r.status_code == 204:
        return set()
    r.raise_for_status()
    return {row["00080018"]["Value"][0] for row in r.json()}


def wado_dataset(http_port: int, study: str, path: Path) -> bytes:
    """WADO-RS Retrieve Instance (PS3.18 10.4) as stored: the dataset of the one part."""
    import pydicom

    from duckpacs.archive import part10

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    url = (f"http://127.0.0.1:{http_port}/dicom-web/studies/{study}/series/"
           f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")  # fmt: skip
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=60) as response:
        boundary = response.headers["Content-Type"].split("boundary=")[1].split(";")[0]
        body = response.read()
    boundary = boundary.strip('"').encode()
    part = body[body.index(b"\r\n\r\n") + 4 : body.rindex(b"\r\n--" + boundary + b"--")]
    return part[part10.split(part).dataset_offset :]


def test_an_instance_stored_on_a_is_found_on_b_at_once_and_retrieved_byte_identical(
    tmp_path: Path, pg_cluster: Cluster, s3_server: S3Server
) -> None:
    study, files = cs.write_study(tmp_path / "study", 24, 8101)
    configure_nodes(tmp_path, pg_cluster, s3_server)
    a, b = cs.start_server(tmp_path / "a"), cs.start_server(tmp_path / "b")
    try:
        # Found on B within a second of A's success, instance by instance.
        delays = []
        for path in files[:5]:
            assert store_statuses(a.dimse_port, [path]) == ["Success"]
            done = time.monotonic()
            uid = cs.sop_uid(path)
            wait_for(lambda uid=uid: uid in cs.find_uids(b.dimse_port, study), 10, "C-FIND on B")
            delays.append(time.monotonic() - done)
        assert statistics.median(delays) < 1.0, delays
        out, _ = cs.storescu(a.dimse_port, files[5:]).communicate(timeout=120)
        assert len(cs.acknowledged(out)) == len(files) - 5
        uids = {cs.sop_uid(p) for p in files}
        wait_for(lambda: set(cs.find_uids(b.dimse_port, study)) == uids, 10, "C-FIND on B")
        wait_for(lambda: qido_uids(b.http_port, study) == uids, 10, "QIDO-RS on B")
        # Retrieved from B, byte for byte, once A's packs are sealed and uploaded.
        got = wait_for(lambda: retrieved(b.dimse_port, study, files), 30, "C-GET from B")
        for path in files:
            assert got[cs.sop_uid(path)] == cs.dataset_bytes(path)
        for path in files[::7]:
            assert wado_dataset(b.http_port, study, path) == cs.dataset_bytes(path)
        assert s3_server.objects("site/node-a/"), "A uploaded nothing"
        # `duckpacs export` on B's data folder reads A's instances from the bucket too.
        out_dir = tmp_path / "export"
        run = cs.duckpacs("export", "--data", str(tmp_path / "b"), "--out", str(out_dir),
                          f"StudyInstanceUID={study}")  # fmt: skip
        assert run.returncode == 0, run.stderr
        exported = {cs.sop_uid(p): cs.dataset_bytes(p) for p in out_dir.rglob("*.dcm")}
        assert exported == {cs.sop_uid(p): cs.dataset_bytes(p) for p in files}
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


@pytest.mark.parametrize("cycle", range(2))
def test_node_a_killed_mid_ingest_everything_acknowledged_is_served_by_b(
    tmp_path: Path, pg_cluster: Cluster, s3_server: S3Server, cycle: int
) -> None:
    study, files = cs.write_study(tmp_path / "study", 1500, 8200 + cycle)
    # A keeps nothing it may evict: kills land amid uploads and evictions alike.
    configure_nodes(tmp_path, pg_cluster, s3_server, local=1)
    b = cs.start_server(tmp_path / "b")
    a = cs.start_server(tmp_path / "a")
    try:
        sender = cs.storescu(a.dimse_port, files)
        killer = threading.Timer(random.Random(cycle).uniform(0.3, 1.2), a.kill_group)
        killer.start()
        out, _ = sender.communicate(timeout=180)
        killer.join()
        a.kill_group()
        acked = {cs.sop_uid(p): p for p in cs.acknowledged(out)}
        assert acked, "nothing was acknowledged before the kill"
        assert len(acked) < len(files), "the kill came after the last instance"
        # A comes back: its catch-up indexes what it acknowledged, its uploads finish.
        a = cs.start_server(tmp_path / "a")
        found = wait_for(
            lambda: set(cs.find_uids(b.dimse_port, study)) >= set(acked) or None,
            30, "acknowledged instances on B",
        )  # fmt: skip
        assert found
        sent = list(acked.values())
        for node in (b, a):  # A reads its own evicted packs from the bucket too
            got = wait_for(lambda node=node: retrieved(node.dimse_port, study, sent), 60, "C-GET")
            for uid, path in acked.items():
                assert got[uid] == cs.dataset_bytes(path)
    finally:
        a.kill_group()
        assert b.stop() == 0


def test_postgresql_then_s3_down_during_ingest_fail_calls_and_lose_nothing(
    tmp_path: Path, pg_cluster: Cluster, s3_server: S3Server
) -> None:
    study, files = cs.write_study(tmp_path / "study", 90, 8300, rows=128)
    first, during_pg, during_s3 = files[:30], files[30:60], files[60:]
    configure_nodes(tmp_path, pg_cluster, s3_server, max_pending=64 << 10)
    a, b = cs.start_server(tmp_path / "a"), cs.start_server(tmp_path / "b")
    acked: list[Path] = []
    try:
        statuses = store_statuses(a.dimse_port, first)
        assert statuses == ["Success"] * len(first)
        acked += first
        pg_cluster.stop()
        try:
            statuses = store_statuses(a.dimse_port, during_pg)
            assert not any(s.startswith("Success") for s in statuses), statuses
        finally:
            pg_cluster.start()
        # Resumes by itself: the node answers Success again once PostgreSQL is back.
        wait_for(lambda: store_statuses(a.dimse_port, during_pg[:1]) == ["Success"], 30,
                 "success after PostgreSQL came back")  # fmt: skip
        acked += during_pg[:1]
        s3_server.stop()
        try:
            # Sealed packs pile up beyond max_pending_bytes: the node refuses (0xA700).
            refused = []
            for path in during_s3:
                status = store_statuses(a.dimse_port, [path])[0]
                if status.startswith("Success"):
                    acked.append(path)
                else:
                    refused.append(status)
                    break
                time.sleep(0.05)
            assert refused, "the node kept accepting with the bucket down"
            assert "A700" in refused[0] or "Refused" in refused[0], refused
        finally:
            s3_server.start()
        wait_for(lambda: store_statuses(a.dimse_port, during_s3[-1:]) == ["Success"], 30,
                 "success after S3 came back")  # fmt: skip
        acked += during_s3[-1:]
        # Nothing acknowledged was lost: B finds and retrieves every one.
        got = wait_for(lambda: retrieved(b.dimse_port, study, acked), 60, "C-GET from B")
        for path in acked:
            assert got[cs.sop_uid(path)] == cs.dataset_bytes(path)
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def local_packs(data: Path) -> list[Path]:
    return sorted((data / "store" / "packs").glob("*.dpk"))


def test_a_node_keeping_little_on_its_disk_serves_and_reindexes_from_the_bucket(
    tmp_path: Path, pg_cluster: Cluster, s3_server: S3Server
) -> None:
    """``store.local_bytes``: uploaded, indexed packs leave the node's disk; the node still
    retrieves its own instances (from the bucket), and ``reindex`` walks them there."""
    study, files = cs.write_study(tmp_path / "study", 120, 8400, rows=128)
    configure_nodes(tmp_path, pg_cluster, s3_server, local=1)
    a = cs.start_server(tmp_path / "a")
    try:
        for part in (files[:40], files[40:80], files[80:]):  # a few packs, sealed apart
            out, _ = cs.storescu(a.dimse_port, part).communicate(timeout=120)
            assert len(cs.acknowledged(out)) == len(part)
            time.sleep(0.6)
        uploaded = wait_for(
            lambda: len(local_packs(tmp_path / "a")) == 0 and s3_server.objects("site/node-a/"),
            30, "every pack evicted",
        )  # fmt: skip
        assert len(uploaded) >= 3
        got = wait_for(lambda: retrieved(a.dimse_port, study, files), 30, "C-GET from A")
        for path in files:
            assert got[cs.sop_uid(path)] == cs.dataset_bytes(path)
    finally:
        assert a.stop() == 0
    run = cs.duckpacs("reindex", "--data", str(tmp_path / "a"))
    assert run.returncode == 0, run.stderr
    # A backup copies what is on the disk; the bucket keeps the evicted packs.
    run = cs.duckpacs("backup", "--to", str(tmp_path / "backup"), "--data", str(tmp_path / "a"))
    assert run.returncode == 0, run.stderr
    a = cs.start_server(tmp_path / "a")
    try:
        assert set(cs.find_uids(a.dimse_port, study)) == {cs.sop_uid(p) for p in files}
        got = cs.get_study(a.dimse_port, study)
        assert {u: got[u] for u in got} == {cs.sop_uid(p): cs.dataset_bytes(p) for p in files}
    finally:
        assert a.stop() == 0
