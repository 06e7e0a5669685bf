"""Hostile peers against `duckpacs serve` (the Rust listener as the product runs it): each
gets its abort or reject, nothing is stored from it, and the server goes on serving others.
The Rust tests (rust/duckpacs-core/tests/net.rs, scp.rs) cover each case on the bare
listener; here the whole server, as configured."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.helpers import running_server


def echo_ok(port: int) -> bool:
    ae = AE(ae_title="HOSTILETEST")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DUCKPACS")
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and int(status.Status) == 0


def answer_to(port: int, payload: bytes) -> bytes:
    """What the server sends back to ``payload`` before it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_hostile_peers_get_aborts_and_others_are_still_served(tmp_path: Path) -> None:
    data = tmp_path / "a"
    data.mkdir()
    (data / "duckpacs.toml").write_text("[dimse]\naccept_any = true\nidle_timeout = 5\n")
    with running_server(data) as server:
        port = server.dimse_port
        before = rss_kib(server.process.pid)
        # 200 connections that send nothing (PS3.8 9.1.5: ARTIM frees them later).
        silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]
        try:
            assert echo_ok(port), "a normal peer is served beside 200 silent connections"
            # Garbage: an unknown PDU type gets A-ABORT (type 7) and the connection closes.
            assert answer_to(port, b"\x42" * 64)[:1] == b"\x07"
            # An absurd PDU length: no allocation of 4 GB, an A-ABORT.
            absurd = struct.pack(">BBI", 0x01, 0, 0xFFFFFFFF) + b"\0" * 16
            assert answer_to(port, absurd)[:1] == b"\x07"
            # A malformed A-ASSOCIATE-RQ (items cut short): A-ABORT.
            rq = struct.pack(">BBI", 0x01, 0, 20) + b"\x00\x01\x00\x00" + b"DUCKPACS" + b"\x10"
            assert answer_to(port, rq.ljust(26, b"\0"))[:1] in (b"\x03", b"\x07")
            assert echo_ok(port), "still serving"
            grown = rss_kib(server.process.pid) - before
            assert grown < 64 * 1024, f"200 idle connections cost {grown} KiB"
        finally:
            for s in silent:
                s.close()
        time.sleep(0.2)
        assert echo_ok(port)
    assert list((data / "store").glob("packs/*.dpk")) == [], "nothing stored from any of them"
