"""Forwarding end to end through `duckpacs serve`, to two real receivers: DCMTK's storescp
(keeping every copy it is sent) and Debian's Orthanc.

- the rules send each receiver exactly the instances they match (Modality with CallingAE,
  a stable study by its description, a StationName wildcard);
- Orthanc, down at first, gets everything once it comes up;
- SIGKILL of the whole serve process group mid-forward loses nothing, and nothing the
  receiver had acknowledged is sent again;
- counts and SHA-256 of every received dataset match what was stored.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from duckpacs.routing.queue import PENDING
from tests.crash_support import duckpacs, start_server
from tests.helpers import free_port
from tests.interop.orthanc import orthanc_binary, orthanc_datasets, run_orthanc
from tests.routing_support import (
    peer_toml,
    queue_summary,
    receiver,
    sha,
    sop_uid,
    storescu,
    study_files,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.interop

ROUTES = """
[routing]
retry_initial = 1
retry_max = 2

[[route]]
name = "ct-from-scanners"
match = { Modality = "CT", CallingAE = "CT*" }
to = ["scp"]

[[route]]
name = "chest-studies"
match = { StudyDescription = "*CHEST*" }
to = ["orthanc"]
trigger = "stable-study"
stable_seconds = 1

[[route]]
name = "mr-station-b"
match = { StationName = "MR?B" }
to = ["scp", "orthanc"]
"""


def expected_of(files: list[Path]) -> dict[str, str]:
    return {sop_uid(f.read_bytes()): sha(f.read_bytes()) for f in files}


def test_rules_route_to_storescp_and_to_orthanc_once_it_is_up(tmp_path: Path) -> None:
    if orthanc_binary() is None:
        pytest.skip("Orthanc not installed (Debian package orthanc)")
    src = tmp_path / "in"
    _, ct = study_files(src, "ct", 5, modality="CT", station="CTA", description="HEAD")
    _, ct_ws = study_files(src, "ct-ws", 3, modality="CT", description="HEAD")
    _, chest = study_files(src, "chest", 4, modality="CR", description="CHEST PA")
    _, mr = study_files(src, "mr", 6, modality="MR", station="MR1B", description="KNEE")
    _, mr_other = study_files(src, "mr-other", 2, modality="MR", station="MR22")
    orthanc_port = free_port()  # nothing listens there yet
    data = tmp_path / "data"
    with receiver(tmp_path / "scp", "SCP") as scp:
        write_config(
            data,
            peer_toml("scp", "SCP", scp.port) + peer_toml("orthanc", "ORTHANC", orthanc_port)
            + ROUTES,
        )  # fmt: skip
        server = start_server(data)
        try:
            for files, ae in ((ct, "CTSCAN"), (ct_ws, "WORKSTATION"), (chest, "CRX"),
                              (mr, "MRSCAN"), (mr_other, "MRSCAN")):  # fmt: skip
                storescu(server.dimse_port, files, ae)
            to_scp = expected_of(ct + mr)
            to_orthanc = expected_of(mr + chest)
            wait_until(lambda: len(scp.copies()) == len(to_scp), "storescp's instances")
            wait_until(
                lambda: queue_summary(data).get("orthanc", {}).get("waiting") == len(to_orthanc),
                "Orthanc's jobs (the stable chest study included) waiting for it",
            )
            assert "ORTHANC" in str(queue_summary(data)["orthanc"]["error"])
            with run_orthanc(tmp_path / "orthanc", {}, dicom_port=orthanc_port) as orthanc:
                wait_until(
                    lambda: queue_summary(data)["orthanc"]["sent"] == len(to_orthanc),
                    "Orthanc's instances once it is up",
                )
                got_orthanc = orthanc_datasets(orthanc)
            copies = scp.copies()
        finally:
            server.stop()
    assert {u: [sha(c) for c in cs] for u, cs in copies.items()} == {
        u: [h] for u, h in to_scp.items()
    }
    assert got_orthanc == to_orthanc
    summary = queue_summary(data)
    assert (summary["scp"]["sent"], summary["scp"]["waiting"]) == (len(to_scp), 0)


def jobs_acknowledged(data: Path) -> set[str]:
    """SOP Instance UIDs whose C-STORE the queue recorded as answered or sent."""
    with sqlite3.connect(data / "queue.sqlite") as con:
        rows = con.execute(
            "SELECT sop_instance_uid FROM jobs WHERE state IN ('answered', 'sent')"
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_sigkill_mid_forward_loses_nothing_and_resends_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    total = 1500
    _, files = study_files(tmp_path / "in", "crash", total, modality="MR", station="MR1B")
    expected = expected_of(files)
    data = tmp_path / "data"
    with receiver(tmp_path / "scp", "SCP") as scp:
        write_config(data, peer_toml("scp", "SCP", scp.port)
                     + '[[route]]\nname = "all"\nto = ["scp"]\n')  # fmt: skip
        start_server(data).stop()  # the rules start reading here: what follows is routed
        imported = duckpacs("import", str(tmp_path / "in"), "--data", str(data))
        assert imported.returncode == 0, imported.stderr
        server = start_server(data)
        deadline = time.monotonic() + 120
        while len(list(scp.folder.iterdir())) < total // 10:
            assert time.monotonic() < deadline, "forwarding did not start"
            time.sleep(0.01)
        server.kill_group()
        received_at_kill = sum(len(c) for c in scp.copies().values())
        assert received_at_kill < total, "forwarding ended before the kill: send more"
        acknowledged = jobs_acknowledged(data)
        assert acknowledged, "the queue recorded no acknowledgement before the kill"
        server = start_server(data)
        try:
            wait_until(lambda: queue_summary(data)["scp"]["sent"] == total, "the rest")
            assert not any(queue_summary(data)["scp"][s] for s in PENDING)
        finally:
            server.stop()
        copies = scp.copies()
    assert set(copies) == set(expected)  # nothing lost
    twice = {u for u, c in copies.items() if len(c) > 1}
    assert not twice & acknowledged  # nothing acknowledged was sent again
    assert len(twice) <= 2  # at most the C-STOREs in flight at the kill: one per association
    assert all(sha(c) == expected[u] for u, cs in copies.items() for c in cs)
