"""The S3 test endpoint itself (tests/s3_support.py): it starts on a free port, requires
signed requests (an unsigned one gets S3's XML AccessDenied), and can be taken away and
brought back on the same port with what it stored. The signed protocol is exercised by the
store's own tests (Rust); this checks the fixture they stand on."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import s3_support
from tests.s3_support import S3Server


def unsigned_get(server: S3Server, key: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{server.endpoint}/{server.BUCKET}/{key}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def refuses_connections(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_it_answers_unsigned_requests_with_an_s3_error(s3_server: S3Server) -> None:
    code, body = unsigned_get(s3_server, "anything")
    assert code == 403
    assert b"<Code>AccessDenied</Code>" in body and b"Signature is required" in body
    assert (s3_server.root / S3Server.BUCKET).is_dir()
    env = s3_server.environment()
    assert env["DUCKPACS_STORE_ENDPOINT"] == s3_server.endpoint
    assert s3_server.remote("node-a")["node"] == "node-a"


def test_stop_and_start_keep_port_and_objects(s3_server: S3Server) -> None:
    stored = s3_server.root / S3Server.BUCKET / "duckpacs" / "node-a" / "p1.dpk"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"pack")
    port = s3_server.port
    s3_server.stop()
    assert refuses_connections(port) and not s3_server.answers()
    s3_server.start()
    assert s3_server.port == port and s3_server.answers()
    assert s3_server.objects("duckpacs/") == ["duckpacs/node-a/p1.dpk"]


def test_a_missing_binary_fails_with_the_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_support, "BINARY", tmp_path / "no-s3s-fs")
    with pytest.raises(pytest.fail.Exception, match="make s3s-fs"):
        S3Server(tmp_path / "root")
