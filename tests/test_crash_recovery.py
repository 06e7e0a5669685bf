"""Crash recovery, checked from the outside: what the archive acknowledged is findable again
after SIGKILL of the whole process group, without a manual reindex (the store is the log, the
index catches up with it when the archive is opened for writing: duckpacs.archive.recovery).

Each cycle ingests into a fresh archive, kills it at a random moment, restarts it, and checks
as a workstation would: every acknowledged SOP Instance UID answers C-FIND and comes back by
C-GET byte for byte; the store and the index hold each instance once; `verify --deep` is
clean. `make test` runs a few cycles; `make soak` runs 50 (marker ``slow``).
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests import crash_support as cs

CYCLES = 3
SOAK_CYCLES = 50
ASSOCIATIONS = 4
INSTANCES = 240


def check_archive(data: Path, study: str, sent: dict[str, Path], acked: list[Path]) -> None:
    """Restart the archive and check every acknowledged instance from the outside."""
    server = cs.start_server(data)
    try:
        found = cs.find_uids(server.dimse_port, study)
        assert len(found) == len(set(found)), "an instance is answered twice"
        missing = {cs.sop_uid(p) for p in acked} - set(found)
        assert not missing, f"{len(missing)} acknowledged instances are not findable"
        retrieved = cs.get_study(server.dimse_port, study)
        assert set(retrieved) == set(found)
        for uid in found:  # everything found is an instance that was sent, byte for byte
            assert retrieved[uid] == cs.dataset_bytes(sent[uid]), uid
    finally:
        assert server.stop() == 0
    stats = json.loads(cs.duckpacs("stats", "--data", str(data), "--json").stdout)
    assert stats["instances"] == len(found), "the store holds copies the index does not count"
    verify = cs.duckpacs("verify", "--deep", "--data", str(data), "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def dimse_cycle(root: Path, seed: int) -> int:
    """storescu over several associations, SIGKILL at a random moment, then the checks."""
    rnd = random.Random(seed)
    study, files = cs.write_study(root / "in", INSTANCES, seed)
    sent = {cs.sop_uid(p): p for p in files}
    data = root / "archive"
    server = cs.start_server(data)
    senders = [cs.storescu(server.dimse_port, files[i::ASSOCIATIONS]) for i in range(ASSOCIATIONS)]
    time.sleep(rnd.uniform(0.1, 1.0))
    server.kill_group()
    acked = []
    for sender in senders:
        out, _ = sender.communicate(timeout=60)
        acked += cs.acknowledged(out)
    check_archive(data, study, sent, acked)
    return len(acked)


@pytest.mark.interop
@pytest.mark.parametrize("cycle", range(CYCLES))
def test_acknowledged_c_stores_survive_sigkill(tmp_path: Path, cycle: int) -> None:
    dimse_cycle(tmp_path, seed=1000 + cycle)


@pytest.mark.soak
@pytest.mark.interop
def test_soak_acknowledged_c_stores_survive_many_kills(tmp_path: Path) -> None:
    acked = [dimse_cycle(tmp_path / f"c{i}", seed=5000 + i) for i in range(SOAK_CYCLES)]
    assert any(0 < n < INSTANCES for n in acked), "no kill landed in the middle of an ingest"


def stow(port: int, path: Path) -> int:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = requests.post(
        f"http://127.0.0.1:{port}/dicom-web/studies",
        data=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
        timeout=30,
    )
    return response.status_code


@pytest.mark.parametrize("cycle", range(2))
def test_acknowledged_stow_survives_sigkill(tmp_path: Path, cycle: int) -> None:
    rnd = random.Random(2000 + cycle)
    study, files = cs.write_study(tmp_path / "in", 120, 2000 + cycle)
    sent = {cs.sop_uid(p): p for p in files}
    data = tmp_path / "archive"
    server = cs.start_server(data)
    acked: list[Path] = []

    def post(part: list[Path]) -> None:
        for path in part:
            try:
                if stow(server.http_port, path) == 200:
                    acked.append(path)
            except requests.RequestException:
                return

    threads = [threading.Thread(target=post, args=(files[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(rnd.uniform(0.3, 1.5))
    server.kill_group()
    for t in threads:
        t.join(timeout=60)
    check_archive(data, study, sent, acked)


@pytest.mark.parametrize("cycle", range(2))
def test_import_killed_leaves_journal_counted_instances_findable(
    tmp_path: Path, cycle: int
) -> None:
    """After SIGKILL of `import`, every input the journal counts is findable at the next
    open, before the import runs again; rerunning it completes the archive, once each."""
    import os
    import signal
    import subprocess
    import sys

    rnd = random.Random(3000 + cycle)
    study, files = cs.write_study(tmp_path / "in", 1200, 3000 + cycle)
    data = tmp_path / "archive"
    # The import command's own code, in small batches so that a kill lands between commits.
    script = (
        "import sys; from pathlib import Path; from duckpacs.ingest.importer import import_paths;"
        "import_paths([sys.argv[1]], Path(sys.argv[2]), batch_files=16)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "in"), str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    time.sleep(rnd.uniform(0.8, 2.0))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    journal = data / "import-journal.sqlite"
    counted: set[str] = set()
    if journal.exists():
        with sqlite3.connect(journal) as con:
            counted = {cs.sop_uid(Path(r[0])) for r in con.execute("SELECT input FROM done")}
    found = json.loads(
        cs.duckpacs("find", "--data", str(data), "--level", "image", "--json",
                    f"StudyInstanceUID={study}").stdout or "[]"
    )  # fmt: skip
    assert counted <= {r["SOPInstanceUID"] for r in found}
    rerun = cs.duckpacs("import", str(tmp_path / "in"), "--data", str(data), "--json")
    assert rerun.returncode == 0, rerun.stderr
    sent = {cs.sop_uid(p): p for p in files}
    check_archive(data, study, sent, files)


def test_serve_rebuilds_a_missing_or_torn_index(tmp_path: Path) -> None:
    study, files = cs.write_study(tmp_path / "in", 30, 4000)
    data = tmp_path / "archive"
    assert cs.duckpacs("import", str(tmp_path / "in"), "--data", str(data)).returncode == 0
    sent = {cs.sop_uid(p): p for p in files}
    index = data / "index.duckdb"

    index.unlink()
    check_archive(data, study, sent, files)

    with index.open("r+b") as f:  # torn, as a crash in the middle of a checkpoint leaves it
        f.truncate(index.stat().st_size // 3)
    server = cs.start_server(data)
    try:
        assert "rebuilding it from the store" in "\n".join(server.log)
        assert sorted(cs.find_uids(server.dimse_port, study)) == sorted(sent)
    finally:
        server.stop()
    assert list(data.glob("index.duckdb.damaged-*")), "the damaged file is kept aside"


def test_records_stored_but_not_indexed_are_caught_up_at_open(tmp_path: Path) -> None:
    """Records stored but never indexed (as a crash between the two leaves them) are indexed
    when the archive opens for writing, and the log says how many."""
    from duckpacs import _core
    from duckpacs.archive import recovery
    from duckpacs.index import Index

    _, files = cs.write_study(tmp_path / "in", 50, 4100, rows=8)
    data = tmp_path / "archive"
    index, caught = recovery.open_for_writing(data)
    index.close()
    with _core.Store(data / "store", writer_id=3) as store:
        store.put_many([p.read_bytes() for p in files[:20]])
        store.put_many([p.read_bytes() for p in files[20:]])
    index, caught = recovery.open_for_writing(data)
    with index:
        assert caught.indexed == 50
        assert index.stats()["instances"] == 50
        assert index.marks()
    again, caught = recovery.open_for_writing(data)
    with again:
        assert caught.indexed == 0  # the marks say there is nothing new to read
    with Index.open(data, read_only=True) as ro:
        assert ro.stats()["instances"] == 50
