"""`duckpacs verify`, `duckpacs stats`, `duckpacs compact` on a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from duckpacs._core import Store
from duckpacs.cli.main import main
from tests.helpers import duckpacs_cmd
from tests.store_helpers import pydicom_files, read_original


def _archive(tmp_path: Path, n: int = 6) -> tuple[Path, list[tuple[int, int, int]]]:
    data = tmp_path / "archive"
    with Store(data / "store", writer_id=1, pack_size=16 << 10) as store:
        locs = store.put_many([read_original(p) for p in pydicom_files()[:n]])
    return data, locs


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_stats_and_verify_on_a_healthy_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, locs = _archive(tmp_path)
    code, stats = _json(capsys, "stats", "--data", str(data))
    assert code == 0
    assert stats["instances"] == len(locs)
    assert stats["ratio"] > 1
    assert stats["raw_bytes"] == sum(len(read_original(p)) for p in pydicom_files()[:6])
    code, report = _json(capsys, "verify", "--deep", "--data", str(data))
    assert (code, report["ok"], report["instances"]) == (0, True, len(locs))
    assert main(["stats", "--data", str(data)]) == 0
    assert "ratio" in capsys.readouterr().out


def test_verify_reports_damage_by_uid_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, locs = _archive(tmp_path)
    pack, offset, length = locs[1]
    with Store(data / "store") as s:
        uid = s.meta(locs[1])["sop_instance_uid"]
        path = s.path / "packs" / f"w{pack >> 32:05}-{pack & 0xFFFFFFFF:08}.dpk"
    raw = bytearray(path.read_bytes())
    raw[offset + length - 20] ^= 0xFF
    path.write_bytes(raw)
    assert main(["verify", "--data", str(data)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out
    code, report = _json(capsys, "verify", "--data", str(data))
    assert code == 1
    assert [d["offset"] for d in report["damaged"]] == [offset]
    assert report["damaged"][0]["sop_instance_uid"] == uid


def test_compact_reclaims_deleted_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, locs = _archive(tmp_path, 12)
    with Store(data / "store", writer_id=1) as s:
        for loc in locs[::2]:
            s.delete(loc)
    code, report = _json(capsys, "compact", "--data", str(data))
    assert code == 0
    assert report["packs_rewritten"] >= 1
    assert report["bytes_after"] < report["bytes_before"]
    moved = {tuple(a): tuple(b) for a, b in report["moved"]}
    with Store(data / "store") as s:
        assert s.stats()["instances"] == 6
        for i, loc in enumerate(locs[1::2]):
            assert s.get(moved.get(loc, loc)) == read_original(pydicom_files()[2 * i + 1])


def test_missing_store_is_one_line_error(tmp_path: Path) -> None:
    r = subprocess.run(
        duckpacs_cmd("stats", "--data", str(tmp_path / "nothing")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.startswith("duckpacs: error: ") and "no store here" in r.stderr
    assert r.stderr.count("\n") == 1


def test_compact_keeps_the_index_pointing_at_readable_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Compaction moves records; the index must follow, so every indexed instance still reads
    back byte for byte (SHA-256 recorded at import) without a reindex."""
    import hashlib

    from duckpacs.index import Index
    from duckpacs.ingest.importer import import_paths

    data = tmp_path / "archive"
    sources = tmp_path / "in"
    sources.mkdir()
    for path in pydicom_files()[:24]:
        (sources / path.name).write_bytes(path.read_bytes())
    import_paths([sources], data)
    with Index.open(data) as index:
        rows = index.locations("image", {})
        doomed = rows[::3]
        with Store(data / "store", writer_id=1) as store:
            for row in doomed:
                store.delete(tuple(row[3:6]))
        index.remove([row[0] for row in doomed])
    code, report = _json(capsys, "compact", "--data", str(data), "--min-dead", "0.01")
    assert code == 0 and report["packs_rewritten"] >= 1 and report["moved"]
    assert report["index_updated"] == len(rows) - len(doomed)
    with Index.open(data, read_only=True) as index:
        sums = index.sql("SELECT sop_instance_uid, sha256 FROM instances").to_pylist()
        expected = {r["sop_instance_uid"]: r["sha256"] for r in sums}
        remaining = index.locations("image", {})
    assert len(remaining) == len(rows) - len(doomed)
    with Store(data / "store") as store:
        for row in remaining:
            got = hashlib.sha256(store.get(tuple(row[3:6]))).hexdigest()
            assert got == expected[row[0]], row[0]


def test_compact_refuses_while_another_process_owns_the_index(tmp_path: Path) -> None:
    from duckpacs.index import Index
    from duckpacs.ingest.importer import import_paths

    data = tmp_path / "archive"
    import_paths([pydicom_files()[0]], data)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from duckpacs.index import Index; "
            f"i = Index.open({str(data)!r}); print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        r = subprocess.run(
            duckpacs_cmd("compact", "--data", str(data)), capture_output=True, text=True, timeout=60
        )
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert r.returncode != 0
    assert "stop `duckpacs serve`" in r.stderr and r.stderr.count("\n") == 1
    with Index.open(data, read_only=True):
        pass


def test_progress_of_verify_and_compact_reaches_the_end(tmp_path: Path) -> None:
    """The last progress report of a long operation is (total, total): a bar reaches 100 %."""
    reports: dict[str, list[tuple[int, int]]] = {"verify": [], "compact": []}
    with Store(tmp_path, writer_id=1) as store:
        locs = [store.put(read_original(p)) for p in pydicom_files()[:20]]
        for loc in locs[::2]:
            store.delete(loc)
    with Store(tmp_path, writer_id=2) as store:
        store.verify(progress=lambda d, t: reports["verify"].append((d, t)))
        store.compact(min_dead_ratio=0.01, progress=lambda d, t: reports["compact"].append((d, t)))
    for name, seen in reports.items():
        assert seen, name
        done, total = seen[-1]
        assert done == total > 0, name


def test_compact_reclaims_a_race_losers_copy_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store written before one caller at a time handled a UID can hold a second record
    of an archived instance (two senders raced): compaction deletes it, so `stats`, `verify`
    and the index count the same instances."""
    from duckpacs.archive.facade import Archive

    data = tmp_path / "archive"
    first = read_original(pydicom_files()[0])
    with Archive.open(data) as archive:
        archive.store(first)
    with Store(data / "store", writer_id=7) as store:  # the loser, written beside the door
        store.put(first)
    _code, stats = _json(capsys, "stats", "--data", str(data))
    assert stats["instances"] == 2
    code, report = _json(capsys, "compact", "--data", str(data), "--min-dead", "0.01")
    assert code == 0 and report["orphan_copies"] == 1
    _code, stats = _json(capsys, "stats", "--data", str(data))
    assert stats["instances"] == 1
    code, verified = _json(capsys, "verify", "--deep", "--data", str(data))
    assert code == 0 and verified["instances"] == 1
    with Archive.open(data) as archive:
        assert archive.index.stats()["instances"] == 1
        uid = archive.store_backend.meta(archive.locate("IMAGE", {})[0].location)
        assert archive.read(archive.locate("IMAGE", {})[0].location) == first
        assert uid["sop_instance_uid"]
