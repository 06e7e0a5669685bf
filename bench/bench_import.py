"""Bulk import benchmark (issue 7): `duckpacs import` beside Debian Orthanc's REST upload.

Same files, one run: Orthanc gets ``POST /instances`` from 4 parallel clients (temporary
configuration, free ports, TCP_NODELAY=1 in its environment anyway); we run the archive
import (discovery, parse, dedupe, store with one fsync per batch, DuckDB index). Sets: the
Toshiba MR series of the shared corpus (if present; tests/corpus.py says where) and synthetic
512x512 CT slices. Also the re-import of the already imported tree. Prints files/s and MB/s,
ours beside Orthanc's, ratio.

Usage: ``python bench/bench_import.py [--ct N]``
"""

from __future__ import annotations

import argparse
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.corpus import SHARED_CORPUS as CORPUS  # noqa: E402

from bench_store import synth_ct  # noqa: E402
from duckpacs.ingest.importer import import_paths  # noqa: E402

MB = 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(port: int, data: bytes) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/instances", data=data)
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()


def orthanc_upload(files: list[Path], work: Path) -> float:
    """Seconds Orthanc takes to receive ``files`` by REST from 4 clients (fresh storage)."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    http = free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "HttpPort": http,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    env = {**os.environ, "TCP_NODELAY": "1"}
    with (work / "orthanc.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, str(work / "orthanc.json")], stdout=log, stderr=log, env=env
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{http}/system", timeout=5).read()
                    break
                except (urllib.error.URLError, ConnectionError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("Orthanc did not start") from None
                    time.sleep(0.2)
            blobs = [p.read_bytes() for p in files]
            start = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda b: _post(http, b), blobs))
            return time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(30)


def ours(folder: Path, data: Path) -> tuple[float, int]:
    start = time.perf_counter()
    summary, counts = import_paths([folder], data, jobs=2)
    return time.perf_counter() - start, counts.stored + counts.journal_skipped + counts.already


def row(name: str, n: int, nbytes: int, t_ours: float, t_peer: float | None) -> None:
    o_fps, o_mbs = n / t_ours, nbytes / MB / t_ours
    if t_peer is None:
        print(f"{name:28} ours {o_fps:8,.0f} files/s {o_mbs:8,.1f} MB/s")
        return
    p_fps, p_mbs = n / t_peer, nbytes / MB / t_peer
    print(
        f"{name:28} ours {o_fps:8,.0f} files/s {o_mbs:8,.1f} MB/s | Orthanc {p_fps:6,.0f} "
        f"files/s {p_mbs:6,.1f} MB/s | ratio {t_peer / t_ours:5.1f}x"
    )


def bench_set(name: str, folder: Path, tmp: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".md")
    files = [p for p in files if not p.name.upper().startswith("LICENSE")]
    nbytes = sum(p.stat().st_size for p in files)
    subprocess.run(["sync"], check=False)
    t_peer = orthanc_upload(files, Path(tempfile.mkdtemp(dir=tmp)))
    data = tmp / f"archive-{name}"
    t_ours, n = ours(folder, data)
    row(f"{name} ({len(files)} files)", n, nbytes, t_ours, t_peer)
    t_again, n2 = ours(folder, data)
    row(f"{name} re-import", n2, nbytes, t_again, None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ct", type=int, default=400, help="synthetic CT slices (default 400)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as t:
        tmp = Path(t)
        toshiba = CORPUS / "mr_toshiba_dti"
        if toshiba.is_dir():
            bench_set("Toshiba MR", toshiba, tmp)
        else:
            print(f"{toshiba} absent: Toshiba set skipped")
        ct = tmp / "ct"
        ct.mkdir()
        for i, blob in enumerate(synth_ct(args.ct)):
            (ct / f"ct{i:04d}.dcm").write_bytes(blob)
        bench_set("synthetic CT 512x512", ct, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
