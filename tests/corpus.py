"""Discovery of the DICOM test corpus (used by conftest fixtures and tests).

Two sources: the test files inside the installed pydicom package (always present) and the
shared corpus at ``../shared/corpus`` relative to the project root (skipped when absent).
The Philips ``.dcm.gz`` files are decompressed once per session into a temporary folder.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import pydicom.data

ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPUS = ROOT.parent / "shared" / "corpus"
PYDICOM_DATA = Path(pydicom.data.__file__).resolve().parent

# Files shipped in pydicom's data folders that are not DICOM at all.
_NOT_DICOM_SUFFIXES = (
    ".py",
    ".pyc",
    ".json",
    ".txt",
    ".icc",
    ".dump",
    ".md",
    ".gz",
    ".bz2",
    ".xz",
    ".zip",
    ".j2k",
    ".jpg",
    ".jpeg",
    ".png",
    ".npy",
    ".csv",
    ".html",
)


def _is_candidate(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() not in _NOT_DICOM_SUFFIXES
        and path.name not in {"README", "LICENSE", "LICENSE.txt"}
    )


def pydicom_test_files() -> list[Path]:
    """Every DICOM-looking file in pydicom's ``test_files`` and ``charset_files`` folders."""
    found: list[Path] = []
    for sub in ("test_files", "charset_files"):
        found.extend(p for p in sorted((PYDICOM_DATA / sub).rglob("*")) if _is_candidate(p))
    return found


def shared_corpus_files(include_gz: bool = True) -> list[Path]:
    """Files of ``../shared/corpus`` (``.dcm.gz`` included as-is), or [] when it is absent."""
    if not SHARED_CORPUS.is_dir():
        return []
    out = []
    for p in sorted(SHARED_CORPUS.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() in {".md", ".txt"}:
            continue
        if p.name.upper().startswith("LICENSE") or p.name.upper().startswith("README"):
            continue
        if p.name.endswith(".dcm.gz") and not include_gz:
            continue
        out.append(p)
    return out


def iter_gunzipped(paths: list[Path], dest: Path) -> Iterator[Path]:
    """Yields each path, decompressing ``.dcm.gz`` files into ``dest`` first."""
    for p in paths:
        if p.name.endswith(".dcm.gz"):
            target = dest / p.name[: -len(".gz")]
            if not target.exists():
                target.write_bytes(gzip.decompress(p.read_bytes()))
            yield target
        else:
            yield p


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to a non-empty, non-zero value."""
    return os.environ.get(name, "") not in ("", "0")
