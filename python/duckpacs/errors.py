"""The duckpacs exception hierarchy.

Every error duckpacs raises on purpose derives from :class:`DuckpacsError`; the Rust extension
maps its own errors onto these classes (``rust/duckpacs-py/src/errors.rs``). The CLI prints
``str(error)`` as one line and exits non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations


class DuckpacsError(Exception):
    """Base class of every duckpacs error."""

    exit_code = 1


class ConfigError(DuckpacsError):
    """The configuration (file, environment or flags) is invalid."""

    exit_code = 2


class ParseError(DuckpacsError):
    """A DICOM file or dataset could not be parsed (carries tag and byte offset)."""


class StorageError(DuckpacsError):
    """The store could not read or write a record, or found it damaged."""


class IntegrityError(StorageError):
    """Stored bytes fail their checksum: the data on disk is damaged."""


class ArchiveIndexError(DuckpacsError):
    """The DuckDB index is missing, corrupt or out of step with the store."""


class IndexUnusableError(ArchiveIndexError):
    """The index file is missing (while the store holds records), damaged, or not an index:
    an archive opened for writing rebuilds it from the store (the damaged file is kept)."""


class IndexUnavailableError(ArchiveIndexError):
    """The index's database server (PostgreSQL) cannot be reached or did not answer in time;
    the same call succeeds once it is back (nothing to repair)."""


class QueryError(DuckpacsError):
    """A query names an unknown attribute or holds a malformed value (PS3.4 C.2.2.2)."""


class NetworkError(DuckpacsError):
    """A DICOM or HTTP network operation failed."""


class ArchiveLockedError(DuckpacsError):
    """Another process holds the archive's write lock."""
