"""Support for the crash-recovery tests: a synthetic study, `duckpacs serve` in a process group
of its own (so SIGKILL reaches every process it started), and the checks a workstation makes
afterwards (C-FIND, C-GET byte-exact).

Everything is generated here with a fixed seed, so a failing cycle reproduces.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from duckpacs.archive import part10
from tests.helpers import dcmtk_env, free_port

SCU_AE = "CRASHSCU"


def write_study(folder: Path, count: int, seed: int, rows: int = 64) -> tuple[str, list[Path]]:
    """``count`` small MR instances of one study in ``folder`` (Part 10, Explicit VR LE);
    returns the Study Instance UID and the files. UIDs derive from ``seed``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study = generate_uid(entropy_srcs=[f"crash-study-{seed}"])
    files = []
    for i in range(count):
        series_no = i % 3 + 1
        ds = Dataset()
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"crash-{seed}-{i}"])
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"crash-series-{seed}-{series_no}"])
        ds.PatientName = f"CRASH^TEST{seed}"
        ds.PatientID = f"CR{seed}"
        ds.StudyDate = "20240102"
        ds.Modality = "MR"
        ds.SeriesNumber = series_no
        ds.InstanceNumber = i + 1
        ds.EchoTime = float(10 + i % 7)
        ds.Rows = ds.Columns = rows
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        pixels = rng.integers(0, 4096, size=(rows, rows), dtype=np.uint16)
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"mr{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return study, files


def dataset_bytes(path: Path) -> bytes:
    """The dataset of a Part 10 file, without its meta group: what goes over DIMSE."""
    data = path.read_bytes()
    return data[part10.split(data).dataset_offset :]


def sop_uid(path: Path) -> str:
    return str(part10.split(path.read_bytes()).sop_instance_uid)


@dataclass
class Server:
    """`duckpacs serve` started as the leader of its own process group."""

    process: subprocess.Popen[str]
    dimse_port: int
    http_port: int
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def kill_group(self) -> None:
        """SIGKILL every process of the group, as a power cut or the OOM killer would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._reap()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self._reap()

    def _reap(self) -> int:
        code = self.process.wait(timeout=60)
        if self.reader is not None:
            self.reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def start_server(data: Path, ready: str = "HTTP listening", timeout: float = 120) -> Server:
    """Start serve on free ports in its own session; wait until it logs ``ready``."""
    data.mkdir(parents=True, exist_ok=True)
    config = data / "duckpacs.toml"
    if not config.exists():
        config.write_text("[dimse]\naccept_any = true\n")
    dimse, http = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "duckpacs.cli.main", "serve", "--data", str(data),
        "--port", str(dimse), "--http-port", str(http), "--bind", "127.0.0.1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    server = Server(proc, dimse, http)
    seen = threading.Event()

    def pump() -> None:  # keep reading, so the server never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            server.log.append(line.rstrip())
            if ready in line:
                seen.set()

    server.reader = threading.Thread(target=pump, daemon=True)
    server.reader.start()
    deadline = time.monotonic() + timeout
    while not seen.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.kill_group()
            raise AssertionError("server did not start:\n" + "\n".join(server.log))
    return server


_SENDING = re.compile(r"Sending file: (.+)$")
_RESPONSE = re.compile(r"Received Store Response \((.+)\)")


def storescu(port: int, files: list[Path]) -> subprocess.Popen[str]:
    """DCMTK storescu sending ``files`` on one association, verbose (acknowledgements)."""
    from tests.helpers import require_tool

    cmd = [require_tool("storescu"), "-v", "-aet", SCU_AE, "-aec", "DUCKPACS",
           "127.0.0.1", str(port), *map(str, files)]  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dcmtk_env()
    )


def acknowledged(output: str) -> list[Path]:
    """The files storescu -v reported a Success response for."""
    done, current = [], None
    for line in output.splitlines():
        if m := _SENDING.search(line):
            current = Path(m.group(1).strip())
        elif (m := _RESPONSE.search(line)) and current is not None:
            if m.group(1).startswith("Success"):
                done.append(current)
            current = None
    return done


def find_uids(port: int, study: str) -> list[str]:
    """Every SOP Instance UID the archive answers at IMAGE level for ``study`` (C-FIND)."""
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="DUCKPACS")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study
    query.SOPInstanceUID = ""
    uids = []
    try:
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                uids.append(str(identifier.SOPInstanceUID))
    finally:
        assoc.release()
    return uids


def get_study(port: int, study: str) -> dict[str, bytes]:
    """C-GET of ``study``: SOP Instance UID -> dataset bytes exactly as received."""
    received: dict[str, bytes] = {}

    def on_store(event: evt.Event) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    role = build_role(MRImageStorage, scp_role=True)
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="DUCKPACS", ext_neg=[role],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )  # fmt: skip
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    try:
        for _status, _identifier in assoc.send_c_get(
            query, StudyRootQueryRetrieveInformationModelGet
        ):
            pass
    finally:
        assoc.release()
    return received


def duckpacs(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "duckpacs.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
    )  # fmt: skip
