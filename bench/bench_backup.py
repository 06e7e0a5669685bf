"""Backup and restore benchmark (issue 15): what `duckpacs backup` and `duckpacs restore` cost
on an archive of N small MR instances plus some large CT-sized ones.

Timed, each as the command a user runs (a process of its own, so interpreter start is in):
a first backup into an empty folder (MB/s of pack bytes copied), a second run with nothing
new, a run after 1% more instances arrived, and a restore (packs copied, index rebuilt from
the store). The restore's index rebuild is what decided that a backup holds no copy of the
index: rebuilding it is cheaper than keeping a copy consistent with the packs.

Usage: ``python bench/bench_backup.py [--records N] [--large N]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench.bench_recovery import instance
from pydicom.uid import generate_uid

from duckpacs import _core
from duckpacs.archive import recovery


def run(*args: str) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "duckpacs.cli.main", *args, "--json"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return time.perf_counter() - started, json.loads(out.stdout)


def large(i: int, rng: np.random.Generator) -> bytes:
    """A 512x512 slice: pixels of a smooth phantom with noise (CT-like entropy)."""
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    ds = dcmread(DicomBytesIO(instance(100_000_000 + i, generate_uid(), generate_uid(), rng)))
    ds.Rows = ds.Columns = 512
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) ** 2 + (yy - 256) ** 2 < 200**2) * 1000
    ds.PixelData = (body + rng.integers(0, 64, (512, 512))).astype(np.uint16).tobytes()
    out = DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def fill(data: Path, start: int, count: int, rng: np.random.Generator) -> None:
    study, series = generate_uid(), generate_uid()
    with _core.Store(data / "store", writer_id=1) as store:
        for first in range(start, start + count, 500):
            n = min(500, start + count - first)
            store.put_many([instance(first + k, study, series, rng) for k in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--large", type=int, default=400, help="512x512 slices besides")
    args = ap.parse_args()
    rng = np.random.default_rng(15)
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        data, dest = Path(tmp) / "archive", Path(tmp) / "backup"
        index, _ = recovery.open_for_writing(data)
        index.close()
        fill(data, 0, args.records, rng)
        with _core.Store(data / "store", writer_id=2) as store:
            store.put_many([large(i, rng) for i in range(args.large)])
        index, _ = recovery.open_for_writing(data)  # indexed, as a running archive is
        index.close()
        first_s, first = run("backup", "--to", str(dest), "--data", str(data))
        again_s, again = run("backup", "--to", str(dest), "--data", str(data))
        fill(data, args.records, args.records // 100, rng)
        more_s, more = run("backup", "--to", str(dest), "--data", str(data))
        restore_s, restored = run("restore", "--from", str(dest), "--data", str(Path(tmp) / "r"))
    total = int(first["bytes_total"])  # type: ignore[call-overload]
    print(f"archive: {args.records:,} small + {args.large} large instances, {total / 1e6:,.0f} MB")
    print(f"{'first backup':<34} {first_s:>7.2f}s  {total / 1e6 / first_s:>7.0f} MB/s (whole run)")
    print(f"{'second run, nothing new':<34} {again_s:>7.2f}s  {again['bytes_copied']} bytes copied")
    print(f"{'after 1% more instances':<34} {more_s:>7.2f}s  {more['bytes_copied']:,} bytes copied")
    print(
        f"{'restore':<34} {restore_s:>7.2f}s  ({restored['instances']:,} instances; copy "
        f"{restored['copy_seconds']}s, index {restored['index_seconds']}s)"
    )


if __name__ == "__main__":
    main()
