"""Storage Commitment Push Model (PS3.4 Annex J) with a pynetdicom SCU: the report comes on
the same association while it is open, and on a new association to the configured peer
once the requester has released."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StorageCommitmentPushModel,
)

from duckpacs.net.commitment import COMMITMENT_INSTANCE_UID
from tests.dimse_support import SCU_AE, default_peers
from tests.helpers import free_port

CT = get_testdata_file("CT_small.dcm")
MISSING_UID = "1.2.826.0.1.3680043.2.1125.404"


@pytest.fixture(autouse=True)
def _send_files_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def request(transaction: str) -> Dataset:
    ct = dcmread(CT)
    info = Dataset()
    info.TransactionUID = transaction
    items = []
    for sop_class, uid in ((ct.SOPClassUID, ct.SOPInstanceUID), (CTImageStorage, MISSING_UID)):
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    info.ReferencedSOPSequence = items
    return info


class Reports:
    def __init__(self) -> None:
        self.got: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()

    def handler(self, event: Any) -> tuple[int, None]:
        self.got.append((int(event.event_type), event.event_information))
        self.arrived.set()
        return 0x0000, None


def check(report: tuple[int, Dataset], transaction: str) -> None:
    event_type, info = report
    assert event_type == 2  # some failed
    assert info.TransactionUID == transaction
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [
        dcmread(CT).SOPInstanceUID
    ]
    (failed,) = info.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == MISSING_UID
    assert failed.FailureReason == 0x0112  # no such object instance


def test_report_on_same_association(
    settings_factory: Any, running_server: Any, archive_factory: Any
) -> None:
    _server, port = running_server(archive_factory(), settings_factory(peers=default_peers()))
    reports = Reports()
    ae = AE(ae_title=SCU_AE)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        contexts=[
            build_context(CTImageStorage, ExplicitVRLittleEndian),
            build_context(StorageCommitmentPushModel),
        ],
        ae_title="DUCKPACS",
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)],
    )
    assert assoc.send_c_store(CT).Status == 0
    status, _reply = assoc.send_n_action(
        request("1.2.3.42"), 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
    )
    assert status.Status == 0
    assert reports.arrived.wait(10)
    assoc.release()
    check(reports.got[0], "1.2.3.42")


def test_report_on_new_association(
    settings_factory: Any, running_server: Any, archive_factory: Any
) -> None:
    scu_port = free_port()
    peers = default_peers()
    peers["scu"]["port"] = scu_port
    _server, port = running_server(archive_factory(), settings_factory(peers=peers))
    reports = Reports()
    listener = AE(ae_title=SCU_AE)
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    scp = listener.start_server(
        ("127.0.0.1", scu_port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)],
    )
    try:
        ae = AE(ae_title=SCU_AE)
        # The release races the report: if the report still comes on this association (the
        # server sends it right after the N-ACTION response), it is taken here; either way
        # exactly one report arrives.
        assoc = ae.associate(
            "127.0.0.1",
            port,
            contexts=[
                build_context(CTImageStorage, ExplicitVRLittleEndian),
                build_context(StorageCommitmentPushModel),
            ],
            ae_title="DUCKPACS",
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)],
        )
        assert assoc.send_c_store(CT).Status == 0
        status, _reply = assoc.send_n_action(
            request("1.2.3.43"), 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
        )
        assoc.release()  # usually gone before the report can come back on this association
        assert status.Status == 0
        assert reports.arrived.wait(10)
        check(reports.got[0], "1.2.3.43")
        time.sleep(0.5)
        assert len(reports.got) == 1
    finally:
        scp.shutdown()
