"""Test helpers: free ports, running `duckpacs serve` as a subprocess, DCMTK discovery."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK tools and Orthanc: without TCP_NODELAY they stall 40 ms a message."""
    return {**os.environ, "TCP_NODELAY": "1"}


def require_tool(name: str) -> str:
    import pytest

    # DCMTK's tool, not the same-named pynetdicom app script some wheels put in .venv/bin.
    path = shutil.which(name, path="/usr/bin:/usr/local/bin") or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package dcmtk; `make test` installs it as root)")
    return path


def duckpacs_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "duckpacs.cli.main", *args]


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    dimse_port: int
    http_port: int
    data_dir: Path
    log: list[str]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        # Not communicate(timeout=...): it reads the raw pipe and drops whatever readline()
        # in running_server already buffered. The server writes a few lines: no pipe stall.
        self.process.wait(timeout=timeout)
        assert self.process.stdout is not None
        self.log.extend(self.process.stdout.read().splitlines())
        self.process.stdout.close()
        return self.process.returncode


@contextmanager
def running_server(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None, ready: str = "HTTP listening"
) -> Iterator[RunningServer]:
    """Start `duckpacs serve` on free ports and wait until it logs `ready`."""
    dimse_port, http_port = free_port(), free_port()
    cmd = duckpacs_cmd(
        "serve",
        "--data",
        str(data_dir),
        "--port",
        str(dimse_port),
        "--http-port",
        str(http_port),
        "--bind",
        "127.0.0.1",
        *extra,
    )
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    server = RunningServer(proc, dimse_port, http_port, data_dir, [])
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError("server exited early:\n" + "\n".join(server.log))
            server.log.append(line.rstrip())
            if ready in line:
                break
        else:
            raise AssertionError("server did not become ready:\n" + "\n".join(server.log))
        yield server
    finally:
        if proc.poll() is None:
            server.stop()
