"""Support for the routing and storage-policy tests: small instances with chosen attributes,
a DCMTK storescp receiver that keeps every copy it is sent, configuration files.

Instances are built with pydicom from fixed seeds, so a failing run reproduces.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from duckpacs.archive import part10
from tests.dimse_support import dcmtk_tool
from tests.helpers import dcmtk_env, duckpacs_cmd, free_port
from tests.synthetic import encode, uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def instance(
    study: str,
    number: int,
    *,
    modality: str = "CT",
    station: str = "",
    description: str = "",
    study_date: str = "20240105",
    patient: str = "ROUTE-1",
    size: int = 16,
) -> Dataset:
    """One small image of ``study`` (series per modality), pixels from a fixed seed."""
    ds = Dataset()
    ds.SOPClassUID = MR_IMAGE if modality == "MR" else CT_IMAGE
    ds.SOPInstanceUID = uid("route-instance", study, modality, number)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = uid("route-series", study, modality)
    ds.PatientID = patient
    ds.PatientName = f"Route^{patient}"
    ds.StudyDate = study_date
    ds.StudyDescription = description
    ds.Modality = modality
    ds.StationName = station
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    seed = hashlib.sha256(f"{study}/{modality}/{number}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(seed[:8], "little"))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = rng.integers(0, 4096, size=(size, size), dtype=np.uint16).tobytes()
    return ds


def study_files(folder: Path, name: str, count: int, **attrs: str) -> tuple[str, list[Path]]:
    """``count`` Part 10 files of a new study named ``name`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    study = uid("route-study", name)
    files = []
    for n in range(1, count + 1):
        path = folder / f"{name}-{n:05d}.dcm"
        path.write_bytes(encode(instance(study, n, **attrs)))
        files.append(path)
    return study, files


def dataset_of(data: bytes) -> bytes:
    return data[part10.split(data).dataset_offset :]


def sha(data: bytes) -> str:
    return hashlib.sha256(dataset_of(data)).hexdigest()


def sop_uid(data: bytes) -> str:
    return str(part10.split(data).sop_instance_uid)


@dataclass
class Receiver:
    """DCMTK storescp writing exactly what it receives (+B), one file per C-STORE (+uf), so
    an instance sent twice is two files."""

    ae_title: str
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [dcmtk_tool("storescp"), "-aet", self.ae_title, "+B", "+uf", "-od",
               str(self.folder), *extra, str(self.port)]  # fmt: skip
        self.process = subprocess.Popen(
            cmd, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_listening(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def copies(self) -> dict[str, list[bytes]]:
        """SOP Instance UID -> every copy received (whole files)."""
        got: dict[str, list[bytes]] = {}
        for path in sorted(self.folder.iterdir()):
            if path.is_file() and path.stat().st_size:
                data = path.read_bytes()
                got.setdefault(sop_uid(data), []).append(data)
        return got


@contextlib.contextmanager
def receiver(folder: Path, ae_title: str = "RECEIVER", *extra: str) -> Iterator[Receiver]:
    r = Receiver(ae_title, free_port(), folder)
    r.start(*extra)
    try:
        yield r
    finally:
        r.stop()


def _wait_listening(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def peer_toml(name: str, ae_title: str, port: int) -> str:
    return f'[peers.{name}]\nae_title = "{ae_title}"\nhost = "127.0.0.1"\nport = {port}\n'


def write_config(data: Path, text: str) -> None:
    data.mkdir(parents=True, exist_ok=True)
    (data / "duckpacs.toml").write_text("[dimse]\naccept_any = true\n" + text)


def storescu(port: int, files: list[Path], calling_ae: str) -> None:
    """DCMTK storescu sending ``files`` as ``calling_ae``; every one must be stored."""
    result = subprocess.run(
        [dcmtk_tool("storescu"), "-aet", calling_ae, "-aec", "DUCKPACS", "127.0.0.1",
         str(port), *map(str, files)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def queue_summary(data: Path) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        duckpacs_cmd("queue", "--data", str(data), "--json"),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {row["destination"]: row for row in json.loads(out.stdout)}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
