"""How the process holds memory: allocator settings chosen for a server that must stay small.

A field machine may have 4 GB for everything; the archive's resident memory should follow
its work and come back after it. Measured on a storescu ingest of 2,080 MR instances with 4
associations (bench/bench_dimse.py), peak RSS of ``duckpacs serve``:

- the Rust extension's allocator (mimalloc) commits whole arenas up front and keeps freed
  pages a while before returning them: ``MIMALLOC_ARENA_EAGER_COMMIT=0`` and
  ``MIMALLOC_PURGE_DELAY=0`` took the peak from 428 to 305 MB, and made ingest faster
  (fewer huge-page faults zeroing memory);
- glibc (CPython, DuckDB) gives each thread that allocates its own arena; capping them at 2
  took it from 305 to 255 MB.

:func:`configure_allocators` must run before the Rust extension is loaded (mimalloc reads its
options when it starts); a value already in the environment wins.
"""

from __future__ import annotations

import ctypes
import os

_MIMALLOC = {"MIMALLOC_ARENA_EAGER_COMMIT": "0", "MIMALLOC_PURGE_DELAY": "0"}
_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
GLIBC_ARENAS = 2


def configure_allocators() -> None:
    """Set the allocator options above (see the module docstring)."""
    for key, value in _MIMALLOC.items():
        os.environ.setdefault(key, value)
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    # The C library is already loaded: look mallopt up among the process's own symbols
    # (dlopen(NULL)) rather than by ctypes.util.find_library, which runs `ldconfig -p` and
    # cost every command 15 ms at start.
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, GLIBC_ARENAS)
    except (OSError, AttributeError):
        return  # not glibc: its own defaults apply
