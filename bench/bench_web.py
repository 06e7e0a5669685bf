"""DICOMweb benchmark: ``duckpacs serve`` beside Debian's Orthanc + DICOMweb plugin, one run.

Both archives get the same corpus (mr_toshiba_dti of the shared corpus, which tests/corpus.py
locates: one 520-instance MR series): duckpacs through STOW-RS (PS3.18 10.5), Orthanc through
its REST ``POST /instances``.
Then, over keep-alive HTTP on loopback, the same requests to both:

- QIDO-RS study search (``/studies?PatientID=...``, PS3.18 10.6), median of 50;
- series ``/metadata`` of the 520-instance series (PS3.18 10.4.1.1.2): the first request and
  the median of 5;
- single frame ``/frames/1`` of 200 instances (PS3.18 10.4.1.1.4): p50 and p95;
- study retrieval (``multipart/related; type="application/dicom"``): best of 3, MB/s.

Prints our figure, Orthanc's, and the ratio (above 1 means duckpacs is better; the target
is 3). Orthanc runs with TCP_NODELAY=1 (FACTS.md section 1). Skips Orthanc with a message
when it or its DICOMweb plugin is absent.

    python bench/bench_web.py [--frames 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.corpus import SHARED_CORPUS  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.interop.orthanc import orthanc_binary  # noqa: E402

MR_DIR = SHARED_CORPUS / "mr_toshiba_dti"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ENV = {**os.environ, "TCP_NODELAY": "1"}
DICOM_MULTIPART = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:  # listening before the app is up: a timeout
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start; see {log}:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


@contextmanager
def stopping(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def run_duckpacs(data: Path) -> Iterator[str]:
    """``duckpacs serve`` on free ports; yields the DICOMweb base URL."""
    data.mkdir(parents=True, exist_ok=True)
    (data / "duckpacs.toml").write_text('[archive]\nlog_level = "WARNING"\n')
    http = free_port()
    log = data / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "duckpacs.cli.main", "serve", "--data", str(data),
             "--port", str(free_port()), "--http-port", str(http), "--bind", "127.0.0.1"],
            stdout=out, stderr=subprocess.STDOUT, env=ENV,
        )  # fmt: skip
        with stopping(proc):
            wait_http(f"http://127.0.0.1:{http}/api/status", proc, log)
            yield f"http://127.0.0.1:{http}/dicom-web"


@contextmanager
def run_orthanc(work: Path) -> Iterator[str]:
    """Debian's Orthanc (SQLite, no compression) with the DICOMweb plugin; yields its root."""
    binary = orthanc_binary()
    if binary is None:
        raise FileNotFoundError("Orthanc is not installed")
    work.mkdir(parents=True, exist_ok=True)
    http = free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "StorageCompression": False,
        "HttpPort": http,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = work / "orthanc.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, str(work / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT, env=ENV
        )
        with stopping(proc):
            wait_http(f"http://127.0.0.1:{http}/system", proc, log)
            yield f"http://127.0.0.1:{http}"


def load_duckpacs(base: str, files: list[Path]) -> float:
    """STOW-RS in batches of 40 instances; returns seconds."""
    start = time.perf_counter()
    with requests.Session() as s:
        for i in range(0, len(files), 40):
            boundary = f"bench{i}"
            parts = [
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + f.read_bytes()
                + b"\r\n"
                for f in files[i : i + 40]
            ]
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
            r = s.post(f"{base}/studies", data=body, headers={"Content-Type": ctype})
            r.raise_for_status()
    return time.perf_counter() - start


def load_orthanc(root: str, files: list[Path]) -> float:
    start = time.perf_counter()
    with requests.Session() as s:
        for f in files:
            s.post(f"{root}/instances", data=f.read_bytes()).raise_for_status()
    return time.perf_counter() - start


def timed(call: Callable[[], requests.Response]) -> float:
    start = time.perf_counter()
    r = call()
    r.raise_for_status()
    _ = r.content
    return (time.perf_counter() - start) * 1000


def measure(base: str, study: str, series: str, patient: str, frames: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with requests.Session() as s:
        qido = f"{base}/studies?PatientID={patient}"
        timed(lambda: s.get(qido, headers={"Accept": "application/dicom+json"}))
        out["QIDO study search, median ms"] = statistics.median(
            timed(lambda: s.get(qido, headers={"Accept": "application/dicom+json"}))
            for _ in range(50)
        )
        meta = f"{base}/studies/{study}/series/{series}/metadata"
        start = time.perf_counter()
        got = s.get(meta, headers={"Accept": "application/dicom+json"})
        got.raise_for_status()
        instances = got.json()
        out["series /metadata, first ms"] = (time.perf_counter() - start) * 1000
        out["series /metadata, median ms"] = statistics.median(
            timed(lambda: s.get(meta, headers={"Accept": "application/dicom+json"}))
            for _ in range(5)
        )
        uids = [i["00080018"]["Value"][0] for i in instances]
        random.Random(1).shuffle(uids)
        urls = [f"{base}/studies/{study}/series/{series}/instances/{u}/frames/1" for u in uids]
        times = sorted(
            timed(lambda url=url: s.get(url, headers={"Accept": FRAME_ACCEPT}))  # type: ignore[misc]
            for url in (urls * (frames // len(urls) + 1))[:frames]
        )
        out["single frame p50 ms"] = times[len(times) // 2]
        out["single frame p95 ms"] = times[int(len(times) * 0.95)]
        best = 0.0
        for _ in range(3):
            start = time.perf_counter()
            size = 0
            with s.get(
                f"{base}/studies/{study}", headers={"Accept": DICOM_MULTIPART}, stream=True
            ) as r:
                r.raise_for_status()
                for chunk in r.iter_content(1 << 20):
                    size += len(chunk)
            best = max(best, size / 1e6 / (time.perf_counter() - start))
        out["study retrieval MB/s"] = best
        out["instances in series /metadata"] = len(instances)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="frame requests (200)")
    parser.add_argument("--no-orthanc", action="store_true", help="duckpacs figures only")
    args = parser.parse_args()
    if not MR_DIR.is_dir():
        print(f"skipped: {MR_DIR} absent")
        return 0
    import pydicom

    files = sorted(MR_DIR.glob("*.dcm"))
    head = pydicom.dcmread(files[0], stop_before_pixels=True)
    ids = (str(head.StudyInstanceUID), str(head.SeriesInstanceUID), str(head.PatientID))
    work = Path(tempfile.mkdtemp(prefix="bench-web-"))
    try:
        with run_duckpacs(work / "duckpacs") as base:
            load = load_duckpacs(base, files)
            print(f"duckpacs: {len(files)} instances stored by STOW-RS in {load:.1f} s")
            ours = measure(base, *ids, args.frames)
        theirs: dict[str, float] = {}
        if args.no_orthanc:
            pass
        elif orthanc_binary() is None or not PLUGIN.is_file():
            print("Orthanc or its DICOMweb plugin is not installed: duckpacs figures only")
        else:
            with run_orthanc(work / "orthanc") as root:
                load = load_orthanc(root, files)
                print(f"orthanc: {len(files)} instances stored by REST in {load:.1f} s")
                theirs = measure(f"{root}/dicom-web", *ids, args.frames)
        print(f"\n{'metric':<34} {'duckpacs':>10} {'orthanc':>10} {'ratio':>7}")
        for metric, value in ours.items():
            other = theirs.get(metric, 0.0)
            higher_better = "MB/s" in metric
            if metric.startswith("instances") or not other:
                print(f"{metric:<34} {value:>10.2f} {other:>10.2f}")
                continue
            ratio = value / other if higher_better else other / value
            print(f"{metric:<34} {value:>10.2f} {other:>10.2f} {ratio:>6.2f}x")
        print("ratio > 1: duckpacs better (ms: theirs/ours; MB/s: ours/theirs); target 3x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
