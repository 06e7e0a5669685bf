"""The arrival encoding, densifying and streams (issue 13), through the binding, the CLI and
the archive: instances arrive cheap, become dense, and never stop reading byte for byte."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from duckpacs._core import Store
from duckpacs.cli.main import main
from duckpacs.errors import IntegrityError
from tests import big_instance
from tests.densify_crash_child import instance
from tests.store_helpers import pydicom_files, read_original


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _sources(tmp_path: Path, n: int = 30) -> Path:
    """Instances with frames of 128 KiB (they arrive cheap) beside pydicom's small files."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n):
        (folder / f"ct{i}.dcm").write_bytes(instance(i))
    for path in pydicom_files()[:12]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_compact_densify_rewrites_arrival_records_and_the_index_follows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from duckpacs.index import Index
    from duckpacs.ingest.importer import import_paths

    data = tmp_path / "archive"
    import_paths([_sources(tmp_path)], data)
    code, before = _json(capsys, "stats", "--data", str(data))
    assert code == 0
    assert before["arrival_instances"] >= 30
    assert before["arrival_stored_bytes"] > 0
    code, report = _json(capsys, "compact", "--densify", "--data", str(data))
    assert code == 0
    densified = report["densify"]
    assert densified["densified"] == before["arrival_instances"]
    assert densified["skipped"] == []
    assert densified["index_updated"] == densified["moved"] >= before["arrival_instances"]
    code, after = _json(capsys, "stats", "--data", str(data))
    assert (after["arrival_instances"], after["arrival_stored_bytes"]) == (0, 0)
    assert after["instances"] == before["instances"]
    assert after["stored_bytes"] < before["stored_bytes"]
    assert after["ratio_at_rest"] == after["ratio"] > before["ratio"]
    with Index.open(data, read_only=True) as index:
        rows = index.sql('SELECT pack, "offset", length, sha256 FROM instances').to_pylist()
    assert len(rows) == after["instances"]
    with Store(data / "store") as store:
        for r in rows:
            got = store.get((r["pack"], r["offset"], r["length"]))
            assert hashlib.sha256(got).hexdigest() == r["sha256"]
    code, verify = _json(capsys, "verify", "--deep", "--data", str(data))
    assert (code, verify["ok"]) == (0, True)
    assert main(["stats", "--data", str(data)]) == 0
    assert "at rest" in capsys.readouterr().out


def test_open_instance_streams_the_original_and_checks_every_chunk(tmp_path: Path) -> None:
    originals = [instance(i) for i in range(4)] + [read_original(p) for p in pydicom_files()[:8]]
    with Store(tmp_path, writer_id=1) as store:
        locs = [store.put(b) for b in originals]
        for b, loc in zip(originals, locs, strict=True):
            stream = store.open_instance(loc)
            assert stream.size == len(b)
            assert b"".join(stream) == b
            stream = store.open_instance(loc)
            parts = []
            while part := stream.read(1000):
                parts.append(part)
            assert b"".join(parts) == b
        # A flipped byte inside a pixel chunk: the stream stops with an integrity error.
        pack, offset, length = locs[0]
        path = store.path / "packs" / f"w{pack >> 32:05}-{pack & 0xFFFFFFFF:08}.dpk"
        raw = bytearray(path.read_bytes())
        raw[offset + length - 1000] ^= 0x10
        path.write_bytes(raw)
        with pytest.raises(IntegrityError):
            b"".join(store.open_instance(locs[0]))


def test_put_file_streams_a_large_file_into_a_pack_of_its_own(tmp_path: Path) -> None:
    source = tmp_path / "big.dcm"
    sha = big_instance.write(source, frames=34, rows=1024, cols=1024)  # 71 MB > 64 MiB
    small = tmp_path / "small.dcm"
    small.write_bytes(instance(1))
    with Store(tmp_path / "store", writer_id=1) as store:
        little = store.put_file(small)
        loc = store.put_file(source, source_ae="MODALITY")
        assert loc[1] == 32 and loc[0] != little[0]  # first record of a pack of its own
        assert store.sha256(loc) == sha
        assert store.meta(loc)["source_ae"] == "MODALITY"
        assert store.frame_count(loc) == 34
        frame_len = 1024 * 1024 * 2
        with source.open("rb") as f:
            f.seek(source.stat().st_size - 2 * frame_len)
            assert store.get_frame(loc, 32) == f.read(frame_len)
        digest = hashlib.sha256()
        for piece in store.open_instance(loc):
            digest.update(piece)
        assert digest.hexdigest() == sha
        assert store.get(little) == instance(1)
        assert store.stats()["arrival_instances"] == 2
        assert store.verify(deep=True)["damaged"] == []


def test_the_server_densifier_works_while_idle_and_the_index_follows(tmp_path: Path) -> None:
    from duckpacs.archive.facade import Archive
    from duckpacs.server.densify import Densifier

    originals = {i: instance(i) for i in range(40)}
    with Archive.open(tmp_path / "archive") as archive:
        results = archive.store_many(list(originals.values()))
        assert all(r.status == 0 for r in results)
        first_pack = results[0].location[0] if results[0].location else None
        store = archive.store_backend
        assert store.stats()["arrival_instances"] == 40
        densifier = Densifier(archive, idle=0.1, poll=0.02, rest=0.1)
        densifier.start()
        try:
            deadline = time.monotonic() + 120
            while store.stats()["arrival_instances"] and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            densifier.stop()
        assert store.stats()["arrival_instances"] == 0
        refs = archive.locate("study", {})
        assert len(refs) == 40
        by_uid = {archive.meta(r.location)["sop_instance_uid"]: r for r in refs}
        for i, b in originals.items():
            ref = by_uid[results[i].sop_instance_uid]
            assert ref.location[0] != first_pack  # the index points at the dense copy
            assert archive.read(ref.location) == b


@pytest.mark.slow
def test_a_2_gb_instance_goes_in_and_out_in_bounded_memory(tmp_path: Path) -> None:
    """1,000 frames of 1024x1024 16-bit (2.1 GB), written here and removed after: put, read
    back, densified and deep-verified, each growing the RSS by under 256 MB."""
    import subprocess
    import sys

    source = tmp_path / "big.dcm"
    sha = big_instance.write(source, frames=1000, rows=1024, cols=1024)
    out = subprocess.run(
        [sys.executable, "-m", "tests.big_instance", str(tmp_path / "store"), str(source)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    figures = json.loads(out.stdout)
    print(figures)
    assert figures["sha256"] == figures["dense_sha256"] == sha
    assert figures["verify"] == []
    for phase in ("put", "read", "densify", "read_dense", "verify_deep"):
        assert figures[phase]["peak_growth_mb"] < 256, (phase, figures[phase])
