"""A gigabyte instance through every path, duckpacs beside Orthanc (Debian, SQLite), one run.

Issues 13 and 25 ask that a single multi-frame instance of 2 GB (1,000 frames of 1024x1024
16-bit, written on the fly) go in and out in bounded memory: peak RSS at most 256 MB above
idle on every path, and the RSS back within 50 MB of idle afterwards. For each path this
prints the server's peak RSS above its idle RSS (VmHWM after a reset), the seconds it took
and the RSS left once it is done:

- C-STORE with DCMTK storescu, and C-GET of the study with DCMTK getscu: duckpacs and Orthanc;
- WADO-RS Retrieve Instance, and a rendered frame (PNG) of the middle frame: duckpacs;
- ``duckpacs import`` and ``duckpacs export`` of the file, each in a process of its own
  (its peak above a run with a small file, so opening the archive is not counted).

Every DCMTK tool and Orthanc run with TCP_NODELAY=1. The data stays in a temporary folder
(about 3 x the instance's size on disk) that is removed at the end.

    python bench/bench_big_instance.py [--frames 1000] [--no-orthanc]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import big_instance  # noqa: E402
from tests.interop.orthanc import orthanc_binary, run_orthanc  # noqa: E402
from tests.synthetic import uid  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}
ROWS = COLS = 1024
MB = 1 << 20


def status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measured(pid: int, action: Callable[[], object]) -> tuple[int, float, int]:
    """(peak RSS above idle, seconds, RSS above idle 2 s after) of ``action`` on ``pid``."""
    time.sleep(1)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (proc(5))
    idle = status(pid, "VmRSS")
    started = time.perf_counter()
    action()
    took = time.perf_counter() - started
    peak = status(pid, "VmHWM") - idle
    time.sleep(2)
    return peak, took, status(pid, "VmRSS") - idle


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr[-2000:]}")


def storescu(port: int, aet: str, path: Path) -> None:
    run(["storescu", "-aec", aet, "127.0.0.1", str(port), str(path)])


def getscu(port: int, aet: str, study: str, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run(["getscu", "-aec", aet, "-S", "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={study}", "-od", str(out), "127.0.0.1", str(port)])  # fmt: skip
    got = list(out.iterdir())
    for f in got:
        f.unlink()
    if not got:
        raise RuntimeError(f"getscu from {aet} received nothing")


def http_get(url: str, accept: str) -> None:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=3600) as response:
        while response.read(MB):
            pass


def serve(data: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    from tests.helpers import free_port

    data.mkdir(parents=True, exist_ok=True)
    (data / "duckpacs.toml").write_text(
        '[archive]\nlog_level = "WARNING"\n[dimse]\naccept_any = true\nbind = "127.0.0.1"\n'
    )
    port, http = free_port(), free_port()
    log = (data / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "duckpacs.cli.main", "serve", "--data", str(data),
         "--port", str(port), "--http-port", str(http), "--log-level", "INFO"],
        stdout=log, stderr=subprocess.STDOUT, env=ENV,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while "HTTP listening" not in (data / "serve.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("duckpacs did not start")
        time.sleep(0.1)
    return proc, port, http


def process_peak(args: list[str]) -> int:
    """Peak RSS of one ``duckpacs`` command in a process of its own."""
    code = (
        "import sys\n"
        "from duckpacs.cli.main import main\n"
        "rc = main(sys.argv[1:])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(rc, int(hwm.split()[1]) * 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return int(done.stdout.split()[-1])


def line(name: str, ours: tuple[int, float, int], peer: tuple[int, float, int] | None) -> None:
    def fmt(m: tuple[int, float, int]) -> str:
        return f"+{m[0] / MB:7.0f} MB {m[1]:6.1f} s  left +{m[2] / MB:5.0f} MB"

    text = f"{name:<28} duckpacs {fmt(ours)}"
    if peer is not None:
        text += f"   Orthanc {fmt(peer)}   peak ratio {peer[0] / max(ours[0], 1):5.1f}x"
    print(text, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--no-orthanc", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="duckpacs-big-") as tmp:
        work = Path(tmp)
        big = work / "big.dcm"
        big_instance.write(big, args.frames, ROWS, COLS)
        size = big.stat().st_size
        study, series = uid("big-study"), uid("big-series")
        sop = uid("big", args.frames, ROWS, COLS)
        print(f"instance: {args.frames} frames of {ROWS}x{COLS} 16-bit, {size / MB:.0f} MB")
        peer: dict[str, tuple[int, float, int]] = {}
        if not args.no_orthanc and orthanc_binary() is not None:
            # C-GET is answered for known modalities only (getscu calls as GETSCU).
            modalities = {"getscu": ("GETSCU", "127.0.0.1", 104)}
            with run_orthanc(work / "orthanc", modalities) as o:
                pid = o.process.pid
                peer["store"] = measured(pid, lambda: storescu(o.dicom_port, o.aet, big))
                try:
                    peer["get"] = measured(
                        pid, lambda: getscu(o.dicom_port, o.aet, study, work / "g")
                    )
                except RuntimeError as e:
                    print(f"Orthanc C-GET failed: {e}")
            shutil.rmtree(work / "orthanc")
        proc, port, http = serve(work / "data")
        try:
            pid = proc.pid
            line("C-STORE (storescu)", measured(pid, lambda: storescu(port, "DUCKPACS", big)),
                 peer.get("store"))  # fmt: skip
            line("C-GET (getscu)", measured(pid, lambda: getscu(port, "DUCKPACS", study,
                 work / "g")), peer.get("get"))  # fmt: skip
            base = (
                f"http://127.0.0.1:{http}/dicom-web/studies/{study}/series/{series}/instances/{sop}"
            )
            wado = 'multipart/related; type="application/dicom"'
            line("WADO-RS instance", measured(pid, lambda: http_get(base, wado)), None)
            middle = f"{base}/frames/{args.frames // 2}/rendered"
            line("WADO-RS rendered frame", measured(pid, lambda: http_get(middle, "image/png")),
                 None)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(60)
        shutil.rmtree(work / "data")
        small = Path(__import__("pydicom.data").data.get_testdata_file("CT_small.dcm"))
        base_import = process_peak(["import", "--data", str(work / "s"), "--json", str(small)])
        started = time.perf_counter()
        peak = process_peak(["import", "--data", str(work / "d"), "--json", str(big)])
        line("import", (peak - base_import, time.perf_counter() - started, 0), None)
        base_export = process_peak(["export", "--data", str(work / "s"), "--out", str(work / "so")])
        started = time.perf_counter()
        peak = process_peak(["export", "--data", str(work / "d"), "--out", str(work / "o")])
        line("export", (peak - base_export, time.perf_counter() - started, 0), None)
        print("target: peak at most +256 MB on every path; left within 50 MB of idle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
