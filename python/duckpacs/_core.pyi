"""Type stubs for the Rust extension ``duckpacs._core`` (crate ``duckpacs-py``)."""

from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

__version__: str
"""Version of the duckpacs-core crate."""
BUILD_PROFILE: str
"""``"release"`` or ``"debug"``: how the extension was compiled."""
RUSTC_VERSION: str
"""The ``rustc --version`` line of the compiler that built the extension."""

def describe(data: bytes, transfer_syntax: str | None = None) -> dict[str, object]:
    """Layout of one instance (``duckpacs_core::layout::InstanceLayout``) as a dict.

    Keys: ``framing`` ("part10", "meta_without_preamble", "bare_dataset"), ``meta``
    (start, end), ``transfer_syntax``, ``sop_class_uid``, ``sop_instance_uid``,
    ``study_instance_uid``, ``series_instance_uid``, ``patient_id``, ``modality``,
    ``deflated`` (offsets then index ``data[:meta_end] + inflate(data[meta_end:])``) and
    ``pixel``: None or a dict with ``element``, ``value`` (start, end) and ``kind``:
    "native" (``rows``, ``columns``, ``samples_per_pixel``, ``bits_allocated``,
    ``pixel_representation``, ``planar_configuration``, ``frames``, ``frame_len``,
    ``big_endian``) or "encapsulated" (``items``: (start, end) of each item including its
    8-byte header, the first being the Basic Offset Table; ``frames``: (first, end) item
    indices per frame, empty when unknown). Raises ``duckpacs.errors.ParseError``.
    """

def dump_json(
    data: bytes,
    transfer_syntax: str | None = None,
    bulk_data_uri: str | None = None,
    inline_threshold: int = 0,
    include_meta: bool = False,
    pixel_data_by_tag: bool = False,
) -> str:
    """The DICOM JSON model (PS3.18 F.2) of the dataset in ``data``.

    ``pixel_data_by_tag`` points top-level Pixel Data at ``f"{bulk_data_uri}{tag}"``
    (e.g. ``bulkdata/7FE00010``) instead of a byte range.

    Binary values longer than ``inline_threshold`` bytes and Pixel Data are written as
    ``BulkDataURI`` ``f"{bulk_data_uri}{offset}/{length}"`` when ``bulk_data_uri`` is given,
    else left out. Raises ``duckpacs.errors.ParseError``.
    """

Row = dict[str, Any]
"""Keyword (or tag as 8 hex digits) -> DICOM text as the index keeps it (values joined by
``\\``), None for an empty value, a list of Row for a sequence's items, a list of values of
a multi-valued attribute; anything else is written as its ``str()``."""

def rows_json(rows: list[Row]) -> str:
    """A DICOM JSON array (PS3.18 F.2), one object per row, attributes in tag order, written
    by the producer of :func:`dump_json` (person-name groups, IS/DS numbers, empty values);
    names that are neither keywords nor tags are left out."""

def row_json(row: Row) -> str:
    """One row as a DICOM JSON object (see :func:`rows_json`)."""

def dump_text(data: bytes, transfer_syntax: str | None = None) -> str:
    """Human-readable dump: one line per element (tag, VR, keyword, value, length, offset)."""

def scan_headers(
    paths: list[str], threads: int = 0
) -> list[tuple[str | None, str, str, str, str, str, str, str, int, int]]:
    """Read and parse many files up to their Pixel Data, in Rust, GIL released.

    ``threads`` 0 uses one thread per core. One tuple per path, in order: (error message or
    None, transfer_syntax, sop_class_uid, sop_instance_uid, study_instance_uid,
    series_instance_uid, patient_id, modality, top-level element count, file size). A file
    that cannot be read or parsed yields its error message; nothing is raised.
    """

# --- storage engine (rust/duckpacs-py/src/store.rs) ---

Location = tuple[int, int, int]
"""``(pack, offset, length)``: where a record is; the index stores it for O(1) reads."""

class Store:
    """The append-only instance store in ``<data>/store`` (see docs/STORAGE-FORMAT.md).

    With ``writer_id`` the process appends to its own packs (exclusive lock per writer id,
    ``ArchiveLockedError`` if taken) and recovers their torn tail; without it, read-only.

    ``arrival`` is how large native frames are encoded as they arrive, before densifying:
    None for the default (byte shuffle + zstd level 1), ``"dense"`` (MED + zstd at once, no
    densifying needed), ``"raw"`` or ``"zstd:LEVEL"``.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        writer_id: int | None = None,
        pack_size: int = 1 << 30,
        dictionaries: bool = True,
        sync: bool = True,
        arrival: str | None = None,
        remote: dict[str, Any] | None = None,
    ) -> None: ...
    @staticmethod
    def open(
        path: str | PathLike[str],
        writer_id: int | None = None,
        pack_size: int = 1 << 30,
        dictionaries: bool = True,
        sync: bool = True,
        arrival: str | None = None,
        remote: dict[str, Any] | None = None,
    ) -> Store: ...
    @property
    def path(self) -> Path: ...
    @property
    def writer_id(self) -> int | None: ...
    @property
    def sync_count(self) -> int: ...
    @property
    def appends(self) -> int:
        """Append batches this writer has written since it opened: what a background job
        watches to yield to arrivals."""
    def put(
        self,
        data: bytes,
        transfer_syntax: str | None = None,
        received_at_us: int | None = None,
        source_ae: str | None = None,
        hold: bool = False,
    ) -> Location:
        """Stores one instance; returns once durable. With ``hold`` the record stays below
        :meth:`low_water` until :meth:`settle` (the index owner has taken its row)."""
    def put_many(
        self,
        items: Sequence[bytes],
        received_at_us: int | None = None,
        source_ae: str | None = None,
    ) -> list[Location]: ...
    def put_file(
        self,
        path: str | PathLike[str],
        transfer_syntax: str | None = None,
        received_at_us: int | None = None,
        source_ae: str | None = None,
        hold: bool = False,
    ) -> Location:
        """Stores a file; from 64 MiB on it is encoded frame by frame into a pack of its own,
        in bounded memory whatever its size."""
    def get(self, location: Location) -> bytes: ...
    def open_instance(self, location: Location) -> InstanceStream:
        """The original bytes as a stream of checked pieces (see :class:`InstanceStream`)."""
    def get_frame(self, location: Location, index: int) -> bytes: ...
    def frame_count(self, location: Location) -> int: ...
    def meta(self, location: Location) -> dict[str, Any]: ...
    def sha256(self, location: Location) -> str: ...
    def header_bytes(self, location: Location) -> bytes: ...
    def delete(self, location: Location, hold: bool = False) -> Location: ...
    def scan(self, headers: bool = True) -> ScanIter: ...
    def tail(
        self, since: dict[int, int], headers: bool = True, local_only: bool = False
    ) -> dict[str, Any]:
        """Records past the index's per-pack marks: ``instances`` (a :class:`ScanIter` in
        log order), ``tombstoned`` (locations deleted past the marks), ``ends`` (pack -> new
        mark), ``damaged`` (records left out: their checksums fail). ``local_only`` leaves
        out packs evicted to object storage (``store.local_bytes``)."""
    def low_water(self) -> dict[int, int]:
        """Pack -> offset below which this writer's records may be marked as indexed."""
    def settle(self, locations: Sequence[Location]) -> None:
        """Releases records put with ``hold=True``."""
    def verify(
        self, deep: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]: ...
    def stats(self) -> dict[str, int]: ...
    def compact(
        self, min_dead_ratio: float = 0.2, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]: ...
    def densify_step(self, budget: int = 8 << 20, threads: int = 1) -> dict[str, Any]:
        """About ``budget`` bytes of densifying (docs/STORAGE-FORMAT.md, "Densifying"):
        ``moved`` (``(old, new)`` locations the index must follow), then ``settle`` to pass
        to :meth:`settle`; ``bytes_in``, ``bytes_out``, ``densified``, ``scanned``,
        ``packs``, ``pending_bytes``, ``skipped`` (``(pack, reason)``), ``done``."""
    def seal(self) -> None:
        """Closes this writer's active pack; the next record starts a new one."""
    def name_node(self, number: int, name: str) -> None:
        """Packs of node ``number`` (pack ids ``pack | number << 48``) are read from the
        bucket under ``<prefix>/<name>/``."""
    def upload_step(self, budget: int | None = None) -> dict[str, Any]:
        """Uploads every pack no writer appends to any more that the bucket does not hold
        whole (until ``budget`` bytes went up, if given; the rest counts as pending), then
        removes from the bucket the packs removed here. Returns ``uploaded``, ``bytes``,
        ``deleted``, ``pending_packs``, ``pending_bytes``, ``sealed_pending_bytes`` and
        ``error`` (the first failure, or None: a step never raises for the endpoint)."""
    def evict_step(self, keep: int, indexed: dict[int, int]) -> dict[str, int]:
        """Removes local copies of packs the bucket holds whole, oldest first, until this
        node's packs take at most ``keep`` bytes; only packs ``indexed`` (pack -> mark)
        covers to their end go, and are read from the bucket from then on. Returns
        ``evicted``, ``bytes``, ``local_bytes``."""
    def remote_stats(self) -> dict[str, int] | None:
        """Reads from object storage: ``gets``, ``get_bytes``, ``hits``, ``cache_bytes``,
        ``cache_limit``; None without object storage."""
    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(self, *exc: object) -> bool: ...

class InstanceStream:
    """An instance's original bytes, rebuilt a chunk at a time (each chunk checked); after
    the last piece a SHA-256 mismatch raises :class:`~duckpacs.errors.IntegrityError`."""

    @property
    def size(self) -> int: ...
    def __iter__(self) -> InstanceStream: ...
    def __next__(self) -> bytes: ...
    def read(self, size: int = -1) -> bytes: ...

# --- the archive's write path (rust/duckpacs-py/src/archive.rs) ---

class ArchiveWriter:
    """The one door for bytes (``duckpacs_core::archive::Writer``): parse once, one caller
    per SOP Instance UID, the duplicate rule, a durable record, a pending index row.

    ``lookup(uids)`` returns ``{uid: (pack, offset, length, sha256_hex)}`` for the indexed
    ones. Outcome dicts: ``outcome`` ("stored", "identical", "kept-first", "replaced",
    "rejected"), ``sop_instance_uid``, ``location`` (and ``previous`` when replaced), or
    ``rejection`` ("malformed", "no-uid", "out-of-resources") and ``reason``.
    """

    def __init__(
        self,
        store: Store,
        lookup: Callable[[list[str]], dict[str, tuple[int, int, int, str]]],
        on_conflict: str = "keep-first",
        flush_rows: int = 512,
    ) -> None: ...
    def store(
        self,
        data: bytes,
        transfer_syntax: str | None = None,
        received_at_us: int | None = None,
        source_ae: str | None = None,
    ) -> dict[str, Any]: ...
    def store_dataset(
        self,
        dataset: bytes,
        transfer_syntax: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        source_ae: str | None = None,
        received_at_us: int | None = None,
    ) -> dict[str, Any]: ...
    def store_many(
        self,
        items: Sequence[bytes],
        received_at_us: int | None = None,
        source_ae: str | None = None,
    ) -> list[dict[str, Any]]: ...
    def store_file(
        self,
        path: str | PathLike[str],
        received_at_us: int | None = None,
        source_ae: str | None = None,
    ) -> dict[str, Any]:
        """``store`` for a Part 10 file of any size, in memory that does not grow with it."""
    def seed(self, uids: Sequence[str]) -> None:
        """Feed archived UIDs to the filter that spares new instances an index lookup."""
    def set_refusal(self, reason: str | None = None) -> None:
        """Refuse every arrival with ``reason`` (a storage limit) until called with None."""
    def seeded(self) -> None:
        """Every archived UID has been fed to :meth:`seed`."""
    def drain(self) -> tuple[HeaderBatch, dict[int, int]] | None:
        """The next batch for the index and the store marks it covers (the unconfirmed one
        again after a failed commit)."""
    def committed(self) -> None: ...
    def wait(self, timeout: float) -> bool: ...
    def pending(self, uid: str) -> tuple[Location, str] | None: ...
    @property
    def pending_rows(self) -> int: ...
    def close(self) -> None: ...

IMPLEMENTATION_CLASS_UID: str
"""Our Implementation Class UID (PS3.7 D.3.3.2), a UUID-derived UID under 2.25."""
IMPLEMENTATION_VERSION_NAME: str

def part10_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str = ""
) -> bytes:
    """The File Meta Information for a dataset received over DIMSE (PS3.10 7.1)."""

def part10_split(data: bytes) -> tuple[int, str, str, str]:
    """``(dataset_offset, transfer_syntax, sop_class_uid, sop_instance_uid)`` of a Part 10
    stream; raises ``ParseError`` when it has no readable meta."""

class ScanIter(Iterator[dict[str, Any]]):
    """Live instances of a store, one dict per instance (see ``Store.scan``)."""

    def __next__(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...

class HeaderBatch:
    """A header batch built in Rust (``duckpacs.index.schema.BATCH_SCHEMA``).

    Exports itself through the Arrow PyCapsule interface, so ``Index.add_batch(batch)`` and
    ``pyarrow.table(batch)`` take it without copying.
    """

    @property
    def num_rows(self) -> int: ...
    @property
    def errors(self) -> list[tuple[int, str]]:
        """``(index into buffers, message)`` of each buffer that could not be parsed."""
    def __len__(self) -> int: ...
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

def index_batch(
    buffers: list[bytes],
    extras: list[dict[str, object]] | None = None,
    transfer_syntax: str | None = None,
    threads: int | None = None,
) -> HeaderBatch:
    """Parse ``buffers`` (GIL released, pixel data skipped) into one header batch.

    Large lists are split over ``threads`` threads (default: the number of CPUs).

    ``extras[i]`` holds the location and provenance of ``buffers[i]``: ``pack``, ``offset``,
    ``length``, ``size`` (int), ``sha256``, ``source_ae``, ``transfer_syntax`` (str),
    ``received_at`` (datetime or microseconds since the epoch, UTC). ``transfer_syntax`` is
    the one negotiated for bare datasets. Buffers that fail to parse are left out and listed
    in ``HeaderBatch.errors``.
    """

# --- the DICOM listener and C-STORE SCU (rust/duckpacs-py/src/net.rs) ---

class DimseServer:
    """The DICOM listener of ``duckpacs serve`` over the archive's writer and store.

    ``host`` answers what only the orchestrator knows (``duckpacs.net.scp.ArchiveHost``):
    ``admit``, ``find``, ``locate``, ``transcode``, ``destination``, ``rare``,
    ``report_elsewhere``. Listens as soon as it is made; raises ``OSError`` when it cannot.
    ``tls``: (certificate, key, CA or None) PEM files: DICOM TLS on this port (PS3.15 B.9),
    with a CA clients must show a certificate it issued; bad files raise ``ConfigError``.
    """

    def __init__(
        self,
        writer: ArchiveWriter,
        store: Store,
        host: object,
        ae_title: str,
        bind: str,
        port: int,
        max_pdu: int = 262144,
        max_associations: int = 32,
        artim: float = 30.0,
        idle: float = 60.0,
        tls: tuple[str, str, str | None] | None = None,
    ) -> None: ...
    @property
    def port(self) -> int: ...
    def load(self) -> tuple[int, int]:
        """(connections negotiating, associations established)."""
    def stop(self, grace: float = 10.0) -> None: ...

def send_stored(
    store: Store,
    host: str,
    port: int,
    our_ae: str,
    peer_ae: str,
    items: Sequence[tuple[str, str, str, int, int, int]],
    transcode: Callable[[bytes, str], bytes],
    timeout: float = 30.0,
    progress: Callable[[int, int, str | None], None] | None = None,
    tls: tuple[str, str | None, str | None, str] | None = None,
) -> dict[str, Any]:
    """C-STORE stored instances to a peer on one association (``duckpacs send``);
    ``progress(done, total, failure)`` after each answer (``failure`` None when stored); returns
    ``completed``, ``warning``, ``failed`` and ``failures`` [(uid, reason)]. Raises
    ``NetworkError`` when no association can be made. ``tls``: (CA, our certificate, our
    key, server name) to go over DICOM TLS (``duckpacs.net.tls.dial_args``)."""

def get_study(
    host: str,
    port: int,
    our_ae: str,
    peer_ae: str,
    study_uid: str,
    offers: Sequence[tuple[str, str]],
    receiver: Callable[[str, bytes], int],
    timeout: float = 30.0,
    tls: tuple[str, str | None, str | None, str] | None = None,
) -> dict[str, Any]:
    """C-GET of a study; each sub-operation goes to ``receiver(uid, part10) -> status``.
    Returns ``accepted``, ``status``, ``completed``, ``failed``, ``warning``, ``received``,
    ``errors`` and ``ended``; raises ``NetworkError`` when no association can be made."""
