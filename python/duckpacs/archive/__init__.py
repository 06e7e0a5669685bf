"""The archive facade: store, find, locate and read instances (see :mod:`.facade`).

:class:`Archive` is what the DIMSE server, DICOMweb and import use; :mod:`.ipc` lets worker
processes share the one index owner; :mod:`.part10` frames datasets without decoding them.
"""

from duckpacs.archive.facade import Archive
from duckpacs.archive.types import (
    Catalog,
    Describer,
    IndexEntry,
    InstanceRef,
    Location,
    Outcome,
    Store,
    StoreResult,
)

__all__ = [
    "Archive",
    "Catalog",
    "Describer",
    "IndexEntry",
    "InstanceRef",
    "Location",
    "Outcome",
    "Store",
    "StoreResult",
]
