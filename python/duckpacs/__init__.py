"""duckpacs: a self-contained DICOM archive.

Python orchestrates (networking, configuration, CLI); the Rust extension ``duckpacs._core``
does parsing, storage and indexing.
"""

from duckpacs.memory import configure_allocators

configure_allocators()  # before the extension's allocator starts: see duckpacs.memory

from duckpacs._core import BUILD_PROFILE, RUSTC_VERSION  # noqa: E402
from duckpacs._core import __version__ as __version__  # noqa: E402
from duckpacs.errors import (  # noqa: E402
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
