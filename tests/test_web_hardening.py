"""The web server against hostile clients and careless exposure: browser protection headers,
CSRF, body limits, login lockouts in the audit log, session expiry and revocation, the
off-loopback refusal, and an audit log that never stops a request."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from duckpacs.errors import NetworkError
from duckpacs.server.http import check_exposure
from duckpacs.web import auth
from tests.helpers import duckpacs_cmd, free_port
from tests.web_support.hostile import rss_of
from tests.web_support.server import FAST_HASHER, WebServer, web_server

USERS = {"ada": ("admin-pass-123", ["admin"]), "vera": ("viewer-pass-1", ["viewer"])}


def _wait_for(check: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def _audit(server: WebServer) -> list[dict[str, object]]:
    text = (server.data_dir / "audit.log").read_bytes().decode("utf-8", "replace")
    lines = text.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]


def _login(server: WebServer, user: str, password: str) -> requests.Session:
    s = requests.Session()
    r = s.post(server.url + "/api/login", json={"user": user, "password": password})
    assert r.status_code == 200, r.text
    return s


def test_every_answer_carries_the_browser_protection_headers(tmp_path: Path) -> None:
    with web_server(tmp_path) as server:
        for path in ("/", "/static/app.js", "/dicom-web/studies", "/dicom-web/nowhere"):
            h = requests.get(server.url + path).headers
            csp = h["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
            assert "frame-ancestors 'none'" in csp
            assert h["x-content-type-options"] == "nosniff"
            assert h["referrer-policy"] == "no-referrer"
        page = requests.get(server.url + "/").text
        assert "<script>" not in page and "<style" not in page
        assert not re.search(r"\son[a-z]+\s*=", page, re.IGNORECASE), "an inline handler"


def test_cookie_requests_that_change_state_need_the_ui_header(tmp_path: Path) -> None:
    with web_server(tmp_path, users=USERS, http__anonymous="off") as server:
        s = _login(server, "ada", "admin-pass-123")
        cookie = s.cookies.get(auth.SESSION_COOKIE)
        assert cookie
        # What a forged cross-site form could send: the cookie, no custom header.
        forged = s.post(server.url + "/api/tokens")
        assert forged.status_code == 403 and "X-Requested-With" in forged.json()["error"]
        ours = s.post(server.url + "/api/tokens", headers={"X-Requested-With": "duckpacs"})
        assert ours.status_code == 200
        # Credentials a browser never attaches by itself need no header.
        basic = requests.post(server.url + "/api/tokens", auth=("ada", "admin-pass-123"))
        assert basic.status_code == 200
        refused = [e for e in _audit(server) if e.get("status") == 403]
        assert refused == [], "only patient-data paths are audited"


def _raw_request(port: int, head: str, body_chunks: list[bytes]) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server may answer and close before the whole body is sent
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


def test_bodies_over_max_body_are_413(tmp_path: Path) -> None:
    with web_server(tmp_path, http__max_body="1 MiB") as server:
        port = int(server.url.rsplit(":", 1)[1])
        declared = (
            "POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Type: application/dicom\r\n"
            f"Content-Length: {(1 << 20) + 1}\r\n\r\n"
        )
        assert _raw_request(port, declared, []).startswith(b"HTTP/1.1 413")
        chunked = (
            "POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Type: application/dicom\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n" % (64 << 10) + b"\0" * (64 << 10) + b"\r\n"
        assert _raw_request(port, chunked, [chunk] * 20).startswith(b"HTTP/1.1 413")
        small = requests.post(server.dicomweb + "/studies", data=b"\0" * 1000,
                              headers={"Content-Type": "application/dicom"})  # fmt: skip
        assert small.status_code == 409  # within the limit: read, and refused as not DICOM
        statuses = [e["status"] for e in _audit(server) if e.get("path") == "/dicom-web/studies"]
        assert statuses.count(413) == 2, "refused uploads are in the audit log"


def test_lockouts_per_address_and_per_user_reach_the_audit_log(tmp_path: Path) -> None:
    with web_server(tmp_path, users=USERS, http__anonymous="off") as server:
        for _ in range(10):
            assert requests.get(server.dicomweb + "/studies", auth=("vera", "x")).status_code == 401
        r = requests.get(server.dicomweb + "/studies", auth=("vera", "viewer-pass-1"))
        assert r.status_code == 429
        lockouts = [e for e in _audit(server) if e.get("event") == "lockout"]
        assert any(e.get("from") == "127.0.0.1" for e in lockouts)
        assert any(e.get("user") == "vera" for e in lockouts)
    # One user guessed at from many addresses is locked out too.
    seen: list[tuple[str, str]] = []
    users = auth.UserStore(tmp_path / "u.json", FAST_HASHER)
    users.set_user("bob", "correct horse", ["viewer"])
    a = auth.Authenticator(
        users, auth.Signer(tmp_path / "s"), "off", on_lockout=lambda k, v, s: seen.append((k, v))
    )
    for i in range(10):
        assert a.login("bob", "wrong", f"10.0.0.{i}") is None
    with pytest.raises(auth.Throttled):
        a.login("bob", "correct horse", "10.0.1.1")
    assert ("user", "bob") in seen
    assert a.login("bob2", "whatever", "10.0.1.1") is None  # other names are not affected


def test_sessions_expire_and_are_revoked(tmp_path: Path) -> None:
    signer = auth.Signer(tmp_path / "secret")
    assert signer.verify(signer.issue("ada", "session", -1), "session") is None
    assert signer.verify(signer.issue("ada", "session", 60), "bearer") is None
    with web_server(tmp_path, users=USERS, http__anonymous="off") as server:
        me = server.url + "/api/me"
        ada = _login(server, "ada", "admin-pass-123")
        vera = _login(server, "vera", "viewer-pass-1")
        token = ada.post(server.url + "/api/tokens", headers={"X-Requested-With": "duckpacs"})
        bearer = {"Authorization": "Bearer " + token.json()["token"]}
        assert ada.get(me).status_code == vera.get(me).status_code == 200
        assert requests.get(me, headers=bearer).status_code == 200
        # A password change (another process: the CLI) ends that user's sessions only.
        store = auth.UserStore(server.data_dir / auth.USERS_FILENAME, FAST_HASHER)
        store.set_user("vera", "viewer-pass-2", ["viewer"])
        _wait_for(lambda: vera.get(me).status_code == 401, "vera's session ends")
        assert ada.get(me).status_code == 200
        assert _login(server, "vera", "viewer-pass-2").get(me).status_code == 200
        # logout-all ends every session and token.
        cmd = duckpacs_cmd("user", "logout-all", "--data", str(server.data_dir))
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        _wait_for(lambda: ada.get(me).status_code == 401, "ada's session ends")
        assert requests.get(me, headers=bearer).status_code == 401


def test_exposure_without_users_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="http.allow_exposed"):
        check_exposure("0.0.0.0", "any", 0, False)
    check_exposure("127.0.0.1", "any", 0, False)
    check_exposure("0.0.0.0", "loopback", 0, False)  # no one off this host gets in
    check_exposure("0.0.0.0", "any", 1, False)
    check_exposure("0.0.0.0", "any", 0, True)
    cmd = duckpacs_cmd(
        "serve", "--data", str(tmp_path / "data"), "--port", str(free_port()),
        "--http-port", str(free_port()), "--http-bind", "0.0.0.0",
    )  # fmt: skip
    env_run = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DUCKPACS_HTTP_ANONYMOUS": "any"},
    )  # fmt: skip
    assert env_run.returncode != 0
    errors = [line for line in env_run.stderr.splitlines() if "refusing" in line]
    assert len(errors) == 1 and "0.0.0.0" in errors[0], env_run.stderr


def test_the_audit_log_never_stops_a_request(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "audit.log").write_bytes(b'{"time": "2026-01-01T00:00:00Z", "user": "x"\n\xff\xfe')
    with web_server(tmp_path, users=USERS, http__anonymous="off") as server:
        refused = requests.get(server.dicomweb + "/studies")
        assert refused.status_code == 401
        ok = requests.get(server.dicomweb + "/studies", auth=("vera", "viewer-pass-1"))
        assert ok.status_code == 200
        entries = _audit(server)
        assert [e["status"] for e in entries if e.get("path") == "/dicom-web/studies"] == [401, 200]
        assert (server.data_dir / "audit.log").read_bytes().startswith(b'{"time": "2026-01-01')
        server.http.app.state.context.audit.close()  # as if the disk went away
        still = requests.get(server.dicomweb + "/studies", auth=("vera", "viewer-pass-1"))
        assert still.status_code == 200


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except BlockingIOError:
        return False


def test_slow_loris_neither_starves_queries_nor_keeps_its_connections(tmp_path: Path) -> None:
    """500 clients trickling their headers a byte a second: a QIDO still answers at once,
    and the trickling connections are cut off at http.header_timeout."""
    with web_server(tmp_path, http__header_timeout=5) as server:
        port = int(server.url.rsplit(":", 1)[1])
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(500)]
        started = time.monotonic()
        try:
            for s in socks:
                s.sendall(b"GET /dicom-web/studies HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            latencies = []
            for _ in range(3):
                for s in socks:
                    s.sendall(b"a")
                t0 = time.monotonic()
                r = requests.get(server.dicomweb + "/studies", timeout=30)
                latencies.append(time.monotonic() - t0)
                assert r.status_code == 200 and r.json()
                time.sleep(max(0.0, 1.0 - latencies[-1]))
            assert time.monotonic() - started < 5, "the trickle outlived the measurement"
            print(f"QIDO beside 500 slow clients: {max(latencies) * 1000:.0f} ms at most")
            assert max(latencies) < 1.0, f"QIDO took {max(latencies):.2f} s beside 500 slow clients"
            for s in socks:
                s.setblocking(False)
            _wait_for(lambda: all(_closed_by_server(s) for s in socks), "slow clients cut off")
        finally:
            for s in socks:
                s.close()


def _big_instance_stream(pixel_bytes: int, chunk: int = 1 << 20) -> tuple[str, bytes, int]:
    """A Part 10 header whose Pixel Data of ``pixel_bytes`` zeros follows it (never built
    whole): the SOP Instance UID, the header, and the total size."""
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (generate_uid() for _ in "123")
    ds.PatientID, ds.Modality = "BIG", "OT"
    ds.Rows, ds.Columns = pixel_bytes // 2 // 16384, 16384
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    head = buf.getvalue() + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", pixel_bytes)
    return str(ds.SOPInstanceUID), head, len(head) + pixel_bytes


def test_a_gigabyte_stow_is_streamed_not_buffered(tmp_path: Path) -> None:
    """1 GiB of Pixel Data in one multipart STOW-RS body, sent in chunks: the server's peak
    resident memory grows by at most 256 MiB (the body goes to the spool folder)."""
    pixel_bytes = 1 << 30
    uid, head, total = _big_instance_stream(pixel_bytes)
    boundary = "big-boundary"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.web_support.serve_folder", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), url
        requests.get(url + "/dicom-web/studies").raise_for_status()  # warm
        before = rss_of(proc.pid)

        def body() -> Iterator[bytes]:
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + head
            zeros = bytes(1 << 20)
            for _ in range(pixel_bytes >> 20):
                yield zeros
            yield f"\r\n--{boundary}--\r\n".encode()

        ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
        r = requests.post(url + "/dicom-web/studies", data=body(), headers={"Content-Type": ctype})
        assert r.status_code == 200, r.text
        assert r.json()["00081199"]["Value"][0]["00081155"]["Value"] == [uid]
        peak = _peak_rss(proc.pid)
        grown = peak - before
        print(f"1 GiB STOW-RS: RSS {before >> 20} MiB before, peak {peak >> 20} MiB")
        assert grown <= 256 << 20, f"peak RSS grew by {grown >> 20} MiB"
        stored = tmp_path / "corpus" / "ingested" / f"{uid}.dcm"
        assert stored.stat().st_size == total
        assert list((tmp_path / "data" / "http-spool").iterdir()) == []
    finally:
        proc.kill()
        proc.wait(timeout=20)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_the_login_form_is_read_with_a_small_cap(tmp_path: Path) -> None:
    with web_server(tmp_path, users=USERS, http__anonymous="off") as server:
        huge = b'{"user": "ada", "password": "' + b"x" * (1 << 20) + b'"}'
        r = requests.post(server.url + "/api/login", data=huge)
        assert r.status_code == 413


def test_endless_headers_are_cut_off(tmp_path: Path) -> None:
    with web_server(tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /dicom-web/studies HTTP/1.1\r\nHost: x\r\n")
            with pytest.raises(OSError):
                for _ in range(64):  # 64 MiB of one header, unless the server hangs up
                    sock.sendall(b"X-Endless: " + b"a" * (1 << 20) + b"\r\n")
        assert requests.get(server.dicomweb + "/studies").status_code == 200
