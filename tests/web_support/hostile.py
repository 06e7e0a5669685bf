"""A `duckpacs serve` over a real archive for the hostile-client tests: its log drained by a
thread (a full pipe would stall the server), its resident memory read from /proc."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.helpers import RunningServer, running_server


@dataclass
class HostileTarget:
    server: RunningServer
    url: str
    log: collections.deque[str]

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def rss(self) -> int:
        """Resident memory of the server process, bytes."""
        return rss_of(self.pid)

    def peak_rss(self) -> int:
        """The process's high-water mark of resident memory (VmHWM), bytes."""
        return _status_kib(self.pid, "VmHWM") * 1024

    def alive(self) -> bool:
        if self.server.process.poll() is not None:
            return False
        return requests.get(self.url + "/api/status", timeout=10).status_code == 200


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def rss_of(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


@contextmanager
def hostile_target(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[HostileTarget]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with running_server(data_dir, *extra, env=env) as server:
        lines: collections.deque[str] = collections.deque(maxlen=2000)
        stdout = server.process.stdout
        assert stdout is not None

        def drain() -> None:
            for line in stdout:
                lines.append(line.rstrip())

        thread = threading.Thread(target=drain, name="server-log", daemon=True)
        thread.start()
        try:
            yield HostileTarget(server, f"http://127.0.0.1:{server.http_port}", lines)
        finally:
            server.process.terminate()
            server.process.wait(timeout=20)
            thread.join(timeout=5)
            stdout.close()
