"""What the backup tests share: running `duckpacs backup` / `restore` as a user does, and the
archive's content as a restore must give it back (SOP Instance UID -> SHA-256 of the dataset
as received, and the index's answers)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from duckpacs.archive import part10
from duckpacs.archive.facade import Archive
from tests.crash_support import duckpacs

KEYS = ["PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
        "InstanceNumber", "Modality"]  # fmt: skip


def backup(data: Path, dest: Path) -> dict[str, Any]:
    run = duckpacs("backup", "--to", str(dest), "--data", str(data), "--json")
    assert run.returncode == 0, run.stderr
    summary: dict[str, Any] = json.loads(run.stdout)
    return summary


def restore(source: Path, data: Path, *extra: str) -> dict[str, Any]:
    run = duckpacs("restore", "--from", str(source), "--data", str(data), "--json", *extra)
    assert run.returncode == 0, run.stderr
    summary: dict[str, Any] = json.loads(run.stdout)
    return summary


def verify_deep(data: Path) -> dict[str, Any]:
    run = duckpacs("verify", "--deep", "--json", "--data", str(data))
    assert run.returncode == 0, run.stdout + run.stderr
    report: dict[str, Any] = json.loads(run.stdout)
    return report


def dataset_sha(stream: bytes) -> str:
    """SHA-256 of a stored stream's dataset (what a DIMSE sender's file holds after its meta)."""
    return hashlib.sha256(stream[part10.split(stream).dataset_offset :]).hexdigest()


def content(data: Path) -> dict[str, str]:
    """SOP Instance UID -> SHA-256 of the dataset, for every indexed instance."""
    with Archive.open(data) as archive:
        return {
            ref.sop_instance_uid: dataset_sha(archive.read(ref.location))
            for ref in archive.locate("study", {})
        }


def answers(data: Path) -> dict[str, list[dict[str, Any]]]:
    """The index's C-FIND answers at each level, in a stable order."""
    with Archive.open(data) as archive:
        out = {}
        for level, key in (("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID"),
                           ("image", "SOPInstanceUID")):  # fmt: skip
            rows = archive.find(level, {}, KEYS if level == "image" else [key, "PatientID"])
            out[level] = sorted(rows, key=lambda r: str(r[key]))
        return out
