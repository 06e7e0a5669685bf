"""Shared pytest set-up: where the test files come from (``tests/corpus.py``) and the DIMSE
fixtures."""

from __future__ import annotations

import os

import pytest

from tests.corpus import CORPUS_ENV, SHARED_CORPUS, shared_present


def pytest_configure(config: pytest.Config) -> None:
    # A corpus asked for by name must be there: quietly testing without it would mislead.
    if os.environ.get(CORPUS_ENV) and not shared_present():
        raise pytest.UsageError(f"{CORPUS_ENV}={os.environ[CORPUS_ENV]}: no such folder")


def pytest_report_header(config: pytest.Config) -> str:
    state = "present" if shared_present() else "absent: synthetic and pydicom files only"
    return f"shared corpus: {SHARED_CORPUS} ({state})"


# The DIMSE tests' fixtures (an in-process server over an in-memory archive).
from tests.dimse_support import (  # noqa: E402, F401
    archive_factory,
    running_server,
    settings_factory,
    small_disk,
)

# A temporary PostgreSQL cluster for the PostgreSQL index's tests (one per session).
from tests.pg_support import each_index_backend, pg_cluster  # noqa: E402, F401

# An S3 endpoint (s3s-fs, built by `make s3s-fs`) for the tests of packs on object storage.
from tests.s3_support import s3_credentials, s3_server  # noqa: E402, F401
