"""Start-up benchmark (issue 14): how soon commands answer, from the venv and from the
single-file executable, beside DCMTK's dcmdump and Debian's Orthanc. One run.

- ``version`` and ``--help`` beside ``dcmdump --version`` and ``dcmdump --help`` (target: at
  most 150 ms);
- ``dump`` of one 64x64 MR file beside ``dcmdump FILE`` (target: at most 250 ms);
- ``serve`` on a new data folder, from launching the process to the first C-ECHO answered
  (DCMTK's echoscu, retried every 20 ms), beside Orthanc on new folders (target: at most 3 s).

Each figure is the median of ``--runs`` launches (serve: of 3). The ratio is the peer's time
over ours (above 1 means duckpacs is faster). Then the executable's size and what takes the
room (packaging/contents.py). DCMTK tools and Orthanc run with TCP_NODELAY=1 (FACTS.md 1).
The executable is dist/duckpacs (`make dist`); without it, its column is left empty.

    python bench/bench_startup.py [--runs 7] [--exe dist/duckpacs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import synthetic  # noqa: E402
from tests.corpus import synthetic_folder  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.interop.orthanc import orthanc_binary  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}
TARGETS = {"version": 0.150, "--help": 0.150, "dump": 0.250, "serve -> C-ECHO": 3.0}


def dcmtk(name: str) -> str | None:
    """DCMTK's tool, not pynetdicom's console script of the same name in the venv."""
    venv_bin = (Path(sys.prefix) / "bin").resolve()
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    path = os.pathsep.join(d for d in dirs if Path(d).resolve() != venv_bin)
    return shutil.which(name, path=path)


def median_time(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_to_echo(launch: Callable[[Path, int], subprocess.Popen[bytes]], aet: str) -> float:
    """Seconds from launching a server on a new folder to its first C-ECHO answered."""
    echoscu = dcmtk("echoscu")
    assert echoscu is not None
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        port = free_port()
        start = time.perf_counter()
        proc = launch(Path(tmp), port)
        try:
            while True:
                echo = [echoscu, "-to", "2", "-aet", "BENCH", "-aec", aet, "127.0.0.1", str(port)]
                done = subprocess.run(echo, capture_output=True, env=ENV)
                if done.returncode == 0:
                    return time.perf_counter() - start
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}")
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def duckpacs_launcher(cmd: list[str]) -> Callable[[Path, int], subprocess.Popen[bytes]]:
    def launch(tmp: Path, port: int) -> subprocess.Popen[bytes]:
        args = ["serve", "--data", str(tmp / "data"), "--bind", "127.0.0.1",
                "--port", str(port), "--http-port", str(free_port())]  # fmt: skip
        out = subprocess.DEVNULL
        return subprocess.Popen([*cmd, *args], stdout=out, stderr=out, env=ENV)

    return launch


def orthanc_launch(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    binary = orthanc_binary()
    assert binary is not None
    config = {
        "Name": "bench", "StorageDirectory": str(tmp / "storage"),
        "IndexDirectory": str(tmp / "index"), "HttpPort": free_port(), "DicomPort": port,
        "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "Plugins": [],
    }  # fmt: skip
    path = tmp / "orthanc.json"
    path.write_text(json.dumps(config))
    out = subprocess.DEVNULL
    return subprocess.Popen([binary, str(path)], stdout=out, stderr=out, env=ENV)


def fmt(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.0f} ms"


def ratio(peer: float | None, ours: float | None) -> str:
    return "" if peer is None or not ours else f"{peer / ours:.2f}"


def contents(exe: Path) -> None:
    python = ROOT / "target" / "dist-venv" / "bin" / "python"
    size = exe.resolve().stat().st_size / 1e6
    print(f"\nexecutable {exe.resolve().name}: {size:.1f} MB (target: at most 120 MB)")
    if python.exists():
        subprocess.run([str(python), str(ROOT / "packaging" / "contents.py"), str(exe)])
    else:
        print("(what takes the room: needs target/dist-venv, which `make dist` creates)")


def main() -> int:
    parser = argparse.ArgumentParser(description="start-up of duckpacs commands")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--exe", type=Path, default=ROOT / "dist" / "duckpacs")
    args = parser.parse_args()
    dcmdump = dcmtk("dcmdump")
    if dcmdump is None or dcmtk("echoscu") is None:
        print("skipped: DCMTK not installed (Debian package dcmtk)")
        return 0
    dcm = str(sorted(synthetic_folder(synthetic.MR_SERIES).glob("*.dcm"))[0])
    ours = {"venv": [str(Path(sys.prefix) / "bin" / "duckpacs")]}
    if args.exe.exists():
        ours["executable"] = [str(args.exe.resolve())]
    else:
        print(f"note: no {args.exe} (`make dist`): the executable's column stays empty")
    cases = {
        "version": (["version"], [dcmdump, "--version"]),
        "--help": (["--help"], [dcmdump, "--help"]),
        "dump": (["dump", dcm], [dcmdump, dcm]),
    }
    rows = []
    for name, (ours_args, peer_cmd) in cases.items():
        got = {kind: median_time([*cmd, *ours_args], args.runs) for kind, cmd in ours.items()}
        rows.append((name, got, median_time(peer_cmd, args.runs), "dcmdump"))
    got = {
        kind: statistics.median(time_to_echo(duckpacs_launcher(cmd), "DUCKPACS") for _ in range(3))
        for kind, cmd in ours.items()
    }
    peer = None
    if orthanc_binary() is not None:
        peer = statistics.median(time_to_echo(orthanc_launch, "ORTHANC") for _ in range(3))
    rows.append(("serve -> C-ECHO", got, peer, "Orthanc"))

    print(
        f"{'measure':<16} {'venv':>10} {'executable':>11} {'peer':>8} {'peer time':>10} "
        f"{'ratio venv':>11} {'ratio exe':>10}  target"
    )
    for name, got, peer_time, peer_name in rows:
        venv, exe = got.get("venv"), got.get("executable")
        print(
            f"{name:<16} {fmt(venv):>10} {fmt(exe):>11} {peer_name:>8} {fmt(peer_time):>10} "
            f"{ratio(peer_time, venv):>11} {ratio(peer_time, exe):>10}  "
            f"<= {fmt(TARGETS[name])}"
        )
    if args.exe.exists():
        contents(args.exe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
