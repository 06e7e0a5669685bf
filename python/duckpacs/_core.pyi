"""Type stubs for the Rust extension ``duckpacs._core`` (crate ``duckpacs-py``)."""

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
) -> str:
    """The DICOM JSON model (PS3.18 F.2) of the dataset in ``data``.

    Binary values longer than ``inline_threshold`` bytes and Pixel Data are written as
    ``BulkDataURI`` ``f"{bulk_data_uri}{offset}/{length}"`` when ``bulk_data_uri`` is given,
    else left out. Raises ``duckpacs.errors.ParseError``.
    """

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
