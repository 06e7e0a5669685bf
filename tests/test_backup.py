"""`duckpacs backup` and `duckpacs restore` of an archive nobody serves: a restore passes
`verify --deep` and answers like the original; a second run copies only the new bytes; packs
that compaction removed leave the backup; the commands refuse what would lose data."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

from duckpacs.archive import ipc
from duckpacs.archive.facade import Archive
from duckpacs.backup import hold, manifest, status
from duckpacs.server.densify import Densifier
from duckpacs.web.auth import UserStore
from tests.backup_support import answers, backup, content, restore, verify_deep
from tests.crash_support import duckpacs, write_study
from tests.routing_support import wait_until
from tests.test_storage_policy import fill


def pack_sizes(data: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (data / "store" / "packs").glob("*.dpk")}


def test_backup_of_an_embedded_archive_restores_an_equal_archive(tmp_path: Path) -> None:
    data, dest, new = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    data.mkdir()
    UserStore(data / "users.json").set_user("ada", "admin-pass-123", ["admin"])
    (data / "duckpacs.toml").write_text("[dimse]\naccept_any = true\n")
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b", "c"])
        archive.discard("study", {"StudyInstanceUID": s["c"]}, user="t", source="test")
    run = backup(data, dest)
    assert run["held_by"] == "locks" and run["generation"] == 1
    assert run["bytes_copied"] == run["bytes_total"] == sum(pack_sizes(data).values())
    assert {"users.json", "duckpacs.toml", "store/trash.jsonl"} <= set(run["files"])
    done = restore(dest, new)
    assert (done["instances"], done["studies"]) == (6, 2)
    assert verify_deep(new)["instances"] == 9  # the trashed study's records came too
    assert answers(new) == answers(data)
    assert content(new) == content(data)
    for name in ("users.json", "duckpacs.toml", "store/trash.jsonl"):
        assert (new / name).read_bytes() == (data / name).read_bytes()
    with Archive.open(new) as archive:  # the trash is restorable in the restored archive
        batch = archive.trash_list()[0]["batch"]
        assert archive.restore(batch, user="t", source="test")["restored"] == 3
    last = status.last(data)
    assert last is not None and last["destination"] == str(dest.resolve())
    assert last["bytes_total"] == run["bytes_total"]


def test_a_second_run_copies_only_the_new_bytes(tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    with Archive.open(data) as archive:
        fill(archive, ["a", "b"])
    (data / "duckpacs.toml").write_text("[dimse]\naccept_any = true\n")
    first = backup(data, dest)
    again = backup(data, dest)
    assert (again["bytes_copied"], again["new_packs"], again["grown_packs"]) == (0, 0, 0)
    assert again["bytes_total"] == first["bytes_total"] and again["generation"] == 2
    before = pack_sizes(data)
    with Archive.open(data) as archive:
        fill(archive, ["c", "d"])
    after = pack_sizes(data)
    grown = sum(after[name] - before.get(name, 0) for name in after)
    third = backup(data, dest)
    assert third["bytes_copied"] == grown > 0
    assert third["bytes_total"] == sum(after.values())
    assert third["records_new"] == 6
    new = tmp_path / "restored"
    assert restore(dest, new)["instances"] == 12
    verify_deep(new)
    assert content(new) == content(data)
    # Only the latest state is kept: one generation of small files, no stray pack copies.
    assert [p.name for p in (dest / manifest.FILES).iterdir()] == ["3"]
    assert sorted(p.name for p in (dest / manifest.PACKS).iterdir()) == sorted(after)


def test_packs_compaction_removed_leave_the_backup(tmp_path: Path) -> None:
    data, dest, new = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    study, _ = write_study(tmp_path / "in", 12, seed=7)
    assert duckpacs("import", str(tmp_path / "in"), "--data", str(data)).returncode == 0
    with Archive.open(data) as archive:
        fill(archive, ["kept"])
    imported = set(pack_sizes(data)) - {"w00001-00000001.dpk"}
    first = backup(data, dest)
    assert set(first["files"]) >= {"import-journal.sqlite"}
    with Archive.open(data) as archive:  # tombstones: the imported pack is all dead now
        archive.delete(archive.locate("study", {"StudyInstanceUID": study}))
    compact = duckpacs("compact", "--data", str(data))
    assert compact.returncode == 0, compact.stderr
    assert not imported & set(pack_sizes(data))
    second = backup(data, dest)
    assert second["removed_packs"] == len(imported) >= 1
    assert not imported & {p.name for p in (dest / manifest.PACKS).iterdir()}
    assert restore(dest, new)["instances"] == 3
    verify_deep(new)
    assert content(new) == content(data)


def test_restore_refuses_a_folder_that_holds_something(tmp_path: Path) -> None:
    data, dest, new = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    with Archive.open(data) as archive:
        fill(archive, ["a"])
    backup(data, dest)
    new.mkdir()
    (new / "notes.txt").write_text("mine")
    refused = duckpacs("restore", "--from", str(dest), "--data", str(new))
    assert refused.returncode == 1 and "not empty" in refused.stderr and "--force" in refused.stderr
    assert os.listdir(new) == ["notes.txt"]
    done = restore(dest, new, "--force")
    assert done["instances"] == 3
    assert (Path(done["moved_aside"]) / "notes.txt").read_text() == "mine"
    no_data = duckpacs("restore", "--from", str(dest))
    assert no_data.returncode == 2 and "--data" in no_data.stderr
    empty = duckpacs("restore", "--from", str(tmp_path), "--data", str(tmp_path / "x"))
    assert empty.returncode == 1 and "no complete backup" in empty.stderr


def test_backup_refuses_nonsense_and_explains_itself(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        fill(archive, ["a"])
    inside = duckpacs("backup", "--to", str(data / "bk"), "--data", str(data))
    assert inside.returncode == 2 and "inside the data folder" in inside.stderr
    nothing = duckpacs("backup", "--to", str(tmp_path / "bk"), "--data", str(tmp_path / "none"))
    assert nothing.returncode == 1 and "no store" in nothing.stderr
    (tmp_path / "home" / "files").mkdir(parents=True)
    (tmp_path / "home" / "files" / "letter.txt").write_text("keep me")
    foreign = duckpacs("backup", "--to", str(tmp_path / "home"), "--data", str(data))
    assert foreign.returncode == 2 and "no duckpacs backup" in foreign.stderr
    assert (tmp_path / "home" / "files" / "letter.txt").read_text() == "keep me"
    helped = duckpacs("backup", "--help")
    assert (
        helped.returncode == 0
        and "--to DIR" in helped.stdout
        and "only what is new" in (helped.stdout)
    )
    assert "--force" in duckpacs("restore", "--help").stdout
    plain = duckpacs("backup", "--to", str(tmp_path / "bk"), "--data", str(data))
    assert plain.returncode == 0 and plain.stdout.startswith("backup 1 complete")
    doc = json.loads((tmp_path / "bk" / manifest.MANIFEST).read_text())
    assert doc["format"] == "duckpacs-backup" and doc["generation"] == 1


def test_progress_shows_the_rate_and_eta_on_a_terminal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        fill(archive, ["a"])
    terminal, child_side = pty.openpty()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "duckpacs.cli.main", "backup", "--to", str(tmp_path / "bk"),
             "--data", str(data)],
            stdout=subprocess.PIPE, stderr=child_side, timeout=120, check=True,
        )  # fmt: skip
        os.close(child_side)
        ready, _, _ = select.select([terminal], [], [], 10)
        shown = os.read(terminal, 65536).decode() if ready else ""
    finally:
        os.close(terminal)
    assert "100%" in shown and "MB/s" in shown and "ETA" in shown, shown
    assert run.stdout.startswith(b"backup 1 complete")


def test_the_server_holds_its_densifier_for_a_backup_connection_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        densifier = Densifier(archive)
        service = ipc.LocalService(archive, data, b"k" * 32, pause_rewrites=densifier.pause)
        service.start()
        try:
            client = ipc.RemoteArchive(service.address, b"k" * 32)
            assert client.backup_begin() == {"rewrites_paused": True}
            assert densifier.paused
            client.backup_end()
            assert not densifier.paused
            client.backup_begin()
            client.close()  # as a killed backup's socket closes
            wait_until(lambda: not densifier.paused, "the hold to end with its connection")
        finally:
            service.stop()
    assert status.age(data, 2)["backup_stale"] is True  # never backed up
    assert status.age(data, 0)["backup_stale"] is False  # 0: never warns


def test_with_no_server_a_backup_keeps_compaction_out(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        fill(archive, ["a"])
    with hold.rewrites_held(data) as held_by:
        assert held_by == "locks"
        compact = duckpacs("compact", "--data", str(data))
        assert compact.returncode != 0 and "compact.lock: locked" in compact.stderr
    assert duckpacs("compact", "--data", str(data)).returncode == 0


def test_a_corrected_study_restores_corrected_with_its_original(tmp_path: Path) -> None:
    """The corrections journal travels with the packs: the restored archive answers with
    the new values, and `export --original` still gives the bytes first received."""
    data, dest, new = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
        archive.correct("study", {"StudyInstanceUID": s["a"]}, {"PatientName": "Fixed^Name"},
                        user="t", source="test")  # fmt: skip
    backup(data, dest)
    restore(dest, new)
    assert answers(new) == answers(data)
    assert content(new) == content(data)
    with Archive.open(new) as archive:
        found = archive.find("study", {"PatientName": "Fixed^Name"}, ["PatientName"])
        assert [r["StudyInstanceUID"] for r in found] == [s["a"]]
    originals = []
    for root in (data, new):
        out = tmp_path / f"orig-{root.name}"
        done = duckpacs("export", f"StudyInstanceUID={s['a']}", "--original", "--layout",
                        "flat", "--out", str(out), "--data", str(root))  # fmt: skip
        assert done.returncode == 0, done.stderr
        originals.append({p.name: p.read_bytes() for p in out.glob("*.dcm")})
    assert originals[0] and originals[0] == originals[1]
    assert all(b"Fixed^Name" not in body for body in originals[1].values())
    verify_deep(new)
