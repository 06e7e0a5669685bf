"""Deleting through the trash: hidden from queries at once, restorable, kept across
`reindex`, a kill and a restart (the journal is in the store), emptied by `compact` after
`archive.trash_days`, every delete and restore in the audit log, and the same through a
running server's local socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from duckpacs.archive.facade import Archive
from duckpacs.archive.trash import Trash, epoch_us
from duckpacs.web.auth import UserStore
from tests.crash_support import duckpacs, find_uids, start_server
from tests.pg_support import drop_index
from tests.test_storage_policy import audit_lines, fill, present
from tests.web_support.server import browser_available, logged_in_page

# Every test on the embedded index and again on PostgreSQL (tests/pg_support.py).
pytestmark = pytest.mark.usefixtures("each_index_backend")


def _bytes(archive: Archive, study: str) -> dict[str, bytes]:
    return {
        r.sop_instance_uid: archive.read(r.location)
        for r in archive.locate("study", {"StudyInstanceUID": study})
    }


def test_discard_hides_at_once_and_restore_brings_back_the_same_bytes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
        before = _bytes(archive, s["a"])
        summary = archive.discard("study", {"StudyInstanceUID": s["a"]}, user="u", source="t")
        assert summary["instances"] == 3 and summary["studies"] == [s["a"]]
        assert present(archive) == {s["b"]}
        assert archive.locate("study", {"StudyInstanceUID": s["a"]}) == []
        assert archive.lookup(next(iter(before))) is None
        assert [b["batch"] for b in archive.trash_list()] == [summary["batch"]]
        back = archive.restore(summary["batch"], user="u", source="t")
        assert back["restored"] == 3 and back["state"] == "restored"
        assert _bytes(archive, s["a"]) == before
        assert archive.trash_list() == []
    assert duckpacs("verify", "--deep", "--data", str(data)).returncode == 0


def test_series_and_image_levels(tmp_path: Path) -> None:
    with Archive.open(tmp_path / "data") as archive:
        s = fill(archive, ["a"])
        refs = archive.locate("study", {"StudyInstanceUID": s["a"]})
        one = refs[0].sop_instance_uid
        assert (
            archive.discard("image", {"SOPInstanceUID": one}, user="u", source="t")["instances"]
            == 1
        )
        assert len(archive.locate("study", {"StudyInstanceUID": s["a"]})) == 2
        series = archive.find("series", {"StudyInstanceUID": s["a"]}, ["SeriesInstanceUID"])
        gone = archive.discard(
            "series", {"SeriesInstanceUID": series[0]["SeriesInstanceUID"]}, user="u", source="t"
        )
        assert gone["instances"] == 2
        assert present(archive) == set()
        nothing = archive.discard("study", {"StudyInstanceUID": "1.2.3"}, user="u", source="t")
        assert nothing["instances"] == 0 and len(archive.trash_list()) == 2


def test_trash_survives_reindex_and_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
        batch = archive.discard("study", {"StudyInstanceUID": s["a"]}, user="u", source="t")
    assert duckpacs("reindex", "--data", str(data)).returncode == 0
    drop_index(data)  # rebuilt from the store at the next opening
    with Archive.open(data) as archive:
        assert present(archive) == {s["b"]}
        archive.restore(batch["batch"], user="u", source="t")
    assert duckpacs("reindex", "--data", str(data)).returncode == 0
    with Archive.open(data) as archive:
        assert present(archive) == {s["a"], s["b"]}


def test_a_delete_killed_before_the_index_followed_is_finished_at_opening(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
        rows = archive.index.instances_at(
            [r.sop_instance_uid for r in archive.locate("study", {"StudyInstanceUID": s["a"]})]
        )
    # What a kill right after the journal line leaves: the line, and the index unchanged.
    trash = Trash(data)
    trash.append({"op": "trash", "batch": "killed", "at_us": 1, "user": "u", "from": "t",
                  "level": "study", "query": {}, "studies": [s["a"]], "bytes": 0,
                  "instances": [[u, r[3], epoch_us(r[4])] for u, r in rows.items()]})  # fmt: skip
    with trash.path.open("ab") as f:
        f.write(b'{"op":"trash","batch":"torn"')  # and a line torn by a kill
    with Archive.open(data) as archive:
        assert archive.caught_up.removed == 3
        assert present(archive) == {s["b"]}
        assert [b["batch"] for b in archive.trash_list()] == ["killed"]
        archive.restore("killed", user="u", source="t")
        assert present(archive) == {s["a"], s["b"]}


def test_compact_empties_the_trash_after_trash_days(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
        archive.discard("study", {"StudyInstanceUID": s["a"]}, user="u", source="t")
    kept = duckpacs("compact", "--json", "--data", str(data))
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["trash_purged"]["instances"] == 0
    env = dict(os.environ, DUCKPACS_TRASH_DAYS="0")
    done = subprocess.run(
        [sys.executable, "-m", "duckpacs.cli.main", "compact", "--json", "--data", str(data)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["trash_purged"] == {"batches": 1, "instances": 3}
    stats = json.loads(duckpacs("stats", "--json", "--data", str(data)).stdout)
    assert stats["instances"] == 3
    assert Trash(data).batches()[0].state == "purged"
    assert duckpacs("verify", "--deep", "--data", str(data)).returncode == 0


def test_cli_lists_then_deletes_and_audits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
    listed = duckpacs("delete", f"StudyInstanceUID={s['a']}", "--data", str(data))
    assert listed.returncode == 0 and "1 study(s) match" in listed.stdout
    with Archive.open(data) as archive:
        assert present(archive) == {s["a"], s["b"]}  # listing deletes nothing
    empty = duckpacs("delete", "PatientID=", "--yes", "--data", str(data))
    assert empty.returncode != 0 and "at least one TAG=VALUE" in empty.stderr
    done = duckpacs("delete", f"StudyInstanceUID={s['a']}", "--yes", "--json", "--data", str(data))
    assert done.returncode == 0, done.stderr
    batch = json.loads(done.stdout)["batch"]
    listed_trash = json.loads(duckpacs("trash", "list", "--json", "--data", str(data)).stdout)
    assert [b["batch"] for b in listed_trash] == [batch]
    assert duckpacs("trash", "restore", batch, "--data", str(data)).returncode == 0
    lines = [x for x in audit_lines(data / "audit.log") if str(x["path"]).startswith("/trash/")]
    assert [x["method"] for x in lines] == ["DELETE", "RESTORE"]
    assert all(x["user"] and x["from"] and x["time"] and x["batch"] == batch for x in lines)
    assert lines[0]["studies"] == [s["a"]] and lines[0]["instances"] == 3


def test_delete_through_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
    server = start_server(data)
    try:
        assert len(find_uids(server.dimse_port, s["a"])) == 3
        done = duckpacs("delete", f"StudyInstanceUID={s['a']}", "--yes", "--json",
                        "--data", str(data))  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert find_uids(server.dimse_port, s["a"]) == []  # C-FIND no longer sees them
        batch = json.loads(done.stdout)["batch"]
        assert duckpacs("trash", "restore", batch, "--data", str(data)).returncode == 0
        assert len(find_uids(server.dimse_port, s["a"])) == 3
    finally:
        assert server.stop() == 0


def test_web_delete_is_for_admins_and_hides_from_qido_and_wado(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = UserStore(data / "users.json")
    store.set_user("ada", "admin-pass-123", ["admin"])
    store.set_user("vera", "viewer-pass-1", ["viewer"])
    (data / "duckpacs.toml").write_text('[dimse]\naccept_any = true\n[http]\nanonymous = "off"\n')
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
        one = archive.locate("study", {"StudyInstanceUID": s["b"]})[0].sop_instance_uid
        series = archive.find("study", {"StudyInstanceUID": s["b"]}, ["SeriesInstanceUID"])
    server = start_server(data)
    base = f"http://127.0.0.1:{server.http_port}"
    ada, vera = ("ada", "admin-pass-123"), ("vera", "viewer-pass-1")
    study_url = f"{base}/api/studies/{s['a']}"
    qido = f"{base}/dicom-web/studies?StudyInstanceUID={s['a']}"
    wado = f"{base}/dicom-web/studies/{s['a']}"
    try:
        assert requests.delete(study_url, auth=vera, timeout=30).status_code == 403
        assert requests.get(qido, auth=vera, timeout=30).json()  # still there
        done = requests.delete(study_url, auth=ada, timeout=30)
        assert done.status_code == 200 and done.json()["instances"] == 3
        assert requests.get(qido, auth=vera, timeout=30).status_code in (200, 204)
        assert not (requests.get(qido, auth=vera, timeout=30).content or b"[]").strip(b"[] \n")
        assert requests.get(wado, auth=vera, timeout=30).status_code == 404
        assert requests.delete(study_url, auth=ada, timeout=30).status_code == 404
        image = f"{base}/api/studies/{s['b']}/series/{series[0]['SeriesInstanceUID']}"
        assert (
            requests.delete(f"{image}/instances/{one}", auth=ada, timeout=30).json()["instances"]
            == 1
        )
        usage = requests.get(f"{base}/api/admin/queue", auth=ada, timeout=30).json()["storage"]
        assert (usage["instances"], usage["studies"], usage["trash_instances"]) == (2, 1, 4)
        assert usage["trash_bytes"] > 0 and usage["trash_days"] == 7
        assert requests.get(f"{base}/api/admin/trash", auth=vera, timeout=30).status_code == 403
        batches = requests.get(f"{base}/api/admin/trash", auth=ada, timeout=30).json()
        assert len(batches) == 2
        restore = f"{base}/api/admin/trash/{batches[0]['batch']}/restore"
        assert requests.post(restore, auth=vera, timeout=30).status_code == 403
        assert requests.post(restore, auth=ada, timeout=30).json()["restored"] == 3
        assert requests.post(restore, auth=ada, timeout=30).status_code == 409
        assert requests.get(wado, auth=vera, timeout=30).status_code == 200
    finally:
        assert server.stop() == 0
    lines = audit_lines(data / "audit.log")
    deletes = [(x["user"], x["status"]) for x in lines if x["method"] == "DELETE"]
    assert ("vera", 403) in deletes and ("ada", 200) in deletes
    trash_lines = [x for x in lines if str(x["path"]).startswith("/trash/")]
    assert [(x["method"], x["user"], x["auth"]) for x in trash_lines] == [
        ("DELETE", "ada", "web"), ("DELETE", "ada", "web"), ("RESTORE", "ada", "web"),
    ]  # fmt: skip
    assert all(str(x["from"]).startswith("web 127.0.0.1") for x in trash_lines)


@pytest.mark.skipif(not browser_available(), reason="needs playwright and /usr/bin/chromium")
def test_admin_page_deletes_and_restores_a_study(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    UserStore(data / "users.json").set_user("ada", "admin-pass-123", ["admin"])
    (data / "duckpacs.toml").write_text('[dimse]\naccept_any = true\n[http]\nanonymous = "off"\n')
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
    server = start_server(data)
    base = f"http://127.0.0.1:{server.http_port}"
    try:
        with logged_in_page(base, "ada", "admin-pass-123") as page:
            page.goto(base + "/admin")
            page.on("dialog", lambda d: d.accept())
            page.fill("#delete-uid", s["a"])
            page.click("#delete-study button")
            page.wait_for_selector("#trash tbody tr")
            page.wait_for_function(  # the storage line follows the trash table
                "() => document.getElementById('storage').textContent.includes('trash 3 instances')"
            )
            page.click("#trash tbody tr button")
            page.wait_for_function(
                "() => document.querySelectorAll('#trash tbody tr').length === 0"
            )
        qido = requests.get(f"{base}/dicom-web/studies", auth=("ada", "admin-pass-123"), timeout=30)
        assert len(qido.json()) == 2  # restored
    finally:
        assert server.stop() == 0
