"""Header parsing speed: duckpacs (Rust) beside pydicom, on the shared corpus.

Both stop at Pixel Data: ours through ``duckpacs._core.scan_headers`` (reads and parses the
files in Rust, GIL released, one thread and then one per core), pydicom through
``dcmread(path, stop_before_pixels=True)`` in a loop. The gzipped Philips files are
decompressed to a temporary folder first (not timed) and every file is read once before
timing so that both sides start from the page cache. MB/s counts whole file sizes.

Run: ``python bench/bench_parse.py [--repeat N]`` (``make bench`` runs it).
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.corpus import SHARED_CORPUS as CORPUS  # noqa: E402

from duckpacs import _core  # noqa: E402


def corpus_files(dest: Path) -> list[Path]:
    """Every file of the corpus (``.dcm.gz`` decompressed into ``dest``)."""
    out = []
    for p in sorted(CORPUS.rglob("*")):
        name = p.name.upper()
        if not p.is_file() or name.startswith(("LICENSE", "README")) or name.endswith(".MD"):
            continue
        if p.name.endswith(".dcm.gz"):
            target = dest / p.name[:-3]
            target.write_bytes(gzip.decompress(p.read_bytes()))
            out.append(target)
        else:
            out.append(p)
    return out


def best_of(repeat: int, fn: Callable[[], int]) -> tuple[float, int]:
    """Fastest wall time of ``repeat`` runs, and what the last run returned."""
    best, result = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def pydicom_headers(paths: list[str]) -> int:
    ok = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in paths:
            try:
                pydicom.dcmread(p, stop_before_pixels=True, force=True)
                ok += 1
            except Exception:  # pydicom raises many types on the deliberately bad files
                pass
    return ok


def ours_headers(paths: list[str], threads: int) -> int:
    return sum(1 for row in _core.scan_headers(paths, threads) if row[0] is None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (best is kept)")
    args = parser.parse_args()
    if not CORPUS.is_dir():
        print(f"bench_parse: {CORPUS} is absent; nothing to measure")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        files = corpus_files(Path(tmp))
        paths = [str(p) for p in files]
        total = sum(p.stat().st_size for p in files)
        for p in files:
            p.read_bytes()
        mb = total / 1e6
        print(f"corpus: {len(paths)} files, {mb:.1f} MB, {os.cpu_count()} cores")
        t_py, ok_py = best_of(args.repeat, lambda: pydicom_headers(paths))
        t_one, ok_one = best_of(args.repeat, lambda: ours_headers(paths, 1))
        t_all, ok_all = best_of(args.repeat, lambda: ours_headers(paths, 0))
    rows = [
        ("pydicom dcmread(stop_before_pixels)", t_py, ok_py),
        ("duckpacs scan_headers, 1 thread", t_one, ok_one),
        ("duckpacs scan_headers, all cores", t_all, ok_all),
    ]
    print(f"{'':38} {'files/s':>10} {'MB/s':>9} {'parsed':>7} {'vs pydicom':>11}")
    for label, t, ok in rows:
        print(f"{label:38} {len(paths) / t:10.0f} {mb / t:9.1f} {ok:7d} {t_py / t:10.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
