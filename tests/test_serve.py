"""`duckpacs serve`: starts, answers C-ECHO (pynetdicom and DCMTK echoscu), applies the access
policy, serves its HTTP status, and stops cleanly on SIGINT and SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.helpers import dcmtk_env, require_tool, running_server


def echo(
    port: int, calling: str = "TESTSCU", called: str = "DUCKPACS"
) -> tuple[bool, int | None, str]:
    """Returns (association accepted, C-ECHO status, rejection description)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        reason = ""
        if assoc.acceptor.primitive is not None and assoc.is_rejected:
            reason = str(assoc.acceptor.primitive.diagnostic)
        return False, None, reason
    status = assoc.send_c_echo()
    assoc.release()
    return True, int(status.Status) if "Status" in status else None, ""


def test_serve_answers_echo_and_stops_on_sigint(tmp_path: Path) -> None:
    data = tmp_path / "archive"
    with running_server(data) as server:
        assert data.is_dir(), "the data folder is created on first start"
        assert echo(server.dimse_port) == (True, 0x0000, "")
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/api/status").read()
        status = json.loads(body)
        assert status["ae_title"] == "DUCKPACS"
        assert status["data_dir"] == str(data)
        assert server.stop(signal.SIGINT) == 0
    log = "\n".join(server.log)
    assert f"data={data}" in log
    assert "Ctrl-C" in log
    assert "association accepted peer=TESTSCU" in log
    assert "C-ECHO status=success peer=TESTSCU" in log
    assert log.rstrip().endswith("stopped")


def test_serve_stops_on_sigterm(tmp_path: Path) -> None:
    with running_server(tmp_path / "a") as server:
        assert server.stop(signal.SIGTERM) == 0
    assert "stopping signal=SIGTERM" in "\n".join(server.log)


def test_wrong_called_ae_title_is_rejected(tmp_path: Path) -> None:
    with running_server(tmp_path / "a") as server:
        accepted, _, reason = echo(server.dimse_port, called="SOMEONE")
        assert not accepted
        assert reason == "7"  # PS3.8 9.3.4: called AE title not recognised
    assert 'reason="called AE title not recognised"' in "\n".join(server.log)


def test_unknown_peer_rejected_when_it_has_no_permissions(tmp_path: Path) -> None:
    data = tmp_path / "a"
    data.mkdir()
    (data / "duckpacs.toml").write_text(
        "[dimse]\nunknown_peer_permissions = []\n"
        '[peers.ws]\nae_title = "WS1"\nhost = "127.0.0.1"\nport = 104\npermissions = ["echo"]\n'
        '[peers.mod]\nae_title = "MOD"\nhost = "127.0.0.1"\nport = 105\npermissions = ["store"]\n'
    )
    with running_server(data) as server:
        accepted, _, reason = echo(server.dimse_port, calling="STRANGER")
        assert not accepted and reason == "3"  # calling AE title not recognised
        assert echo(server.dimse_port, calling="WS1") == (True, 0x0000, "")
        # A known peer without the echo permission associates but is refused the service.
        assert echo(server.dimse_port, calling="MOD") == (True, 0x0124, "")


def test_accept_any_lets_everyone_in(tmp_path: Path) -> None:
    data = tmp_path / "a"
    data.mkdir()
    (data / "duckpacs.toml").write_text(
        "[dimse]\nunknown_peer_permissions = []\naccept_any = true\n"
    )
    with running_server(data) as server:
        assert echo(server.dimse_port, calling="ANYONE") == (True, 0x0000, "")


def test_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with running_server(tmp_path / "a") as server:
        import os

        from tests.helpers import duckpacs_cmd

        result = subprocess.run(
            duckpacs_cmd(
                "serve",
                "--data",
                str(tmp_path / "b"),
                "--port",
                str(server.dimse_port),
                "--http-port",
                str(server.http_port),
            ),
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
    assert result.returncode != 0
    assert "duckpacs: error: cannot listen" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.interop
def test_dcmtk_echoscu(tmp_path: Path) -> None:
    echoscu = require_tool("echoscu")
    with running_server(tmp_path / "a") as server:
        result = subprocess.run(
            [echoscu, "-aec", "DUCKPACS", "127.0.0.1", str(server.dimse_port)],
            capture_output=True,
            text=True,
            env=dcmtk_env(),
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        bad = subprocess.run(
            [echoscu, "-aec", "NOTUS", "127.0.0.1", str(server.dimse_port)],
            capture_output=True,
            text=True,
            env=dcmtk_env(),
            timeout=30,
        )
        assert bad.returncode != 0
        assert "called ae title not recogni" in (bad.stdout + bad.stderr).lower()


def test_find_command_asks_the_running_server(tmp_path: Path) -> None:
    """While `serve` owns the index, `duckpacs find` answers through it (same engine)."""
    import os

    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from tests.helpers import duckpacs_cmd

    data = tmp_path / "a"
    data.mkdir()
    (data / "duckpacs.toml").write_text(
        '[peers.mod]\nae_title = "MOD"\nhost = "127.0.0.1"\nport = 105\npermissions = ["store"]\n'
    )
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    with running_server(data) as server:
        ae = AE(ae_title="MOD")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title="DUCKPACS")
        assert assoc.is_established
        assert int(assoc.send_c_store(ds).Status) == 0x0000
        assoc.release()
        result = subprocess.run(
            duckpacs_cmd(
                "find",
                "--data",
                str(data),
                "--level",
                "image",
                "--json",
                f"SOPInstanceUID={ds.SOPInstanceUID}",
            ),
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["SOPInstanceUID"] for r in rows] == [ds.SOPInstanceUID]


def test_sigterm_exits_promptly_and_aborts_what_outlives_the_grace(tmp_path: Path) -> None:
    """Idle: gone within a second of SIGTERM. With an association open: it may finish
    during dimse.shutdown_grace, then it is aborted and the process exits."""
    import time

    data = tmp_path / "a"
    data.mkdir()
    (data / "duckpacs.toml").write_text("[dimse]\nshutdown_grace = 2\n")
    with running_server(data) as server:
        started = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 5  # about 0.4 s here; generous against load
    with running_server(data) as server:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title="DUCKPACS")
        assert assoc.is_established
        started = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        waited = time.monotonic() - started
        assert 1.5 < waited < 6, waited  # the grace, then the abort
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert assoc.is_aborted
