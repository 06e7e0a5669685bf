"""Several `duckpacs serve` nodes on one PostgreSQL index, and Debian's HAProxy in front of
them (issue 26): for tests/interop/test_cluster_haproxy.py and bench/bench_cluster.py.

:func:`haproxy_config` writes the configuration docs/CLUSTER.md shows (the guide's block is
checked against it), so the configuration a reader copies is the one the test runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import crash_support as cs

HAPROXY = "/usr/sbin/haproxy"


def configure_node(data: Path, dsn: str, node: str, password: str = "") -> None:
    """``<data>/duckpacs.toml`` for one node of a shared PostgreSQL index (the password, if
    any, in a file beside the data folder; DIMSE open to any caller, as the crash tests'
    are)."""
    data.mkdir(parents=True, exist_ok=True)
    text = f'[dimse]\naccept_any = true\n[index]\nbackend = "postgres"\ndsn = "{dsn}"\n'
    if password:
        secret = data.parent / f"{data.name}-pgpass"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        text += f'password_file = "{secret}"\n'
    (data / "duckpacs.toml").write_text(text + f'node = "{node}"\n')


@contextlib.contextmanager
def serve_nodes(root: Path, dsn: str, password: str, names: list[str]) -> Iterator[list[cs.Server]]:
    """One `duckpacs serve` per name, each with a data folder of its own under ``root``,
    all on the index ``dsn``; stopped (SIGTERM) on the way out."""
    servers: list[cs.Server] = []
    try:
        for name in names:
            configure_node(root / name, dsn, name, password)
            servers.append(cs.start_server(root / name))
        yield servers
    finally:
        for server in servers:
            server.stop()


@dataclass(frozen=True)
class Backend:
    """One node as HAProxy sees it."""

    name: str
    host: str
    dicom_port: int | str
    http_port: int | str


def haproxy_config(
    bind: str,
    dicom_port: int | str,
    http_port: int | str,
    nodes: list[Backend],
    stats_socket: str,
    system: bool = True,
) -> str:
    """HAProxy 2.6 configuration: DICOM balanced per TCP connection (each association stays
    on one node), HTTP per request. ``system`` adds the lines of a packaged install (syslog,
    chroot, the haproxy user), which need root."""

    def servers(port: str, extra: str) -> str:
        return "".join(
            f"    server {n.name} {n.host}:{getattr(n, port)} check{extra}\n" for n in nodes
        )

    system_lines = (
        "    log /dev/log local0\n"
        "    chroot /var/lib/haproxy\n"
        "    user haproxy\n"
        "    group haproxy\n"
        "    daemon\n"
        if system
        else ""
    )
    return (
        "global\n"
        f"{system_lines}"
        f"    stats socket {stats_socket} mode 600 level admin\n"
        "    maxconn 4096\n"
        "\n"
        "defaults\n"
        "    log global\n"
        "    timeout connect 5s\n"
        "    # Longer than the nodes' dimse.idle_timeout (60 s) and a large C-GET's silences.\n"
        "    timeout client 10m\n"
        "    timeout server 10m\n"
        "    timeout queue 30s\n"
        "    timeout check 5s\n"
        "    default-server inter 2s fall 3 rise 2\n"
        "\n"
        "# DICOM: one association is one TCP connection, so balancing per connection keeps\n"
        "# each association on one node. The check is a TCP connect to the node's DICOM port.\n"
        "frontend dicom\n"
        "    mode tcp\n"
        "    option tcplog\n"
        f"    bind {bind}:{dicom_port}\n"
        "    default_backend dicom_nodes\n"
        "\n"
        "backend dicom_nodes\n"
        "    mode tcp\n"
        "    balance roundrobin\n"
        "    # maxconn = the nodes' dimse.max_associations: further callers wait in\n"
        "    # HAProxy's queue instead of being rejected by a full node.\n"
        f"{servers('dicom_port', ' maxconn 32')}"
        "\n"
        "# HTTP (web viewer, DICOMweb): balanced per request; /api/status answers 200\n"
        "# without a login while the node serves.\n"
        "frontend http\n"
        "    mode http\n"
        "    option httplog\n"
        "    option forwardfor\n"
        "    timeout http-request 10s\n"
        f"    bind {bind}:{http_port}\n"
        "    default_backend http_nodes\n"
        "\n"
        "backend http_nodes\n"
        "    mode http\n"
        "    balance roundrobin\n"
        "    option httpchk GET /api/status\n"
        "    http-check expect status 200\n"
        f"{servers('http_port', '')}"
    )


@dataclass
class HAProxy:
    process: subprocess.Popen[str]
    dicom_port: int
    http_port: int
    stats_socket: Path

    def command(self, line: str) -> str:
        """One command on the stats socket (the runtime API); its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.stats_socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> list[dict[str, str]]:
        """The servers' rows of ``show stat`` (CSV: pxname, svname, status, stot, ...)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
        return [r for r in rows if r.get("svname") not in (None, "", "FRONTEND", "BACKEND")]

    def server_states(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(backend, server) -> (status, last check): ("UP", "L4OK") once a TCP check
        passed, ("UP", "L7OK") once an HTTP one did, ("DOWN", "L4CON") when refused."""
        return {
            (r["pxname"], r["svname"]): (r["status"], r["check_status"]) for r in self.servers()
        }

    def sessions(self, backend: str) -> dict[str, int]:
        """Connections (TCP) or requests (HTTP) sent to each server of ``backend`` so far."""
        return {r["svname"]: int(r["stot"]) for r in self.servers() if r["pxname"] == backend}

    def wait_states(self, want: dict[tuple[str, str], tuple[str, str]], timeout: float) -> None:
        """Until every server named in ``want`` is in its state (by its checks)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"haproxy exited: {self.process.communicate()[0]}"
            states: dict[tuple[str, str], tuple[str, str]] = {}
            with contextlib.suppress(OSError):
                states = self.server_states()
            if all(states.get(key) == value for key, value in want.items()):
                return
            assert time.monotonic() < deadline, f"haproxy's servers: {states}, want {want}"
            time.sleep(0.2)


def haproxy_available() -> bool:
    return os.access(HAPROXY, os.X_OK)


@contextlib.contextmanager
def run_haproxy(nodes: list[cs.Server], timeout: float = 30) -> Iterator[HAProxy]:
    """HAProxy on free loopback ports in front of ``nodes`` (named a, b, ...), with the
    configuration of :func:`haproxy_config`; yields once every server passed its check."""
    from tests.helpers import free_port

    root = Path(tempfile.mkdtemp(prefix="duckpacs-haproxy-"))
    backends = [
        Backend(chr(ord("a") + i), "127.0.0.1", n.dimse_port, n.http_port)
        for i, n in enumerate(nodes)
    ]
    dicom, http = free_port(), free_port()
    stats = root / "admin.sock"
    config = root / "haproxy.cfg"
    config.write_text(
        haproxy_config("127.0.0.1", dicom, http, backends, str(stats), system=os.geteuid() == 0)
    )
    check = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # -db: in the foreground (overrides ``daemon``), so it is our child to stop.
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    proxy = HAProxy(proc, dicom, http, stats)
    try:
        want = {}
        for b in backends:
            want[("dicom_nodes", b.name)] = ("UP", "L4OK")
            want[("http_nodes", b.name)] = ("UP", "L7OK")
        proxy.wait_states(want, timeout)
        yield proxy
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        shutil.rmtree(root, ignore_errors=True)
