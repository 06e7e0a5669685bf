"""C-STORE sub-operations that send stored bytes as they are (C-GET, C-MOVE, ``send``).

pynetdicom's retrieve SCPs want a pydicom ``Dataset`` per sub-operation and re-encode it;
that would neither be byte-identical nor fast. :class:`RawInstance` is a ``Dataset`` that
carries only a reference to a stored instance; :func:`send_raw` sends its stored dataset bytes
on a presentation context the peer accepted with the stored transfer syntax. When the peer
accepted none, the instance is transcoded to an uncompressed transfer syntax it did accept
(PS3.5 A.1-A.2; decompression through pydicom's pixel handlers, e.g. pylibjpeg), or the
sub-operation fails: we never send in a transfer syntax that was not negotiated (PS3.8 9.3).

:func:`install` makes ``Association.send_c_store`` recognise :class:`RawInstance` (and defer
to pynetdicom for anything else), so pynetdicom's own C-GET/C-MOVE SCPs drive the
sub-operations, counts and failed-UID lists (PS3.4 C.4.2.3, C.4.3.3).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.transport import AssociationSocket

from duckpacs.archive import part10
from duckpacs.archive.types import InstanceRef, Readable
from duckpacs.errors import NetworkError

UNCOMPRESSED = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255


class RawInstance(Dataset):
    """A stored instance to send; only SOP Class/Instance UID are real elements."""

    def __init__(self, archive: Readable, ref: InstanceRef) -> None:
        super().__init__()
        self.SOPClassUID = ref.sop_class_uid
        self.SOPInstanceUID = ref.sop_instance_uid
        # Plain attributes (not elements) live in __dict__ via object.__setattr__.
        object.__setattr__(self, "archive_ref", ref)
        object.__setattr__(self, "archive", archive)


def choose_context(
    assoc: Association, sop_class: str, stored_ts: str
) -> tuple[PresentationContext, bool]:
    """The accepted context to send on, and whether the instance must be transcoded."""
    candidates = [
        cx
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.as_scu is not False
    ]
    for cx in candidates:
        if cx.transfer_syntax[0] == stored_ts:
            return cx, False
    for preferred in UNCOMPRESSED:
        for cx in candidates:
            if cx.transfer_syntax[0] == preferred:
                return cx, True
    offered = ", ".join(str(cx.transfer_syntax[0]) for cx in candidates) or "nothing"
    raise NetworkError(
        f"peer accepted no usable transfer syntax for {sop_class} (stored as {stored_ts}; "
        f"accepted: {offered})"
    )


def transcode(stream: bytes, target: str) -> bytes:
    """Re-encode a stored Part 10 stream's dataset in an uncompressed ``target`` syntax."""
    ds = dcmread(BytesIO(stream), force=True)
    source = UID(ds.file_meta.TransferSyntaxUID)
    if source.is_compressed:
        # Raises when no pixel handler (pylibjpeg, gdcm) can decode it. The instance keeps
        # its UID: same image, other encoding (as DCMTK and Orthanc do when transcoding).
        ds.decompress(generate_instance_uid=False)
    ts = UID(target)
    encoded = encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    if encoded is None:
        raise NetworkError(f"cannot encode {ds.SOPInstanceUID} as {ts.name}")
    return encoded


# Seconds pynetdicom's DUL thread sleeps between polls when it found nothing to do (its
# default is 1 ms). A retrieval waits on that loop twice per sub-operation (to send the
# request, to see the response), so while one runs the loop polls ten times as often.
FAST_POLL = 0.0001


def poll_fast(assoc: Any) -> float | None:
    """Make ``assoc``'s DUL poll every :data:`FAST_POLL` seconds; returns the delay it had
    (None when this pynetdicom has no such setting, and nothing was changed)."""
    dul: Any = getattr(assoc, "dul", None)
    before = getattr(dul, "_run_loop_delay", None)
    if not isinstance(before, float):
        return None
    dul._run_loop_delay = min(before, FAST_POLL)
    return before


@contextlib.contextmanager
def fast_polling(assoc: Any) -> Iterator[None]:
    """Poll ``assoc``'s DUL every :data:`FAST_POLL` seconds inside the block."""
    before = poll_fast(assoc)
    try:
        yield
    finally:
        if before is not None:
            assoc.dul._run_loop_delay = before


def send_raw(
    assoc: Association,
    instance: RawInstance,
    msg_id: int = 1,
    priority: int = 2,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> Dataset:
    """Send one stored instance as a C-STORE request and return the response status."""
    archive: Readable = instance.__dict__["archive"]
    ref: InstanceRef = instance.__dict__["archive_ref"]
    poll_fast(assoc)  # a C-MOVE's association to its destination lives only for the move
    stream = archive.read(ref.location)
    framing = part10.split(stream)
    context, convert = choose_context(assoc, ref.sop_class_uid, framing.transfer_syntax)
    target = context.transfer_syntax[0]
    payload = transcode(stream, target) if convert else stream[framing.dataset_offset :]
    return send_payload(
        assoc,
        context,
        ref.sop_class_uid,
        ref.sop_instance_uid,
        payload,
        msg_id,
        priority,
        originator_aet,
        originator_id,
    )


def send_payload(
    assoc: Association,
    context: PresentationContext,
    sop_class_uid: str,
    sop_instance_uid: str,
    payload: bytes,
    msg_id: int = 1,
    priority: int = 2,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> Dataset:
    """Send already-encoded dataset bytes as a C-STORE request on ``context``."""
    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = priority
    req.MoveOriginatorApplicationEntityTitle = originator_aet
    req.MoveOriginatorMessageID = originator_id
    req.AffectedSOPClassUID = sop_class_uid
    req.AffectedSOPInstanceUID = sop_instance_uid
    req.DataSet = BytesIO(payload)
    # Same hand-off with the reactor as pynetdicom's own send_c_store.
    assoc._reactor_checkpoint.clear()
    try:
        while not assoc._is_paused:
            time.sleep(0.0001)
        assoc.dimse.send_msg(req, int(context.context_id or 1))
        _cx, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if rsp is None:
        assoc._handle_no_response()
        raise NetworkError(f"no C-STORE response for {sop_instance_uid}")
    status: Dataset = assoc._check_received_status(rsp)
    return status


_original_send_c_store = Association.send_c_store


def _send_c_store(
    self: Association,
    dataset: Any,
    msg_id: int = 1,
    priority: int = 2,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> Dataset:
    if isinstance(dataset, RawInstance):
        return send_raw(self, dataset, msg_id, priority, originator_aet, originator_id)
    return _original_send_c_store(self, dataset, msg_id, priority, originator_aet, originator_id)


_original_create_socket = AssociationSocket._create_socket


def _create_socket(self: AssociationSocket, address: Any) -> socket.socket:
    sock = _original_create_socket(self, address)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def install() -> None:
    """Let pynetdicom's retrieve SCPs send :class:`RawInstance` objects, and turn Nagle's
    algorithm off on the associations we open (C-MOVE, storage commitment reports, send):
    a C-STORE spans several PDUs written one by one (idempotent)."""
    Association.send_c_store = _send_c_store  # type: ignore[method-assign]
    AssociationSocket._create_socket = _create_socket  # type: ignore[method-assign]


def storage_contexts(refs: list[InstanceRef]) -> list[PresentationContext]:
    """Contexts to propose to a move destination (or ``send`` peer) for these instances.

    One context per (SOP class, stored transfer syntax), so the peer can accept the bytes as
    stored, plus one uncompressed fallback per SOP class for transcoding; at most 128.
    """
    exact: list[tuple[str, str]] = []
    classes: list[str] = []
    for ref in refs:
        pair = (ref.sop_class_uid, ref.transfer_syntax)
        if pair not in exact:
            exact.append(pair)
        if ref.sop_class_uid not in classes:
            classes.append(ref.sop_class_uid)
    contexts = [build_context(sop, ts) for sop, ts in exact]
    fallback: list[str | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    contexts += [build_context(sop, fallback) for sop in classes]
    return contexts[:MAX_CONTEXTS]
