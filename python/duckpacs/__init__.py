"""duckpacs: a self-contained DICOM archive.

Python orchestrates (networking, configuration, CLI); the Rust extension ``duckpacs._core``
does parsing, storage and indexing.
"""

from duckpacs._core import BUILD_PROFILE, RUSTC_VERSION
from duckpacs._core import __version__ as __version__
from duckpacs.errors import (
    ConfigError,
    DuckpacsError,
    NetworkError,
    ParseError,
    StorageError,
)

__all__ = [
    "BUILD_PROFILE",
    "RUSTC_VERSION",
    "ConfigError",
    "DuckpacsError",
    "NetworkError",
    "ParseError",
    "StorageError",
    "__version__",
]
