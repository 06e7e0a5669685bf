"""SIGKILL of `duckpacs backup` (its whole process group) at random moments, round after
round with new instances in between, with and without a running server: whatever backup the
folder holds as complete restores to an archive that passes `verify --deep` and holds
exactly the instances the archive had when that backup began; a final run completes; the
live archive is unharmed (verify --deep clean, every instance indexed) and, while a server
runs, its densifier is not left paused by a killed backup."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from duckpacs.archive.facade import Archive
from duckpacs.backup.manifest import MANIFEST
from tests.backup_support import backup, content, restore, verify_deep
from tests.crash_support import Server, sop_uid, start_server, write_study
from tests.routing_support import storescu, wait_until
from tests.test_backup_serve import expected

ROUNDS = 6


def generation(dest: Path) -> int:
    try:
        return int(json.loads((dest / MANIFEST).read_text())["generation"])
    except FileNotFoundError:
        return 0


def copied_bytes(dest: Path) -> int:
    folder = dest / "packs"
    return sum(p.stat().st_size for p in folder.iterdir()) if folder.is_dir() else 0


def killed_backup(data: Path, dest: Path, rnd: random.Random, *, mid_copy: bool) -> None:
    """Start `duckpacs backup` in a session of its own and SIGKILL the group: at a random
    moment (before, during or after its copy; sometimes it finishes first), or, with
    ``mid_copy``, as soon as its pack copies have grown (while it copies)."""
    before = copied_bytes(dest)
    child = subprocess.Popen(
        [sys.executable, "-m", "duckpacs.cli.main", "backup", "--to", str(dest),
         "--data", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    if mid_copy:
        deadline = time.monotonic() + 60
        while child.poll() is None and time.monotonic() < deadline:
            if copied_bytes(dest) > before:
                break
            time.sleep(0.001)
    else:
        time.sleep(rnd.uniform(0.1, 0.6))
    with contextlib.suppress(ProcessLookupError):  # it had finished
        os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=60)


def add_study(data: Path, server: Server | None, folder: Path, seed: int) -> dict[str, str]:
    """Instances of a new study into the archive; their UID -> dataset SHA-256."""
    _, files = write_study(folder, 30, seed=seed, rows=512)
    if server is None:
        with Archive.open(data) as archive:
            for f in files:
                archive.store(f.read_bytes())
    else:
        storescu(server.dimse_port, files, "CRASHSCU")
    return expected(files)


def check_complete_backup(dest: Path, scratch: Path, states: dict[int, dict[str, str]]) -> None:
    """The folder's complete backup restores to the archive as it was when that run began."""
    gen = generation(dest)
    if gen == 0:
        return
    if scratch.exists():
        shutil.rmtree(scratch)
    restore(dest, scratch)
    verify_deep(scratch)
    assert content(scratch) == states[gen], f"backup {gen} restores another state"


@pytest.mark.parametrize("mode", ["embedded", "serve"])
def test_sigkill_during_backup_leaves_the_previous_backup_restorable(
    tmp_path: Path, mode: str
) -> None:
    rnd = random.Random(1500 + len(mode))
    data, dest = tmp_path / "data", tmp_path / "backup"
    data.mkdir()
    (data / "duckpacs.toml").write_text("[dimse]\naccept_any = true\n")
    server = start_server(data) if mode == "serve" else None
    everything: dict[str, str] = {}
    states: dict[int, dict[str, str]] = {}  # backup generation -> the archive when it began
    try:
        everything |= add_study(data, server, tmp_path / "in", seed=899)
        states[1] = dict(everything)
        backup(data, dest)  # each round's run is incremental: a kill hits a second run
        for n in range(ROUNDS):
            everything |= add_study(data, server, tmp_path / f"in{n}", seed=900 + n)
            states[generation(dest) + 1] = dict(everything)
            killed_backup(data, dest, rnd, mid_copy=n % 2 == 1)
            check_complete_backup(dest, tmp_path / "restored", states)
        states[generation(dest) + 1] = dict(everything)
        final = backup(data, dest)
        assert final["generation"] == generation(dest)
        check_complete_backup(dest, tmp_path / "restored", states)
        assert content(tmp_path / "restored") == everything
        if server is not None:  # the densifier still works: killed backups let go of it
            wait_until(lambda: any("pack densified" in x for x in server.log), "densifying")
    finally:
        if server is not None:
            assert server.stop() == 0
    verify_deep(data)
    assert content(data) == everything


def test_a_killed_run_leaves_bytes_the_next_run_and_restore_ignore(tmp_path: Path) -> None:
    """Bytes a killed run appended past the manifest's lengths (and files it did not name)
    are not restored, and the next run cuts them off before appending."""
    data, dest = tmp_path / "data", tmp_path / "backup"
    _, files = write_study(tmp_path / "in", 10, seed=77)
    with Archive.open(data) as archive:
        for f in files:
            archive.store(f.read_bytes())
    backup(data, dest)
    packs = sorted((dest / "packs").glob("*.dpk"))
    with open(packs[0], "ab") as f:
        f.write(b"half a record from a killed run")
    (dest / "packs" / "w00001-00000099.dpk").write_bytes(b"a new pack, never committed")
    restored = tmp_path / "restored"
    restore(dest, restored)
    verify_deep(restored)
    assert set(content(restored)) == {sop_uid(f) for f in files}
    with Archive.open(data) as archive:
        archive.store(write_study(tmp_path / "more", 1, seed=78)[1][0].read_bytes())
    backup(data, dest)
    recorded = json.loads((dest / MANIFEST).read_text())["packs"]
    for name, copy in recorded.items():  # each copy is exactly the live pack's prefix
        live = (data / "store" / "packs" / name).read_bytes()
        assert (dest / copy["file"]).read_bytes() == live[: copy["length"]] == live
    assert not (dest / "packs" / "w00001-00000099.dpk").exists()
    shutil.rmtree(restored)
    restore(dest, restored)
    verify_deep(restored)
    assert len(content(restored)) == 11
