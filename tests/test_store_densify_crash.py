"""Densifying is crash-safe (issue 13): SIGKILL at random moments loses nothing and leaves
every instance readable, byte for byte, once, in the store and through the index.

A child (``tests.densify_crash_child``) stores batches in the arrival encoding and densifies
them in small steps, again and again; the parent kills it at a random moment, then reopens
what it left: every acknowledged instance must read back exactly, no instance may be there
twice, and verify must find no damage.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from duckpacs._core import Store
from tests.densify_crash_child import BATCH, instance, sop_uid

ROOT = Path(__file__).resolve().parents[1]
STORE_KILLS = 20
ARCHIVE_KILLS = 8
# Instance numbers of kill k start at k * SPAN; a run stores far fewer than SPAN.
SPAN = 10_000


def _acked(path: Path) -> list[int]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="ascii").splitlines()
    return [int(x) for x in lines if x.strip().isdigit()]


def _run_and_kill(mode: str, data: Path, acks: Path, first: int, rng: random.Random) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.densify_crash_child", mode, str(data), str(acks), str(first)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.05, 0.6))
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()


@functools.cache
def _sha(i: int) -> str:
    return hashlib.sha256(instance(i)).hexdigest()


def _check_store(store: Store, acked: list[int], check: list[int], deep: bool) -> int:
    """Every live instance once; every acknowledged one among them, those in ``check``
    byte for byte. Returns how many are still in the arrival encoding."""
    by_uid: dict[str, tuple[int, int, int]] = {}
    for entry in store.scan(headers=False):
        uid = str(entry["sop_instance_uid"])
        assert uid not in by_uid, f"{uid} is in the store twice"
        by_uid[uid] = tuple(entry["location"])
    missing = [i for i in acked if sop_uid(i) not in by_uid]
    assert not missing, f"acknowledged instances {missing[:5]} are gone"
    for i in check:
        got = hashlib.sha256(store.get(by_uid[sop_uid(i)])).hexdigest()
        assert got == _sha(i), f"instance {i} differs"
    report = store.verify(deep=deep)
    assert report["damaged"] == [], report["damaged"]
    return int(store.stats()["arrival_instances"])


def test_sigkill_while_densifying_loses_nothing(tmp_path: Path) -> None:
    _store_kills(tmp_path, STORE_KILLS)


def test_sigkill_while_densifying_keeps_the_index_pointing_at_every_instance(
    tmp_path: Path,
) -> None:
    _archive_kills(tmp_path, ARCHIVE_KILLS)


@pytest.mark.soak
def test_soak_sigkill_while_densifying(tmp_path: Path) -> None:
    _store_kills(tmp_path / "store", 200)
    _archive_kills(tmp_path / "archive", 50)


def _store_kills(tmp_path: Path, kills: int) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data, acks = tmp_path / "store", tmp_path / "acks.txt"
    rng = random.Random(13)
    densified_some = False
    for k in range(kills):
        _run_and_kill("store", data, acks, first=k * SPAN, rng=rng)
        # Reopened by its writer (which cuts a torn tail of its own); the densify journal
        # of the dead process is undone or finished by any opening.
        acked = _acked(acks)
        # This run's instances and a sample of the older ones byte for byte; all of them
        # (and a deep verify) every tenth kill and at the end.
        full = k % 10 == 9 or k == kills - 1
        recent = [i for i in acked if i >= k * SPAN]
        older = [i for i in acked if i < k * SPAN]
        check = acked if full else recent + rng.sample(older, min(100, len(older)))
        with Store(data, writer_id=1, pack_size=2 << 20) as store:
            arrival = _check_store(store, acked, check, deep=full)
        total = len(acked)
        densified_some = densified_some or arrival < total
    assert len(_acked(acks)) > kills, "the child acknowledged almost nothing"
    assert densified_some, "no kill came after any densifying"


def _archive_kills(tmp_path: Path, kills: int) -> None:
    from duckpacs.archive.facade import Archive

    tmp_path.mkdir(parents=True, exist_ok=True)
    data, acks = tmp_path / "archive", tmp_path / "acks.txt"
    rng = random.Random(31)
    numbers: dict[str, int] = {}
    densified_some = False
    for k in range(kills):
        _run_and_kill("archive", data, acks, first=k * SPAN, rng=rng)
        acked = _acked(acks)
        # Stored but not yet acknowledged when killed: at most the batch after the last ack.
        last = max((i for i in acked if i >= k * SPAN), default=k * SPAN - 1)
        numbers.update({sop_uid(i): i for i in range(k * SPAN, last + BATCH + 1)})
        with Archive.open(data) as archive:  # catches the index up (re-points moved rows)
            refs = archive.locate("study", {})
            uids = [r.sop_instance_uid for r in refs]
            assert len(uids) == len(set(uids)), "an instance is indexed twice"
            assert set(uids) >= {sop_uid(i) for i in acked}
            for ref in refs:
                i = numbers[ref.sop_instance_uid]
                got = hashlib.sha256(archive.read(ref.location)).hexdigest()
                assert got == _sha(i), f"instance {i} differs"
            stats = archive.store_backend.stats()
            assert stats["instances"] == len(uids)
            densified_some = densified_some or stats["arrival_instances"] < len(uids)
    assert densified_some, "no kill came after any densifying"
    with Store(data / "store") as store:
        assert store.verify(deep=True)["damaged"] == []
