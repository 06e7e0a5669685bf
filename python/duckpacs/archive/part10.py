"""Part 10 framing for Python callers: the File Meta Information group, built and split by
the Rust core (``duckpacs_core::part10``, the one owner of group 0002; PS3.10 7.1).

A DIMSE C-STORE carries a bare dataset; the archive stores it as a Part 10 stream. Going the
other way (C-GET, C-MOVE, ``duckpacs send``) the meta is split off again. The dataset bytes
are never parsed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from duckpacs import _core

# Our Implementation Class UID and Version Name (PS3.7 D.3.3.2), in meta groups we write and
# in association negotiation.
IMPLEMENTATION_CLASS_UID: str = _core.IMPLEMENTATION_CLASS_UID
IMPLEMENTATION_VERSION_NAME: str = _core.IMPLEMENTATION_VERSION_NAME


@dataclass(frozen=True)
class Framing:
    """Where the dataset starts in a stored stream, and what the meta says about it."""

    dataset_offset: int
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str


def build_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str = ""
) -> bytes:
    """Preamble, ``DICM`` and group 0002 for a dataset received over the network, with the
    calling AE title as Source Application Entity Title (0002,0016)."""
    return _core.part10_meta(sop_class_uid, sop_instance_uid, transfer_syntax, source_ae)


def split(data: bytes | memoryview) -> Framing:
    """The end of group 0002 in a Part 10 stream (with or without preamble), walking the
    meta elements rather than trusting (0002,0000). Raises :class:`ParseError` with the byte
    offset when the stream has no readable meta."""
    return Framing(*_core.part10_split(bytes(data)))
