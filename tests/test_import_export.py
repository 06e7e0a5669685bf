"""`duckpacs import` and `duckpacs export` over the real archive (store + index).

Import: every valid input stored exactly once (store count = index count = distinct UIDs),
every invalid one reported with its reason, re-import stores nothing, a killed import resumes
losing nothing. Export: byte-exact round trip (SHA-256), zip, DICOMDIR read back by pydicom's
FileSet and DCMTK's dcmdump, anonymization report. Single writer: import refuses (or waits)
while another process owns the index, as ``duckpacs serve`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from duckpacs import _core
from duckpacs.errors import ArchiveLockedError
from duckpacs.export.archive_export import export
from duckpacs.export.dicomdir import file_set, write_dicomdir
from duckpacs.files.sources import SourceItem, discover
from duckpacs.index import Index
from duckpacs.ingest.importer import import_paths
from tests import synthetic
from tests.corpus import (
    SHARED_CORPUS,
    ingest_folder_sets,
    pydicom_test_files,
    shared_folder,
    shared_present,
    synthetic_dir,
    synthetic_folder,
)
from tests.helpers import duckpacs_cmd, require_tool

SMALL = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "JPEG-lossy.dcm"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive_state(data: Path) -> tuple[int, dict[str, str]]:
    """(live store records, {SOP Instance UID: sha256} of the index)."""
    with _core.Store(data / "store") as store:
        live = int(store.stats()["instances"])
    with Index.open(data, read_only=True) as index:
        rows = index.connection().execute("SELECT sop_instance_uid, sha256 FROM instances")
        uids = {str(u): str(s) for u, s in rows.fetchall()}
    return live, uids


def accepted_truth(paths: list[Path]) -> dict[str, str]:
    """{UID: sha256} the archive must hold: first valid copy of each UID, in discovery order."""
    truth: dict[str, str] = {}
    for found in discover(paths):
        if not isinstance(found, SourceItem):
            continue
        data = found.read()
        try:
            uid = str(_core.describe(data).get("sop_instance_uid") or "")
        except Exception:
            continue
        if uid and uid not in truth:
            truth[uid] = sha(data)
    return truth


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """pydicom's test files, plus a zip and a DICOMDIR media folder built here."""
    root = tmp_path_factory.mktemp("inputs")
    small = [Path(str(get_testdata_file(n))) for n in SMALL]
    with zipfile.ZipFile(root / "bundle.zip", "w") as zf:
        for i, p in enumerate(small[:3]):
            zf.write(p, f"disc/IMG{i:04d}")  # no extension: found by content
    (root / "notes.txt").write_text("not dicom\n")
    (root / "broken.dcm").write_bytes(small[0].read_bytes()[:400])  # truncated header
    media = root / "media"
    write_dicomdir([small[3], small[4]], media)
    return [*pydicom_test_files(), root]


def test_import_pydicom_corpus_zip_dicomdir_once_each(
    tmp_path: Path, mixed_inputs: list[Path]
) -> None:
    data = tmp_path / "archive"
    summary, counts = import_paths(mixed_inputs, data)
    live, indexed = archive_state(data)
    truth = accepted_truth(mixed_inputs)
    assert indexed == truth  # every valid instance, first copy, exact bytes
    assert live == len(indexed) == counts.stored  # nothing stored twice
    reasons = {r.path: r.reason for r in summary.rejected}
    assert all(reasons.values())
    assert any(p.endswith("notes.txt") for p in reasons)
    assert any(p.endswith("broken.dcm") for p in reasons)
    # MR_small in other transfer syntaxes keeps its UID: the first copy kept, others reported
    conflicts = [p for p, why in reasons.items() if why.startswith("conflict")]
    assert counts.conflicts == len(conflicts) > 0
    assert any("MR_small_" in p for p in conflicts)
    discovered = sum(1 for _ in discover(mixed_inputs))
    assert summary.files + len(summary.rejected) == discovered
    # the zip members and the DICOMDIR media were imported, not just the loose copies
    assert counts.already >= 3
    # re-import: nothing stored, nothing read (journal), same archive
    again, counts2 = import_paths(mixed_inputs, data)
    assert counts2.stored == 0 and counts2.journal_skipped > 0
    assert archive_state(data) == (live, indexed)
    rescan, counts3 = import_paths(mixed_inputs, data, use_journal=False)
    assert counts3.stored == 0 and counts3.already == summary.files
    assert archive_state(data) == (live, indexed)


def test_import_corpus_folders(tmp_path: Path) -> None:
    """The whole synthetic corpus (gzipped files, DICOM named ``.img`` or nothing, no preamble,
    every transfer syntax, character sets, multi-frame), then the shared corpus's Philips, Agfa
    and dcm_qa_ts folders when present: every instance indexed once, as stored."""
    parts = [synthetic_dir()] + [p for f in ingest_folder_sets()[1:] for p in f]
    data = tmp_path / "archive"
    summary, counts = import_paths(parts, data)
    live, indexed = archive_state(data)
    assert indexed == accepted_truth(parts)
    assert live == len(indexed) == counts.stored
    for folders in ingest_folder_sets():
        gz = list(folders.gz.rglob("*.dcm.gz"))
        assert gz and not [r for r in summary.rejected if r.path.endswith(".gz")]
        assert len(accepted_truth([folders.gz])) == len(gz)
        for p in folders.by_content.rglob("*"):  # DICOM by content, whatever the name
            if p.is_file() and p.name != "LICENSE":
                ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
                assert str(ds.SOPInstanceUID) in indexed, p
        for p in folders.syntaxes.glob("*.dcm"):
            assert str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) in indexed, p
    (no_preamble,) = synthetic_folder(synthetic.NO_PREAMBLE).iterdir()
    assert str(pydicom.dcmread(no_preamble, force=True).SOPInstanceUID) in indexed


def _kill_and_resume(tmp_path: Path, src: list[Path], rounds: int, seed: int) -> None:
    data = tmp_path / "archive"
    rng = random.Random(seed)
    env = {**os.environ, "DUCKPACS_DATA_DIR": str(data)}
    cmd = duckpacs_cmd("import", *map(str, src), "--jobs", "2")
    for _ in range(rounds):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.6, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    live, indexed = archive_state(data)
    assert indexed == accepted_truth(src)
    assert live == len(indexed), report  # nothing stored twice, nothing lost


def test_killed_import_resumes_without_loss_or_duplicates(
    tmp_path: Path, mixed_inputs: list[Path]
) -> None:
    src = [*mixed_inputs, synthetic_folder(synthetic.MR_SERIES)]
    if (toshiba := shared_folder("mr_toshiba_dti")) is not None:
        src.append(toshiba)
    _kill_and_resume(tmp_path, src, rounds=4, seed=7)


@pytest.mark.slow
def test_killed_import_resumes_many_rounds(tmp_path: Path) -> None:
    src = [synthetic_dir()] + ([SHARED_CORPUS] if shared_present() else [])
    _kill_and_resume(tmp_path, src, rounds=15, seed=11)


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("small")
    files = [Path(str(get_testdata_file(n))) for n in SMALL]
    import_paths(files, root / "archive")
    return root / "archive", {sha(p.read_bytes()): p.name for p in files}


def test_export_round_trip_byte_exact(
    tmp_path: Path, small_archive: tuple[Path, dict[str, str]]
) -> None:
    data, originals = small_archive
    for layout in ("flat", "hierarchy"):
        out = tmp_path / layout
        result = export(data, out, layout=layout)
        written = [p for p in out.rglob("*.dcm")]
        assert len(written) == len(originals) == len(result.files)
        assert {sha(p.read_bytes()) for p in written} == set(originals)
    zipped = tmp_path / "all.zip"
    export(data, zipped, as_zip=True)
    with zipfile.ZipFile(zipped) as zf:
        assert {sha(zf.read(n)) for n in zf.namelist()} == set(originals)


def test_export_query_selects(tmp_path: Path, small_archive: tuple[Path, dict[str, str]]) -> None:
    data, _ = small_archive
    result = export(data, tmp_path / "ct", level="series", query={"Modality": "CT"})
    ct = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    assert [sha((tmp_path / "ct" / f).read_bytes()) for f in result.files] == [sha(ct)]


def test_export_dicomdir_read_by_fileset_and_dcmdump(
    tmp_path: Path, small_archive: tuple[Path, dict[str, str]]
) -> None:
    data, originals = small_archive
    out = tmp_path / "cd"
    result = export(data, out, dicomdir=True)
    assert result.dicomdir is not None and not result.dicomdir.rejected
    with file_set() as fs:
        fs.load(out / "DICOMDIR", raise_orphans=True)
        assert len(fs) == len(originals)
        assert {sha(Path(i.path).read_bytes()) for i in fs} == set(originals)
    dcmdump = require_tool("dcmdump")
    env = {**os.environ, "TCP_NODELAY": "1"}
    dump = subprocess.run(
        [dcmdump, str(out / "DICOMDIR")], env=env, capture_output=True, text=True, check=True
    )
    assert "DirectoryRecordSequence" in dump.stdout and "IMAGE" in dump.stdout


def test_export_anonymized_cli(tmp_path: Path, small_archive: tuple[Path, dict[str, str]]) -> None:
    data, _ = small_archive
    out = tmp_path / "anon"
    proc = subprocess.run(
        duckpacs_cmd("--data", str(data), "export", "--out", str(out), "--anonymize", "--json"),
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(proc.stdout)
    assert any("PatientName" in k for k in report["anonymized"])
    for p in out.rglob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        assert "CompressedSamples^CT1" not in str(ds.get("PatientName", ""))
        assert str(ds.SOPInstanceUID) == p.stem


def test_import_waits_for_or_refuses_the_index_owner(tmp_path: Path) -> None:
    """While another process owns the index read-write (as `duckpacs serve` does), import
    fails with one line, or with --wait imports once the owner lets go."""
    data = tmp_path / "archive"
    src = str(get_testdata_file("CT_small.dcm"))
    import_paths([src], data)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from duckpacs.index import Index; "
            f"i = Index.open({str(data)!r}); print('held', flush=True); "
            "time.sleep(float(sys.argv[1])); i.close()",
            "3",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    mr = str(get_testdata_file("MR_small.dcm"))
    refused = subprocess.run(
        duckpacs_cmd("--data", str(data), "import", mr), capture_output=True, text=True
    )
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("duckpacs: error:") and "--wait" in lines[0]
    with pytest.raises(ArchiveLockedError):
        import_paths([mr], data)
    waited = subprocess.run(
        duckpacs_cmd("--data", str(data), "import", mr, "--wait", "30", "--json"),
        capture_output=True,
        text=True,
        check=True,
    )
    holder.wait(timeout=30)
    holder.stdout.close()
    assert json.loads(waited.stdout)["stored"] == 1
    live, indexed = archive_state(data)
    assert live == len(indexed) == 2


def test_import_export_help() -> None:
    for cmd in ("import", "export"):
        out = subprocess.run(duckpacs_cmd(cmd, "--help"), capture_output=True, text=True)
        assert out.returncode == 0 and "--json" in out.stdout


def test_export_refuses_non_empty_output(
    tmp_path: Path, small_archive: tuple[Path, dict[str, str]]
) -> None:
    data, _ = small_archive
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep me")
    proc = subprocess.run(
        duckpacs_cmd("--data", str(data), "export", "--out", str(tmp_path / "x")),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "empty" in proc.stderr
    assert shutil.which("true") is not None
