"""Where the tests' DICOM files come from; the one place that knows where the optional
shared corpus lives (tests and benchmarks import it from here).

Three sources:

* the test files inside the installed pydicom package (always present);
* the synthetic corpus, built by ``tests/synthetic.py`` once per test process into a
  temporary folder (always present: every kind of file a test needs comes from here);
* the optional shared corpus of real vendor files: ``$DUCKPACS_TEST_CORPUS`` when set, else
  ``../shared/corpus`` beside the project's root. When present, the same tests also run
  over its real vendor files; when absent, they run over the other two, and none skips.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import pydicom.data

from tests import synthetic

ROOT = Path(__file__).resolve().parent.parent
CORPUS_ENV = "DUCKPACS_TEST_CORPUS"
PYDICOM_DATA = Path(pydicom.data.__file__).resolve().parent


def locate_shared_corpus(environ: Mapping[str, str], root: Path = ROOT) -> Path:
    """``$DUCKPACS_TEST_CORPUS`` if set (and not empty), else ``../shared/corpus`` beside
    ``root``. Whether the folder exists is the caller's business."""
    value = environ.get(CORPUS_ENV, "")
    return Path(value).expanduser().resolve() if value else root.parent / "shared" / "corpus"


SHARED_CORPUS = locate_shared_corpus(os.environ)


def shared_present() -> bool:
    return SHARED_CORPUS.is_dir()


def shared_folder(name: str) -> Path | None:
    """A folder of the shared corpus (e.g. ``mr_toshiba_dti``), or None when absent."""
    folder = SHARED_CORPUS / name
    return folder if folder.is_dir() else None


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
    """Files of the shared corpus (``.dcm.gz`` included as-is), or [] when it is absent."""
    if not shared_present():
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


@functools.cache
def synthetic_dir() -> Path:
    """The synthetic corpus, written once per process into a temporary folder (removed at
    exit). Its sub-folders are named by the constants of ``tests.synthetic``."""
    root = Path(tempfile.mkdtemp(prefix="duckpacs-synthetic-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    synthetic.write(root)
    return root


def synthetic_files(include_gz: bool = True) -> list[Path]:
    """Every file of the synthetic corpus (``.dcm.gz`` included as-is unless told not to)."""
    files = sorted(p for p in synthetic_dir().rglob("*") if p.is_file())
    return [p for p in files if include_gz or not p.name.endswith(".gz")]


def synthetic_folder(name: str) -> Path:
    """One folder of the synthetic corpus, e.g. ``synthetic_folder(synthetic.MR_SERIES)``."""
    folder = synthetic_dir() / name
    assert folder.is_dir(), f"the synthetic corpus has no folder {name}"
    return folder


def mr_series_sets() -> list[list[Path]]:
    """The header-heavy MR series to send around: the synthetic one, then the Toshiba series
    of the shared corpus when present (both sorted by file name, one study each)."""
    sets = [sorted(synthetic_folder(synthetic.MR_SERIES).glob("*.dcm"))]
    toshiba = shared_folder("mr_toshiba_dti")
    if toshiba is not None:
        sets.append(sorted(toshiba.glob("*.dcm")))
    return sets


class IngestFolders(NamedTuple):
    """Folders that exercise discovery by content: a series of ``.dcm.gz`` files, DICOM files
    named ``.img`` or without extension, and one slice in many transfer syntaxes."""

    gz: Path
    by_content: Path
    syntaxes: Path


def ingest_folder_sets() -> list[IngestFolders]:
    """The synthetic folders, then the shared corpus's Philips, Agfa and dcm_qa_ts folders."""
    sets = [
        IngestFolders(
            synthetic_folder(synthetic.GZ),
            synthetic_folder(synthetic.ENHANCED),
            synthetic_folder(synthetic.SYNTAX_DIR),
        )
    ]
    shared = [shared_folder(n) for n in ("mr_philips_classic_gz", "dcm_qa_agfa", "dcm_qa_ts")]
    if all(shared):
        sets.append(IngestFolders(*(f for f in shared if f is not None)))
    return sets


def iter_gunzipped(paths: list[Path], dest: Path) -> Iterator[Path]:
    """Yields each path, decompressing ``.dcm.gz`` files into ``dest`` first (a sub-folder
    per source folder, so equal names from two corpora do not collide)."""
    for p in paths:
        if p.name.endswith(".dcm.gz"):
            target = dest / p.parent.name / p.name[: -len(".gz")]
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(gzip.decompress(p.read_bytes()))
            yield target
        else:
            yield p


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to a non-empty, non-zero value."""
    return os.environ.get(name, "") not in ("", "0")
