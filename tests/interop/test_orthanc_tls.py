"""Debian's Orthanc with DICOM TLS as a peer (PS3.15 B.9), mutual authentication both ways:
we send to it over TLS, it echoes, queries and stores to our TLS listener, and its
certificate is tied to its ``[peers]`` entry by Common Name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from duckpacs import _core
from duckpacs.archive import Archive
from duckpacs.dicom import transcode
from duckpacs.net.scp import DimseListener
from duckpacs.net.tls import dial_args
from tests.dimse_support import make_settings
from tests.helpers import free_port
from tests.interop.orthanc import Orthanc, orthanc_binary, run_orthanc
from tests.tls_support import Pki, make_pki

pytestmark = pytest.mark.interop


class Site:
    def __init__(self, folder: Path, pki: Pki, orthanc_port: int) -> None:
        extra = "\n".join([
            "tls_port = 2762",
            f'tls_cert = "{pki.server.cert}"',
            f'tls_key = "{pki.server.key}"',
            f'tls_ca = "{pki.ca}"',
        ])  # fmt: skip
        peers = {
            "orthanc": {
                "ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc_port,
                "tls": True, "tls_name": "ORTHANC",
            },
        }  # fmt: skip
        self.settings = make_settings(folder, peers=peers, extra=extra)
        self.archive = Archive.open(folder)
        self.listener = DimseListener(self.settings, self.archive)
        self.listener.start("127.0.0.1", 0, 0)
        assert self.listener.tls_address is not None
        self.tls_port = self.listener.tls_address[1]

    def close(self) -> None:
        self.listener.stop(grace=1.0)
        self.archive.close()


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[tuple[Site, Orthanc]]:
    if orthanc_binary() is None:
        pytest.skip("Orthanc not installed (Debian package orthanc)")
    pki = make_pki(tmp_path / "pki")
    orthanc_port = free_port()
    site = Site(tmp_path / "site", pki, orthanc_port)
    options = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(pki.peer.cert),
        "DicomTlsPrivateKey": str(pki.peer.key),
        "DicomTlsTrustedCertificates": str(pki.ca),
        "DicomTlsRemoteCertificateRequired": True,
    }
    duckpacs = {"AET": "DUCKPACS", "Host": "127.0.0.1", "Port": site.tls_port, "UseDicomTls": True}
    try:
        with run_orthanc(
            tmp_path / "orthanc", {"duckpacs": duckpacs}, dicom_port=orthanc_port, options=options
        ) as orthanc:
            yield site, orthanc
    finally:
        site.close()


def test_duckpacs_and_orthanc_over_dicom_tls(linked: tuple[Site, Orthanc]) -> None:
    site, orthanc = linked
    mr = str(get_testdata_file("MR_small.dcm"))
    # Orthanc -> us: C-ECHO, then C-STORE of an instance uploaded to it.
    assert orthanc.rest("/modalities/duckpacs/echo", {}) == {}
    uploaded = orthanc.rest("/instances", Path(mr).read_bytes())
    orthanc.rest("/modalities/duckpacs/store", {"Resources": [uploaded["ID"]], "Synchronous": True})
    mr_uid = str(dcmread(mr).SOPInstanceUID)
    assert [r.sop_instance_uid for r in site.archive.locate("IMAGE", {})] == [mr_uid]
    # Orthanc -> us: C-FIND.
    study = str(dcmread(mr).StudyInstanceUID)
    query = orthanc.rest(
        "/modalities/duckpacs/query", {"Level": "Study", "Query": {"StudyInstanceUID": study}}
    )
    answers = orthanc.rest(f"/queries/{query['ID']}/answers")
    assert len(answers) == 1
    # us -> Orthanc: C-STORE over TLS with the Rust SCU, as `duckpacs send` does.
    peer = site.settings.peer("orthanc")
    items = [
        (r.sop_instance_uid, r.sop_class_uid, r.transfer_syntax, *r.location)
        for r in site.archive.locate("IMAGE", {})
    ]
    result = _core.send_stored(
        site.archive.store_backend, peer.host, peer.port, site.settings.ae_title, peer.ae_title,
        items, transcode.dataset_in, timeout=30, tls=dial_args(site.settings, peer),
    )  # fmt: skip
    assert result["failed"] == 0 and result["completed"] == 1
    orthanc.rest(f"/instances/{uploaded['ID']}", method="DELETE")
    assert orthanc.rest("/instances") == []
    result = _core.send_stored(
        site.archive.store_backend, peer.host, peer.port, site.settings.ae_title, peer.ae_title,
        items, transcode.dataset_in, timeout=30, tls=dial_args(site.settings, peer),
    )  # fmt: skip
    assert result["completed"] == 1
    assert orthanc.rest("/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": mr_uid}})
