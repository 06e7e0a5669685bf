"""Shared helpers for the store tests: the corpora to round-trip and a store factory."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

from pydicom.data import get_testdata_files

from tests.corpus import shared_corpus_files, synthetic_files


def pydicom_files() -> list[Path]:
    """Every file of pydicom's own test data (always installed with pydicom)."""
    return sorted(Path(f) for f in get_testdata_files() if os.path.isfile(f))


def corpus_files() -> list[Path]:
    """Every synthetic file, then every file of the shared corpus when present."""
    return synthetic_files() + shared_corpus_files()


def read_original(path: Path) -> bytes:
    """The file's bytes; a published ``.gz`` is gunzipped (that is what an archive receives)."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
