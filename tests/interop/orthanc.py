"""Run Debian's Orthanc as a DICOM peer (tests and bench/bench_dimse.py).

SQLite index, no storage compression, no plugins, TCP_NODELAY=1 (FACTS.md section 1). A peer
named in ``modalities`` as ``(AET, host, port)`` may store, find, get and move; given as a
dict in Orthanc's own form (``{"AET": ..., "Host": ..., "Port": ..., "AllowGet": False}``) it
gets exactly the permissions listed. ``options`` adds or overrides configuration options
(e.g. ``{"LimitFindResults": 2}``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread

from duckpacs.archive import part10
from tests.helpers import free_port


@dataclass
class Orthanc:
    process: subprocess.Popen[bytes]
    aet: str
    dicom_port: int
    http_port: int

    def rest(self, path: str, body: Any = None, method: str | None = None) -> Any:
        """Call the REST API; ``body`` is sent as is when bytes (a DICOM file), else as JSON."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        url = f"http://127.0.0.1:{self.http_port}{path}"
        req = urllib.request.Request(url, data=data, method=method)
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read() or b"null")


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None
    )


@contextmanager
def run_orthanc(
    workdir: Path,
    modalities: dict[str, tuple[str, str, int] | dict[str, Any]],
    aet: str = "ORTHANC",
    dicom_port: int | None = None,
    options: dict[str, Any] | None = None,
) -> Iterator[Orthanc]:
    binary = orthanc_binary()
    if binary is None:
        raise FileNotFoundError("Orthanc is not installed (Debian package orthanc)")
    workdir.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = dicom_port or free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "StorageCompression": False,
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "UnknownSopClassAccepted": True,
        "Plugins": [],
        "ConcurrentJobs": 2,
        "DicomModalities": {
            name: spec if isinstance(spec, dict) else list(spec)
            for name, spec in modalities.items()
        },
        **(options or {}),
    }
    path = workdir / "orthanc.json"
    path.write_text(json.dumps(config))
    log = (workdir / "orthanc.log").open("wb")
    process = subprocess.Popen(
        [binary, str(path)], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1"},
    )  # fmt: skip
    server = Orthanc(process, aet, dicom_port, http_port)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.rest("/system")
                break
            except (urllib.error.URLError, ConnectionError) as e:
                if process.poll() is not None or time.monotonic() > deadline:
                    log_path = workdir / "orthanc.log"
                    raise RuntimeError(f"Orthanc did not start; see {log_path}") from e
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def peak_rss_kib(pids: list[int]) -> int:
    """Sum of the peak resident set sizes (VmHWM) of these processes, in KiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def dataset_sha(data: bytes) -> str:
    """SHA-256 of a Part 10 stream's dataset (its meta group left out: each writer makes
    its own)."""
    return hashlib.sha256(data[part10.split(data).dataset_offset :]).hexdigest()


def orthanc_datasets(orthanc: Orthanc) -> dict[str, str]:
    """SOP Instance UID -> dataset SHA-256 of every instance Orthanc holds."""
    got = {}
    for instance in orthanc.rest("/instances"):
        url = f"http://127.0.0.1:{orthanc.http_port}/instances/{instance}/file"
        data = urllib.request.urlopen(url, timeout=30).read()
        uid = str(dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        got[uid] = dataset_sha(data)
    return got
