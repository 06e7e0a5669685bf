"""Shared pytest fixtures: the DICOM test corpus (see ``tests/corpus.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus import iter_gunzipped, pydicom_test_files, shared_corpus_files


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """pydicom's test files plus the shared corpus (gzipped files decompressed)."""
    dest = tmp_path_factory.mktemp("corpus_gunzip")
    shared = list(iter_gunzipped(shared_corpus_files(), dest))
    return pydicom_test_files() + shared


@pytest.fixture(scope="session")
def shared_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The shared corpus (gzipped files decompressed); skips when it is absent."""
    files = shared_corpus_files()
    if not files:
        pytest.skip("../shared/corpus is absent")
    dest = tmp_path_factory.mktemp("shared_gunzip")
    return list(iter_gunzipped(files, dest))


# The DIMSE tests' fixtures (an in-process server over an in-memory archive).
from tests.dimse_support import (  # noqa: E402, F401
    archive_factory,
    running_server,
    settings_factory,
    small_disk,
)
