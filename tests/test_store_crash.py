"""Crash safety (issue 4: "Crash safety"): SIGKILL a writer at random moments, 50 times.

Every fifth time the newest pack is also given a torn half record, as a power cut would
leave. After each kill the store is reopened by the same writer id (which recovers the torn
tail); every acknowledged record must read back intact and verify must find no damage.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from duckpacs._core import Store
from tests.store_crash_writer import payload

ROOT = Path(__file__).resolve().parents[1]
KILLS = 50


def _acks(path: Path) -> list[tuple[int, tuple[int, int, int]]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="ascii").splitlines():
        parts = line.split()
        if len(parts) == 4:  # a line cut by the kill was never acknowledged to anyone
            i, pack, offset, length = map(int, parts)
            out.append((i, (pack, offset, length)))
    return out


def _tear_tail(store_dir: Path, rng: random.Random) -> None:
    """Simulates a power cut after SIGKILL: the newest pack ends in half a record."""
    newest = max((store_dir / "packs").glob("w*.dpk"))
    data = newest.read_bytes()
    start = data.rfind(b"DREC")
    torn = data[start:][: rng.randint(1, len(data) - start - 1)] if start > 0 else b"DREC"
    with newest.open("ab") as f:
        f.write(torn)


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    store_dir, ack_file = tmp_path / "store", tmp_path / "acks.txt"
    rng = random.Random(4)
    checked = 0
    for k in range(KILLS):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.store_crash_writer",
                str(store_dir),
                str(ack_file),
                str(k * 1_000_000),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.12))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
        if k % 5 == 4:
            _tear_tail(store_dir, rng)

        with Store(store_dir, writer_id=1, pack_size=256 << 10) as store:
            acks = _acks(ack_file)
            for i, loc in acks[checked:]:
                assert store.get(loc) == payload(i), f"kill {k}: record {i} at {loc}"
            report = store.verify()
            assert report["damaged"] == [], f"kill {k}: {report['damaged']}"
            # Everything acknowledged so far is still there, in the scan too.
            assert {tuple(e["location"]) for e in store.scan(headers=False)} >= {
                loc for _, loc in acks
            }
        checked = 0 if k % 10 == 9 else len(acks)  # re-read everything now and then
    assert len(_acks(ack_file)) > KILLS, "the writer acknowledged almost nothing"
