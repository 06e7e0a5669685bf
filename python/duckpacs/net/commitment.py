"""Storage Commitment Push Model as SCP (PS3.4 Annex J), the first of the rare services.

The SCU asks, with N-ACTION (action type 1, "Request Storage Commitment"), whether a list of
instances is safely stored. The Rust listener hands us the request; we check each instance
in the archive (stores are acknowledged only once durable, so archived means committed) and
answer at once with the N-ACTION response and the result as an N-EVENT-REPORT: event type 1
when all are committed, 2 when some failed, with Failure Reason 0x0112 "No such object
instance" or 0x0119 "Class / Instance conflict" (PS3.4 J.3.3.1). The listener sends the
report on the same association; when the requester has released it already, we send it on
a new association to the requester's configured address, proposing the SCP role (J.3.3).
"""

from __future__ import annotations

import threading
import time
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID
from pynetdicom import build_role
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from duckpacs import logs
from duckpacs.config import Settings
from duckpacs.dicom import status
from duckpacs.errors import DuckpacsError
from duckpacs.net import scu
from duckpacs.net.tls import client_context

log = logs.get("dimse")

# The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.5).
COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
NO_SUCH_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
NO_SUCH_ACTION = 0x0123
INVALID_ARGUMENT = 0x0115
_PENDING_TTL = 300.0  # seconds a report waits for a possible hand-back


def _read(data: bytes, ts: UID) -> Dataset:
    return read_dataset(BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)


def _encode(ds: Dataset, transfer_syntax: str) -> bytes:
    ts = UID(transfer_syntax)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = ts.is_little_endian, ts.is_implicit_VR
    write_dataset(out, ds)
    return bytes(out.getvalue())


class Commitment:
    """Answers N-ACTION requests from the Rust listener (see the module docstring)."""

    def __init__(self, settings: Settings, archive: Any) -> None:
        self.settings = settings
        self.archive = archive
        self._waiting: dict[tuple[str, int], tuple[float, Dataset]] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def handle(
        self, peer: dict[str, Any], command: dict[str, Any], data: bytes, transfer_syntax: str
    ) -> tuple[int, bytes | None, tuple[int, bytes] | None]:
        """(status, response dataset, (event type, event information)) for one N-ACTION."""
        if command.get("requested_sop_class_uid") != str(StorageCommitmentPushModel):
            return status.NO_SUCH_SOP_CLASS, None, None
        if command.get("action_type_id") != 1:
            return NO_SUCH_ACTION, None, None
        try:
            info = _read(data, UID(transfer_syntax))
        except Exception:  # noqa: BLE001 (a malformed action information: invalid argument)
            return INVALID_ARGUMENT, None, None
        transaction = str(info.get("TransactionUID", "") or "")
        items = info.get("ReferencedSOPSequence", None)
        if not transaction or items is None:
            return INVALID_ARGUMENT, None, None
        wanted = [
            (str(i.get("ReferencedSOPClassUID", "")), str(i.get("ReferencedSOPInstanceUID", "")))
            for i in items
        ]
        logs.event(log, "N-ACTION storage commitment", transaction=transaction,
                   count=len(wanted), peer=peer["calling_ae"])  # fmt: skip
        event_type, result = self.result(transaction, wanted)
        with self._lock:
            now = time.monotonic()
            self._waiting = {k: v for k, v in self._waiting.items() if now - v[0] < _PENDING_TTL}
            self._waiting[(peer["calling_ae"], int(command.get("message_id") or 0))] = (now, result)
        return status.SUCCESS, None, (event_type, _encode(result, transfer_syntax))

    def result(self, transaction: str, wanted: list[tuple[str, str]]) -> tuple[int, Dataset]:
        """The event type (1 or 2) and Event Information for one commitment request."""
        done, failed = [], []
        for sop_class, uid in wanted:
            try:
                ref = self.archive.lookup(uid)
            except DuckpacsError:
                ref = None
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = uid
            if ref is None:
                item.FailureReason = NO_SUCH_INSTANCE
                failed.append(item)
            elif ref.sop_class_uid and ref.sop_class_uid != sop_class:
                item.FailureReason = CLASS_INSTANCE_CONFLICT
                failed.append(item)
            else:
                done.append(item)
        ds = Dataset()
        ds.TransactionUID = transaction
        if done:
            ds.ReferencedSOPSequence = done
        if failed:
            ds.FailedSOPSequence = failed
        return (2 if failed else 1), ds

    def report_elsewhere(
        self, peer: dict[str, Any], command: dict[str, Any], event_type: int
    ) -> None:
        """The requester released before taking the report: send it on a new association
        to its configured address, in the background."""
        key = (peer["calling_ae"], int(command.get("message_id") or 0))
        with self._lock:
            waiting = self._waiting.pop(key, None)
        if waiting is None:
            return
        thread = threading.Thread(
            target=self._send_new, args=(peer["calling_ae"], event_type, waiting[1]),
            name="commitment-report", daemon=True,
        )  # fmt: skip
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _send_new(self, requester: str, event_type: int, info: Dataset) -> None:
        transaction = str(info.get("TransactionUID", ""))
        peer = self.settings.peer_by_ae_title(requester)
        if peer is None:
            logs.event(log, "N-EVENT-REPORT undeliverable", transaction=transaction,
                       reason=f"{requester} released and is not a configured peer")  # fmt: skip
            return
        role = build_role(StorageCommitmentPushModel, scp_role=True)
        try:
            with scu.associate(
                self.settings.ae_title, peer, [build_context(StorageCommitmentPushModel)],
                ext_neg=[role], tls_args=client_context(self.settings, peer),
            ) as assoc:  # fmt: skip
                result, _reply = assoc.send_n_event_report(
                    info, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
                )
                ok = bool(result) and int(result.get("Status", 0xFFFF)) == 0
        except DuckpacsError as e:
            logs.event(log, "N-EVENT-REPORT undeliverable", transaction=transaction, reason=e)
            return
        logs.event(log, "N-EVENT-REPORT " + ("sent" if ok else "refused"),
                   transaction=transaction, on="new association")  # fmt: skip

    def stop(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
