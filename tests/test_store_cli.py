"""`duckpacs verify`, `duckpacs stats`, `duckpacs compact` on a real store."""

from __future__ import annotations

import json
import subprocess
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
