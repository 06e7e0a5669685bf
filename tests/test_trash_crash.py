"""SIGKILL of a process deleting and restoring studies, at random moments: afterwards every
instance is in exactly one state (indexed, or in an active trash batch), the store holds it
still, `verify --deep` is clean, and `reindex` rebuilds the same live set."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from duckpacs.archive.facade import Archive
from tests.crash_support import duckpacs
from tests.test_storage_policy import fill

CYCLES = 4


def states(data: Path) -> tuple[set[str], set[str]]:
    """(indexed SOP Instance UIDs, SOP Instance UIDs in active trash batches)."""
    with Archive.open(data) as archive:
        live = {r.sop_instance_uid for r in archive.locate("study", {})}
        assert archive.trash is not None
        trashed = [uid for b in archive.trash.active() for uid, _, _ in b.keys]
    assert len(trashed) == len(set(trashed)), "an instance is in two trash batches"
    return live, set(trashed)


@pytest.mark.parametrize("cycle", range(CYCLES))
def test_sigkill_during_delete_and_restore_leaves_one_state_each(
    tmp_path: Path, cycle: int
) -> None:
    rnd = random.Random(4000 + cycle)
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        fill(archive, [f"s{n}" for n in range(8)], per_study=4)
        everything = {r.sop_instance_uid for r in archive.locate("study", {})}
    for kill in range(3):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.trash_crash_child", str(data), str(cycle * 10 + kill)],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.05, 1.2))
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()
        live, trashed = states(data)
        assert not live & trashed, f"{len(live & trashed)} instances both live and trashed"
        assert live | trashed == everything, "an instance is neither live nor in the trash"
    assert (data / "store" / "trash.jsonl").stat().st_size > 0  # the child got to work
    verify = duckpacs("verify", "--deep", "--json", "--data", str(data))
    assert verify.returncode == 0, verify.stdout
    assert duckpacs("reindex", "--data", str(data)).returncode == 0
    assert states(data) == (live, trashed)
