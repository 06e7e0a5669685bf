"""The import driver: every valid input reaches the sink once, every invalid one is reported."""

from __future__ import annotations

import gzip
import io
import warnings
import zipfile
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from duckpacs.files.progress import Progress
from duckpacs.files.sources import discover_all
from duckpacs.ingest.batch import Payload, run
from tests.corpus import ingest_folder_sets

PYDICOM_DIR = Path(get_testdata_file("CT_small.dcm")).parent


class FolderSink:
    """A test sink standing in for the store: parses, refuses bad data, keeps one per UID."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.batches: list[int] = []

    def __call__(self, batch: list[Payload]) -> list[str | None]:
        self.batches.append(len(batch))
        return [self._one(p) for p in batch]

    def _one(self, p: Payload) -> str | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(p.data), force=p.item.kind == "dataset")
                uid = str(ds.SOPInstanceUID)
        except Exception as e:
            return f"parse error: {type(e).__name__}"
        if uid in self.stored:
            return f"duplicate of SOP Instance {uid}"
        self.stored[uid] = p.data
        return None


def _name(path: str) -> str:
    outer, _, member = path.partition("!")
    return Path(outer).name + (f"!{member}" if member else "")


def test_batches_bounded_and_every_input_accounted_for(tmp_path: Path) -> None:
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (tmp_path / "a.dcm").write_bytes(ct)
    (tmp_path / "b.dcm.gz").write_bytes(
        gzip.compress(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    )
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        z.write(get_testdata_file("rtplan.dcm"), "x/rtplan")
        z.writestr("x/readme", "hello")
    (tmp_path / "copy.dcm").write_bytes(ct)  # same instance again
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 1000)
    sink = FolderSink()
    summary = run([tmp_path], sink, batch_files=2, jobs=2)
    assert max(sink.batches) <= 2
    assert summary.files == 3 and len(sink.stored) == 3
    reasons = {_name(r.path): r.reason for r in summary.rejected}
    assert set(reasons) == {"copy.dcm", "junk.bin", "c.zip!x/readme"}
    assert reasons["copy.dcm"].startswith("duplicate")
    assert sink.stored[str(pydicom.dcmread(io.BytesIO(ct)).SOPInstanceUID)] == ct


def test_pydicom_corpus_each_valid_file_once() -> None:
    items, discovery_rejects = discover_all([PYDICOM_DIR])
    sink = FolderSink()
    summary = run([PYDICOM_DIR], sink, batch_bytes=5_000_000)
    assert summary.files == len(sink.stored) > 100
    assert sum(sink.batches) == len(items)  # every discovered item reached the sink once
    assert len(summary.rejected) == len(discovery_rejects) + len(items) - summary.files
    assert all(r.reason for r in summary.rejected)


def test_sink_must_answer_for_each_payload(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    progress = Progress(enabled=False)
    with pytest.raises(RuntimeError, match="outcomes"):
        run([tmp_path], lambda batch: [], progress=progress)
    assert progress.summary.interrupted


def test_unreadable_member_is_rejected_not_sent(tmp_path: Path) -> None:
    good = gzip.compress(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    (tmp_path / "trunc.dcm.gz").write_bytes(good[: len(good) // 2])
    sink = FolderSink()
    summary = run([tmp_path], sink)
    assert summary.files == 0 and not sink.batches
    assert "gzip" in summary.rejected[0].reason or "read" in summary.rejected[0].reason


def test_gz_files_named_anything_and_every_syntax_through_the_driver() -> None:
    """The synthetic folders, and the shared corpus's Philips, Agfa and dcm_qa_ts folders when
    present: only licence files and duplicates are turned away."""
    for folders in ingest_folder_sets():
        sink = FolderSink()
        gz = sorted(folders.gz.glob("*.dcm.gz"))[:20]
        summary = run([folders.by_content, folders.syntaxes, *gz], sink, jobs=2)
        turned_away = {
            Path(r.path).name for r in summary.rejected if not r.reason.startswith("duplicate")
        }
        assert turned_away <= {"LICENSE"}
        assert summary.files == len(sink.stored) >= len(gz) + 4 + 9
