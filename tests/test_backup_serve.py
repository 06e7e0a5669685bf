"""`duckpacs backup` while `duckpacs serve` runs: through the server's local socket, during a
DCMTK storescu ingest (every instance acknowledged before the backup began is restored, by
SHA-256), while the densifier rewrites packs, and the admin page's backup age."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
import requests

from duckpacs.backup.manifest import MANIFEST
from duckpacs.backup.status import STATUS_FILE
from duckpacs.web.auth import UserStore
from tests.backup_support import backup, content, restore, verify_deep
from tests.crash_support import (
    Server,
    dataset_bytes,
    find_uids,
    sop_uid,
    start_server,
    storescu,
    write_study,
)
from tests.routing_support import storescu as send
from tests.routing_support import wait_until
from tests.web_support.server import browser_available, logged_in_page


class TimedIngest:
    """storescu -v sending files, each Success response noted with the moment its line was
    read: a response read before a moment was surely sent before it."""

    def __init__(self, port: int, files: list[Path]) -> None:
        self.files = {str(f): f for f in files}
        self.acked: list[tuple[float, Path]] = []
        self.process = storescu(port, files)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        current = None
        for line in self.process.stdout:
            if "Sending file:" in line:
                current = line.split("Sending file:", 1)[1].strip()
            elif "Received Store Response" in line and current is not None:
                if "(Success)" in line:
                    self.acked.append((time.monotonic(), self.files[current]))
                current = None

    def acked_before(self, moment: float) -> list[Path]:
        return [f for at, f in list(self.acked) if at < moment]

    def wait(self) -> int:
        code = self.process.wait(timeout=300)
        self._reader.join(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def expected(files: list[Path]) -> dict[str, str]:
    return {sop_uid(f): hashlib.sha256(dataset_bytes(f)).hexdigest() for f in files}


def qido_studies(server: Server) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{server.http_port}/dicom-web/studies?includefield=all"
    rows = requests.get(url, timeout=30).json()
    for row in rows:
        row.pop("00081190", None)  # the Retrieve URL names the server's own port
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def test_backup_during_a_storescu_ingest_restores_every_acknowledged_instance(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    study, files = write_study(tmp_path / "in", 1200, seed=31, rows=96)
    server = start_server(data)
    try:
        ingest = TimedIngest(server.dimse_port, files)
        wait_until(lambda: len(ingest.acked) >= 100, "the first acknowledgements")
        began = time.monotonic()
        first = backup(data, tmp_path / "backup")
        assert ingest.wait() == 0
        assert first["held_by"] == "server"
        before = expected(ingest.acked_before(began))
        assert len(before) >= 100
        restored = tmp_path / "restored"
        restore(tmp_path / "backup", restored)
        verify_deep(restored)
        got = content(restored)
        assert {uid: got.get(uid) for uid in before} == before
        assert set(got) <= set(expected(files))
        # Once the ingest is over, a second run brings the backup level with the archive.
        second = backup(data, tmp_path / "backup")
        assert second["bytes_copied"] < second["bytes_total"]  # what the first run copied stays
        assert len(ingest.acked) == len(files)
        latest = tmp_path / "latest"
        restore(tmp_path / "backup", latest, "--force")
        verify_deep(latest)
        assert content(latest) == expected(files)
        twin = start_server(latest)
        try:
            assert sorted(find_uids(twin.dimse_port, study)) == sorted(
                find_uids(server.dimse_port, study)
            )
            assert qido_studies(twin) == qido_studies(server)
        finally:
            assert twin.stop() == 0
    finally:
        assert server.stop() == 0
    verify_deep(data)


def test_backup_while_the_densifier_rewrites_packs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _, files = write_study(tmp_path / "in", 40, seed=32, rows=512)  # frames in arrival encoding
    server = start_server(data)
    try:
        ingest = TimedIngest(server.dimse_port, files)
        assert ingest.wait() == 0 and len(ingest.acked) == len(files)
        dest = tmp_path / "backup"
        # Back up again and again while the densifier works (it starts after a second idle,
        # so the first run is before it), until its first pack is done: it must resume
        # after every run.
        backup(data, dest)
        runs = 1
        while not any("pack densified" in line for line in server.log):
            backup(data, dest)
            runs += 1
            assert runs < 200, "the densifier never finished a pack"
        restore(dest, tmp_path / "during")
        verify_deep(tmp_path / "during")
        assert content(tmp_path / "during") == expected(files)
        backup(data, dest)
        # The backup's packs are the store's now: the victim went, the densified pack came.
        live = {p.name for p in (data / "store" / "packs").glob("*.dpk")}
        copied = set(json.loads((dest / MANIFEST).read_text())["packs"])
        assert copied == live and any(name.startswith("w65533-") for name in copied)
        restore(dest, tmp_path / "after")
        verify_deep(tmp_path / "after")
        assert content(tmp_path / "after") == expected(files)
    finally:
        assert server.stop() == 0
    verify_deep(data)


def test_admin_page_shows_the_backup_age_to_admins_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    users = UserStore(data / "users.json")
    users.set_user("ada", "admin-pass-123", ["admin"])
    users.set_user("vera", "viewer-pass-1", ["viewer"])
    (data / "duckpacs.toml").write_text(
        '[dimse]\naccept_any = true\n[http]\nanonymous = "off"\n[backup]\nwarn_days = 3\n'
    )
    _, files = write_study(tmp_path / "in", 5, seed=33)
    server = start_server(data)
    url = f"http://127.0.0.1:{server.http_port}/api/admin/queue"
    ada, vera = ("ada", "admin-pass-123"), ("vera", "viewer-pass-1")
    try:
        send(server.dimse_port, files, "CRASHSCU")
        storage = requests.get(url, auth=ada, timeout=30).json()["storage"]
        assert storage["backup_at"] is None and storage["backup_stale"] is True
        assert storage["backup_warn_days"] == 3
        run = backup(data, tmp_path / "backup")
        storage = requests.get(url, auth=ada, timeout=30).json()["storage"]
        assert storage["backup_at"] == run["finished_at"]
        assert storage["backup_destination"] == run["destination"]
        assert storage["backup_bytes"] == run["bytes_total"] > 0
        assert 0 <= storage["backup_age_seconds"] < 600 and storage["backup_stale"] is False
        assert requests.get(url, auth=vera, timeout=30).status_code == 403
        assert requests.get(url, timeout=30).status_code == 401
        # Four days later (the record says so), the page warns.
        doc = json.loads((data / STATUS_FILE).read_text())
        doc["finished_at_epoch"] -= 4 * 86400
        (data / STATUS_FILE).write_text(json.dumps(doc))
        storage = requests.get(url, auth=ada, timeout=30).json()["storage"]
        assert storage["backup_stale"] is True and storage["backup_age_seconds"] > 3 * 86400
        page = requests.get(f"http://127.0.0.1:{server.http_port}/static/admin.js", timeout=30)
        assert "showBackup" in page.text
    finally:
        assert server.stop() == 0


@pytest.mark.skipif(not browser_available(), reason="needs playwright and /usr/bin/chromium")
def test_admin_page_warns_when_the_last_backup_is_old(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    UserStore(data / "users.json").set_user("ada", "admin-pass-123", ["admin"])
    (data / "duckpacs.toml").write_text('[dimse]\naccept_any = true\n[http]\nanonymous = "off"\n')
    _, files = write_study(tmp_path / "in", 3, seed=34)
    server = start_server(data)
    base = f"http://127.0.0.1:{server.http_port}"
    try:
        send(server.dimse_port, files, "CRASHSCU")
        backup(data, tmp_path / "backup")
        with logged_in_page(base, "ada", "admin-pass-123") as page:
            page.goto(base + "/admin")
            page.wait_for_function(
                "() => document.getElementById('backup').textContent.includes('Last backup')"
            )
            line = page.locator("#backup")
            assert str(tmp_path / "backup") in line.text_content()
            assert "warning" not in (line.get_attribute("class") or "")
            doc = json.loads((data / STATUS_FILE).read_text())
            doc["finished_at_epoch"] -= 3 * 86400
            (data / STATUS_FILE).write_text(json.dumps(doc))
            page.reload()
            page.wait_for_function(
                "() => document.getElementById('backup').classList.contains('warning')"
            )
            assert "3 days ago" in line.text_content()
            assert "Older than 2 days" in line.text_content()
    finally:
        assert server.stop() == 0
