"""Migration benchmark: `duckpacs migrate` into the archive beside Orthanc pulling the same study.

A Debian Orthanc ("legacy", TCP_NODELAY=1 in its environment, FACTS.md section 1) is loaded
with one study; then, in one run:

* ours: :func:`duckpacs.ingest.migrate.migrate` into a fresh archive (C-FIND, C-GET of the
  study, staging, import: parse, dedupe, store with zstd, DuckDB index, staging removed);
* peer: a second Orthanc, the archive we compete with, pulls the study from the legacy one
  (``POST /modalities/legacy/move``: C-MOVE to itself, SQLite index, no compression);
* reference: DCMTK ``getscu`` writing the files to a folder (transport only, no archive).

Sets: the Toshiba MR series of the shared corpus (one study, if present; tests/corpus.py says
where) and synthetic 512x512 CT slices spread over several studies (ours retrieves
``--parallel`` studies at once, 1 by default like ``duckpacs migrate``, importing one study
while the next arrives; Orthanc's move handles them one after the other).
Prints instances/s and MB/s, ours beside Orthanc's, and the ratio.

Usage: ``python bench/bench_migrate.py [--ct N] [--studies N] [--parallel N]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.corpus import SHARED_CORPUS as CORPUS  # noqa: E402

from bench_store import synth_ct  # noqa: E402
from duckpacs.ingest.migrate import (  # noqa: E402
    RemotePeer,
    journal_path,
    migrate,
    open_archive,
    open_journal,
)

MB = 1e6
ENV = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK and Orthanc stall 40 ms a message without it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rest(port: int, path: str, body: bytes | None = None) -> object:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body)
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read() or b"null")


@contextmanager
def orthanc(work: Path, aet: str, dicom: int, modalities: dict[str, list[object]]) -> Iterator[int]:
    """A Debian Orthanc with its own storage; yields its HTTP port."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    work.mkdir(parents=True)
    http = free_port()
    config = {
        "Name": aet,
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "HttpPort": http,
        "DicomPort": dicom,
        "DicomAet": aet,
        "DicomCheckModalityHost": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "DicomModalities": modalities,
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    with (work / "orthanc.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, str(work / "orthanc.json")], stdout=log, stderr=log, env=ENV
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    rest(http, "/system")
                    break
                except (urllib.error.URLError, ConnectionError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"Orthanc {aet} did not start") from None
                    time.sleep(0.2)
            yield http
        finally:
            proc.terminate()
            proc.wait(30)


def row(name: str, n: int, nbytes: int, t_ours: float, t_peer: float, t_ref: float) -> None:
    def rate(t: float) -> str:
        return f"{n / t:6,.0f} inst/s {nbytes / MB / t:6,.1f} MB/s"

    print(
        f"{name:26} ours {rate(t_ours)} | Orthanc pull {rate(t_peer)} | ratio "
        f"{t_peer / t_ours:4.1f}x | getscu to files {rate(t_ref)}"
    )


def bench_set(name: str, files: list[Path], tmp: Path, parallel: int) -> None:
    nbytes = sum(p.stat().st_size for p in files)
    studies = sorted(
        {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in files}
    )
    legacy_port, puller_port = free_port(), free_port()
    modalities: dict[str, list[object]] = {
        "duckpacs": ["DUCKPACS", "127.0.0.1", free_port()],
        "puller": ["PULLER", "127.0.0.1", puller_port],
    }
    with orthanc(tmp / f"legacy-{name}", "LEGACY", legacy_port, modalities) as legacy_http:
        blobs = [p.read_bytes() for p in files]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda b: rest(legacy_http, "/instances", b), blobs))
        peer = RemotePeer("LEGACY", "127.0.0.1", legacy_port, "DUCKPACS", timeout=120)
        subprocess.run(["sync"], check=False)

        data = tmp / f"archive-{name}"
        start = time.perf_counter()
        with open_archive(data) as target, open_journal(journal_path(data, peer)) as journal:
            rec = migrate(peer, journal, target, date(1900, 1, 1), date.today(), parallel=parallel)
        t_ours = time.perf_counter() - start
        if not rec.complete or rec.instances_archived != len(files):
            raise RuntimeError(f"migration incomplete: {rec.lines()}")

        back = {"legacy": ["LEGACY", "127.0.0.1", legacy_port]}
        with orthanc(tmp / f"puller-{name}", "PULLER", puller_port, back) as puller_http:
            body = {
                "Level": "Study",
                "Resources": [{"StudyInstanceUID": uid} for uid in studies],
                "TargetAet": "PULLER",
                "Synchronous": True,
            }
            start = time.perf_counter()
            rest(puller_http, "/modalities/legacy/move", json.dumps(body).encode())
            t_peer = time.perf_counter() - start
            stats = rest(puller_http, "/statistics")
            if not isinstance(stats, dict) or int(stats["CountInstances"]) != len(files):
                raise RuntimeError(f"Orthanc pulled {stats}")

        out = tmp / f"getscu-{name}"
        out.mkdir()
        getscu = "/usr/bin/getscu" if os.access("/usr/bin/getscu", os.X_OK) else "getscu"
        cmd = [getscu, "-S", "-aet", "DUCKPACS", "-aec", "LEGACY", "127.0.0.1", str(legacy_port)]
        start = time.perf_counter()
        for uid in studies:
            keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}"]
            subprocess.run([*cmd, *keys, "-od", str(out)], check=True, env=ENV, capture_output=True)
        t_ref = time.perf_counter() - start
        if len(list(out.iterdir())) != len(files):
            raise RuntimeError("getscu did not receive every instance")
    label = f"{name} ({len(studies)} st, {len(files)} inst)"
    row(label, len(files), nbytes, t_ours, t_peer, t_ref)


def synthetic_studies(folder: Path, slices: int, studies: int) -> list[Path]:
    """``slices`` CT slices spread over ``studies`` studies (one series each), dated."""
    folder.mkdir()
    per = max(1, slices // studies)
    files = []
    for i, blob in enumerate(synth_ct(slices)):
        ds = pydicom.dcmread(io.BytesIO(blob))
        k = i // per
        ds.StudyInstanceUID = f"2.25.{4242000 + k}"
        ds.SeriesInstanceUID = f"2.25.{4243000 + k}"
        ds.StudyDate = f"202401{1 + k % 28:02d}"  # migration finds studies by Study Date
        ds.PatientID = f"BENCH{k}"
        path = folder / f"ct{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ct", type=int, default=200, help="synthetic CT slices (default 200)")
    ap.add_argument("--studies", type=int, default=8, help="synthetic studies (default 8)")
    ap.add_argument("--parallel", type=int, default=1, help="our parallel retrievals (1)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as t:
        tmp = Path(t)
        toshiba = CORPUS / "mr_toshiba_dti"
        if toshiba.is_dir():
            files = sorted(p for p in toshiba.rglob("*.dcm") if p.is_file())
            bench_set("Toshiba MR", files, tmp, args.parallel)
        else:
            print(f"{toshiba} absent: Toshiba set skipped")
        ct = synthetic_studies(tmp / "ct", args.ct, args.studies)
        bench_set("synthetic CT 512x512", ct, tmp, args.parallel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
