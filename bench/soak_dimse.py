"""Soak: the same mixed DIMSE load on duckpacs and on Orthanc, one after the other.

For ``--minutes`` each (10 by default): two storescu loops sending the MR study (the
Toshiba series 4 times, 2,080 instances; every round after the first is the same instances
again), one storescu loop of synthetic CT, one loop of image-level C-FIND of the MR study
(2,080 matches) and one loop of C-GET of that study. Every DCMTK tool and Orthanc run with
TCP_NODELAY=1. Printed: operations completed per loop and the ratio, failures (must be 0),
and the resident memory of the server sampled every 5 s (the curve, its peak, and how flat it
stays after the first minute: issues 12 and 25 ask for 10 %).

    python bench/soak_dimse.py [--minutes 10] [--ct 100]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port  # noqa: E402
from tests.interop.orthanc import orthanc_binary, run_orthanc  # noqa: E402

import bench_dimse as bd  # noqa: E402

SAMPLE_SECONDS = 5.0


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class Loop(threading.Thread):
    """Runs ``command()`` again and again until ``deadline``; counts what it did."""

    def __init__(self, name: str, command: Callable[[], list[str]], deadline: float) -> None:
        super().__init__(name=name, daemon=True)
        self.command, self.deadline = command, deadline
        self.done = self.failed = 0
        self.last_error = ""

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            result = subprocess.run(self.command(), env=bd.ENV, capture_output=True, check=False)
            if result.returncode == 0:
                self.done += 1
            else:
                self.failed += 1
                self.last_error = result.stderr.decode(errors="replace")[-300:]


def soak(
    port: int, aet: str, pids: list[int], mr: list[Path], ct: list[Path], work: Path, minutes: float
) -> tuple[dict[str, Loop], list[int]]:
    deadline = time.monotonic() + minutes * 60
    study = bd.study_uid(mr[0])
    scu = ["-aet", bd.SCU, "-aec", aet]
    got = work / "get"

    def store(files: list[Path]) -> Callable[[], list[str]]:
        return lambda: [bd.tool("storescu"), *scu, "127.0.0.1", str(port), *map(str, files)]

    def get() -> list[str]:
        shutil.rmtree(got, ignore_errors=True)
        got.mkdir(parents=True)
        return [bd.tool("getscu"), *scu, "-S", "+B", "-od", str(got),
                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                "127.0.0.1", str(port)]  # fmt: skip

    def find() -> list[str]:
        return [bd.tool("findscu"), *scu, "-S", "-k", "QueryRetrieveLevel=IMAGE",
                "-k", f"StudyInstanceUID={study}", "-k", "SOPInstanceUID", "-k", "EchoTime",
                "127.0.0.1", str(port)]  # fmt: skip

    loops = {
        "stores MR (1)": Loop("mr1", store(mr[0::2]), deadline),
        "stores MR (2)": Loop("mr2", store(mr[1::2]), deadline),
        "stores CT": Loop("ct", store(ct), deadline),
        "C-FIND IMAGE": Loop("find", find, deadline),
        "C-GET study": Loop("get", get, deadline),
    }
    # The study must be there before finds and gets mean anything.
    subprocess.run(store(mr)(), env=bd.ENV, capture_output=True, check=True)
    for loop in loops.values():
        loop.start()
    curve = []
    while any(loop.is_alive() for loop in loops.values()):
        curve.append(rss_kib(pids))
        time.sleep(SAMPLE_SECONDS)
    for loop in loops.values():
        loop.join()
    return loops, curve


def flatness(curve: list[int]) -> float:
    """Growth after the first minute, as a share of the RSS at the first minute."""
    settled = curve[int(60 / SAMPLE_SECONDS) :] or curve
    return (max(settled) - settled[0]) / settled[0] if settled and settled[0] else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--ct", type=int, default=100, help="synthetic CT instances (100)")
    args = parser.parse_args()
    for name in ("storescu", "getscu", "findscu"):
        path = bd.dcmtk(name)
        if path is None:
            print(f"skipped: DCMTK's {name} not installed (Debian package dcmtk)")
            return 0
        bd.TOOLS[name] = path
    if orthanc_binary() is None or not bd.MR_DIR.is_dir():
        print("skipped: needs Orthanc (Debian) and the MR series of the shared corpus")
        return 0
    work = Path(tempfile.mkdtemp(prefix="soak-dimse-"))
    try:
        mr = bd.mr_study(work / "mr", 4)
        ct = bd.synth_ct(work / "ct", args.ct)
        dest = free_port()
        with bd.run_duckpacs(work / "duckpacs", dest) as (port, pid):
            ours, our_curve = soak(port, "DUCKPACS", bd.tree(pid), mr, ct, work / "d", args.minutes)
        with run_orthanc(work / "orthanc", {"soak": (bd.SCU, "127.0.0.1", dest)}) as orthanc:
            theirs, their_curve = soak(
                orthanc.dicom_port, orthanc.aet, [orthanc.process.pid], mr, ct, work / "o",
                args.minutes,
            )  # fmt: skip
        print(f"\n{args.minutes:g} minutes each, same mix")
        print(f"{'loop':<16} {'duckpacs':>9} {'orthanc':>9} {'ratio':>7} {'failures':>10}")
        failures = 0
        for name, loop in ours.items():
            other = theirs[name]
            ratio = loop.done / other.done if other.done else 0.0
            failures += loop.failed
            print(f"{name:<16} {loop.done:>9} {other.done:>9} {ratio:>6.2f}x "
                  f"{loop.failed:>4} / {other.failed:<4}")  # fmt: skip
            if loop.failed:
                print(f"   last duckpacs failure: {loop.last_error.strip()}")
        for label, curve in (("duckpacs", our_curve), ("orthanc", their_curve)):
            mib = [round(k / 1024) for k in curve]
            print(f"{label} RSS MiB every {SAMPLE_SECONDS:g} s: {mib}")
            print(f"{label} peak {max(mib)} MiB; growth after the first minute "
                  f"{100 * flatness(curve):.1f} %")  # fmt: skip
        return 1 if failures else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
