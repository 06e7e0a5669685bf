"""DIMSE services driven by a pynetdicom SCU against an in-process server.

The archive behind the server is a real one in a temporary folder (the Rust write path, the
store and the DuckDB index), so these tests exercise the network layer over the product's
own storage: C-STORE framing and statuses, C-FIND, C-GET byte-identity and transcoding,
C-MOVE counts and failures, C-CANCEL, access control.
"""

from __future__ import annotations

import time
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from duckpacs.archive import part10
from tests.dimse_support import DEST_AE, SCU_AE, default_peers
from tests.helpers import free_port

# Every test on the embedded index and again on PostgreSQL (tests/pg_support.py).
pytestmark = pytest.mark.usefixtures("each_index_backend")

FILES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_jpeg_dcmtk.dcm"]


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None
    return Path(path)


def dataset_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[part10.split(data).dataset_offset :]


@pytest.fixture(autouse=True)
def _send_files_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SCU sends file bytes as they are (no pydicom re-encoding), like storescu does.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def associate(port: int, contexts: list[Any], ae_title: str = SCU_AE, **kwargs: Any) -> Any:
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, contexts=contexts, ae_title="DUCKPACS", **kwargs)


def store_contexts() -> list[Any]:
    return [
        build_context(CTImageStorage, ExplicitVRLittleEndian),
        build_context(MRImageStorage, ExplicitVRLittleEndian),
        build_context(SecondaryCaptureImageStorage, JPEGBaseline8Bit),
    ]


def store_files(port: int, names: list[str]) -> list[int]:
    assoc = associate(port, store_contexts())
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(pydicom_file(n)).Status) for n in names]
    assoc.release()
    return statuses


@pytest.fixture
def served(settings_factory: Any, running_server: Any, archive_factory: Any) -> tuple[Any, int]:
    archive = archive_factory()
    server, port = running_server(archive, settings_factory(peers=default_peers()))
    return archive, port


def test_store_keeps_dataset_bytes_and_builds_meta(served: tuple[Any, int]) -> None:
    archive, port = served
    assert store_files(port, FILES) == [0, 0, 0]
    for name in FILES:
        uid = dcmread(pydicom_file(name)).SOPInstanceUID
        ref = archive.lookup(uid)
        stream = archive.read(ref.location)
        framing = part10.split(stream)
        assert stream[framing.dataset_offset :] == dataset_bytes(pydicom_file(name))
        meta = dcmread(pydicom_file(name)).file_meta
        assert framing.transfer_syntax == meta.TransferSyntaxUID
        assert framing.sop_instance_uid == uid
        assert dcmread(BytesIO(stream)).file_meta.SourceApplicationEntityTitle == SCU_AE


def test_find_at_every_level_and_model(served: tuple[Any, int]) -> None:
    _archive, port = served
    store_files(port, FILES)
    assoc = associate(
        port,
        [
            build_context(StudyRootQueryRetrieveInformationModelFind),
            build_context(PatientRootQueryRetrieveInformationModelFind),
        ],
    )
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "*"
    query.StudyInstanceUID = ""
    query.PatientName = ""
    found = [
        ds
        for status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        if status and status.Status == 0xFF00
    ]
    assert len(found) == 3
    assert {str(ds.PatientID) for ds in found} == {"1CT1", "4MR1", "ID1"}
    image = Dataset()
    image.QueryRetrieveLevel = "IMAGE"
    image.PatientID = "1CT1"
    image.SOPInstanceUID = ""
    image.SliceLocation = ""  # a non-key attribute
    results = list(assoc.send_c_find(image, PatientRootQueryRetrieveInformationModelFind))
    pending = [ds for status, ds in results if status.Status == 0xFF00]
    assert [str(ds.SOPInstanceUID) for ds in pending] == [
        dcmread(pydicom_file(FILES[0])).SOPInstanceUID
    ]
    assert results[-1][0].Status == 0x0000
    bad = Dataset()
    bad.QueryRetrieveLevel = "PATIENT"
    bad.PatientID = "*"
    ((status, _ds),) = list(assoc.send_c_find(bad, StudyRootQueryRetrieveInformationModelFind))
    assert status.Status == 0xA900  # PATIENT level is not in the Study Root model
    assoc.release()


def get_study(port: int, study_uid: str, contexts: list[Any]) -> tuple[list[Any], dict[str, bytes]]:
    received: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = (
            event.request.DataSet.getvalue(),
            str(event.context.transfer_syntax),
        )
        return 0x0000

    roles = [build_role(cx.abstract_syntax, scp_role=True) for cx in contexts]
    assoc = associate(
        port,
        [build_context(StudyRootQueryRetrieveInformationModelGet), *contexts],
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    return responses, received


def test_get_returns_identical_bytes(served: tuple[Any, int]) -> None:
    _archive, port = served
    store_files(port, FILES)
    for name in FILES:
        ds = dcmread(pydicom_file(name))
        ts = ds.file_meta.TransferSyntaxUID
        responses, received = get_study(
            port, ds.StudyInstanceUID, [build_context(ds.SOPClassUID, ts)]
        )
        assert responses[-1][0].Status == 0x0000
        assert responses[-1][0].NumberOfCompletedSuboperations >= 1
        assert received[ds.SOPInstanceUID] == (dataset_bytes(pydicom_file(name)), ts)


def test_get_transcodes_when_stored_syntax_not_accepted(served: tuple[Any, int]) -> None:
    _archive, port = served
    store_files(port, FILES)
    # Explicit VR stored, peer accepts only implicit VR.
    ct = dcmread(pydicom_file("CT_small.dcm"))
    _r, received = get_study(
        port, ct.StudyInstanceUID, [build_context(CTImageStorage, ImplicitVRLittleEndian)]
    )
    data, ts = received[ct.SOPInstanceUID]
    assert ts == ImplicitVRLittleEndian
    assert data != dataset_bytes(pydicom_file("CT_small.dcm"))
    again = dcmread(BytesIO(data), force=True)  # implicit VR, no meta: pydicom's default
    assert again.PixelData == ct.PixelData
    # JPEG stored, peer accepts only explicit VR little endian: decompressed on the way out.
    sc = dcmread(pydicom_file("SC_rgb_jpeg_dcmtk.dcm"))
    responses, received = get_study(
        port,
        sc.StudyInstanceUID,
        [build_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)],
    )
    data, ts = received[sc.SOPInstanceUID]
    assert ts == ExplicitVRLittleEndian
    rows, cols = int(sc.Rows), int(sc.Columns)
    assert len(data) > rows * cols * 3  # the whole native RGB frame is in there
    assert responses[-1][0].Status == 0x0000


def test_get_fails_sub_operation_when_nothing_fits(served: tuple[Any, int]) -> None:
    _archive, port = served
    store_files(port, FILES)
    sc = dcmread(pydicom_file("SC_rgb_jpeg_dcmtk.dcm"))
    # The peer takes only JPEG 2000: never send what was not negotiated; fail the sub-op.
    responses, received = get_study(
        port,
        sc.StudyInstanceUID,
        [build_context(SecondaryCaptureImageStorage, "1.2.840.10008.1.2.4.91")],
    )
    final, identifier = responses[-1]
    assert received == {}
    assert final.Status == 0xA702
    assert final.NumberOfFailedSuboperations == 1
    assert identifier.FailedSOPInstanceUIDList == sc.SOPInstanceUID


class Destination:
    """A pynetdicom storage SCP standing in for a C-MOVE destination."""

    def __init__(self, port: int) -> None:
        self.received: dict[str, bytes] = {}
        ae = AE(ae_title=DEST_AE)
        for cx in store_contexts():
            ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax)
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.on_store)]
        )

    def on_store(self, event: Any) -> int:
        self.received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000


def test_move_to_configured_peer(
    settings_factory: Any, running_server: Any, archive_factory: Any
) -> None:
    dest_port = free_port()
    destination = Destination(dest_port)
    try:
        archive = archive_factory()
        _server, port = running_server(archive, settings_factory(peers=default_peers(dest_port)))
        store_files(port, FILES)
        assoc = associate(port, [build_context(StudyRootQueryRetrieveInformationModelMove)])
        ct = dcmread(pydicom_file("CT_small.dcm"))
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ct.StudyInstanceUID
        responses = list(
            assoc.send_c_move(query, DEST_AE, StudyRootQueryRetrieveInformationModelMove)
        )
        final = responses[-1][0]
        assert final.Status == 0x0000
        assert final.NumberOfCompletedSuboperations == 1
        assert final.NumberOfFailedSuboperations == 0
        assert destination.received[ct.SOPInstanceUID] == dataset_bytes(
            pydicom_file("CT_small.dcm")
        )
        unknown = list(
            assoc.send_c_move(query, "NOBODY", StudyRootQueryRetrieveInformationModelMove)
        )
        assert unknown[-1][0].Status == 0xA801
        assoc.release()
    finally:
        destination.server.shutdown()


def test_duplicates_and_conflicts(
    settings_factory: Any, running_server: Any, archive_factory: Any, each_index_backend: str
) -> None:
    if each_index_backend == "postgres":  # two_nodes_keep_first in test_index_pg_faults
        pytest.skip("two archives in one test: on PostgreSQL they would share one index")
    for policy, conflict_status in (("keep-first", 0xB006), ("replace", 0x0000)):
        archive = archive_factory(on_conflict=policy, name=policy)
        _server, port = running_server(archive, settings_factory(peers=default_peers()))
        assert store_files(port, ["CT_small.dcm"]) == [0]
        assert store_files(port, ["CT_small.dcm"]) == [0]  # identical: success, stored once
        assert archive.store_backend.stats()["instances"] == 1
        ds = dcmread(pydicom_file("CT_small.dcm"))
        ds.PatientName = "Someone^Else"
        assoc = associate(port, store_contexts())
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status.Status == conflict_status
        stored = dcmread(BytesIO(archive.read(archive.lookup(ds.SOPInstanceUID).location)))
        expected = (
            "Someone^Else"
            if policy == "replace"
            else str(dcmread(pydicom_file("CT_small.dcm")).PatientName)
        )
        assert str(stored.PatientName) == expected


def test_malformed_and_disk_full_keep_the_association(
    settings_factory: Any,
    running_server: Any,
    archive_factory: Any,
    small_disk: Any,
    tmp_path: Path,
) -> None:
    archive = archive_factory()
    _server, port = running_server(archive, settings_factory(peers=default_peers()))
    assoc = associate(port, store_contexts())
    # A sequence whose item claims 16 bytes but carries 3, sent as is (a file's dataset).
    garbage = b"\x08\x00\x16\x00SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x10\x00\x00\x00abc"
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(
        part10.build_meta(CTImageStorage, "1.2.3.4", ExplicitVRLittleEndian) + garbage
    )
    status = assoc.send_c_store(broken)
    assert 0xC000 <= status.Status <= 0xCFFF
    with small_disk.full():
        status = assoc.send_c_store(pydicom_file("CT_small.dcm"))
    assert status.Status == 0xA700
    assert assoc.send_c_store(pydicom_file("CT_small.dcm")).Status == 0x0000  # space again
    assoc.release()
    assert archive.store_backend.stats()["instances"] == 1
    assert archive.store_backend.verify(deep=True)["damaged"] == []


def test_access_control(settings_factory: Any, running_server: Any, archive_factory: Any) -> None:
    archive = archive_factory()
    _server, port = running_server(
        archive, settings_factory(peers=default_peers(), extra="unknown_peer_permissions = []")
    )
    stranger = associate(port, [build_context(Verification)], ae_title="STRANGER")
    assert stranger.is_rejected
    ae = AE(ae_title=SCU_AE)
    wrong_called = ae.associate(
        "127.0.0.1", port, contexts=[build_context(Verification)], ae_title="OTHER"
    )
    assert wrong_called.is_rejected
    readonly = associate(
        port,
        [*store_contexts(), build_context(StudyRootQueryRetrieveInformationModelGet)],
        ae_title="READONLY",
    )
    assert readonly.is_established
    assert readonly.send_c_store(pydicom_file("CT_small.dcm")).Status == 0x0124
    accepted = {cx.abstract_syntax for cx in readonly.accepted_contexts}
    assert StudyRootQueryRetrieveInformationModelGet not in accepted  # no get permission
    readonly.release()
    assert archive.store_backend.stats()["instances"] == 0


def test_cancel_get(
    settings_factory: Any,
    running_server: Any,
    archive_factory: Any,
) -> None:
    """C-CANCEL during a C-GET stops the sub-operations (PS3.7 9.3.3.3); the Rust tests
    (rust/duckpacs-core/tests/scp.rs) cover C-CANCEL during C-FIND answers."""
    archive = archive_factory()
    _server, port = running_server(archive, settings_factory(peers=default_peers()))
    base = dcmread(pydicom_file("CT_small.dcm"))
    assoc = associate(port, store_contexts())
    for i in range(40):
        base.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.9.{i}"
        assert assoc.send_c_store(base).Status == 0
    assoc.release()

    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        time.sleep(0.01)
        return 0x0000

    contexts = [
        build_context(StudyRootQueryRetrieveInformationModelFind),
        build_context(StudyRootQueryRetrieveInformationModelGet),
        build_context(CTImageStorage, ExplicitVRLittleEndian),
    ]
    assoc = associate(
        port,
        contexts,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = base.StudyInstanceUID
    get_statuses = []
    for n, (status, _ds) in enumerate(
        assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet, msg_id=9)
    ):
        get_statuses.append(status)
        if n == 2:
            assoc.send_c_cancel(9, query_model=StudyRootQueryRetrieveInformationModelGet)
    final = get_statuses[-1]
    assert final.Status == 0xFE00
    assert 0 < len(received) < 40
    assert final.NumberOfRemainingSuboperations > 0
    assoc.release()


def test_private_sop_class_is_stored_unchanged(served: tuple[Any, int], tmp_path: Path) -> None:
    archive, port = served
    private_class = "1.3.6.1.4.1.5962.99.1.2.3"  # not in the standard: a vendor's own class
    ds = dcmread(pydicom_file("CT_small.dcm"))
    ds.SOPClassUID = private_class
    ds.file_meta.MediaStorageSOPClassUID = private_class
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.77.1"
    assoc = associate(port, [build_context(private_class, ExplicitVRLittleEndian)])
    assert assoc.is_established
    path = tmp_path / "private.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    dataset = data[part10.split(data).dataset_offset :]
    status = assoc.send_c_store(path)  # the file's dataset as is (chunked sending)
    assoc.release()
    assert status.Status == 0
    ref = archive.lookup(ds.SOPInstanceUID)
    assert ref.sop_class_uid == private_class
    assert archive.read_dataset(ref) == (dataset, ExplicitVRLittleEndian)


def test_peer_host_check_and_association_limit(
    settings_factory: Any, running_server: Any, archive_factory: Any
) -> None:
    peers = default_peers()
    peers["scu"]["host"] = "10.255.255.1"  # the peer is configured on another machine
    settings = settings_factory(peers=peers, extra="check_peer_host = true\nmax_associations = 1")
    server, port = running_server(archive_factory(), settings)
    assert associate(port, [build_context(Verification)]).is_rejected  # wrong host
    deadline = time.monotonic() + 5
    while server.load() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.02)  # the rejected association's thread winds down
    first = associate(port, [build_context(Verification)], ae_title="READONLY")
    assert first.is_established
    second = associate(port, [build_context(Verification)], ae_title="READONLY")
    assert second.is_rejected  # local limit exceeded (PS3.8 9.3.4, reason 2 transient)
    rejection = second.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (2, 3, 2)
    first.release()
