"""DICOMweb end to end through ``duckpacs serve``: the real store and DuckDB index behind
the index owner, STOW-RS through the same ingest as C-STORE (PS3.18 10.5), QIDO-RS from the
owner's catalog (PS3.18 10.6), WADO-RS instances and frames from the store (PS3.18 10.4), and
both directions between DIMSE and DICOMweb."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.dimse_support import SCU_AE
from tests.helpers import RunningServer, running_server

STOWED = ("MR_small.dcm", "rtdose.dcm", "SC_rgb_rle_2frame.dcm")
C_STORED = "CT_small.dcm"


def pydicom_file(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("web-serve") / "archive"
    data.mkdir()
    (data / "duckpacs.toml").write_text(
        f'[peers.scu]\nae_title = "{SCU_AE}"\nhost = "127.0.0.1"\nport = 1\n'
    )
    with running_server(data) as running:
        yield running


def client(server: RunningServer) -> DICOMwebClient:
    return DICOMwebClient(f"http://127.0.0.1:{server.http_port}/dicom-web")


def value(item: dict, tag: str) -> object:
    return item[tag]["Value"][0]


@pytest.fixture(scope="module")
def stowed(server: RunningServer) -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(pydicom_file(n)) for n in STOWED]
    response = client(server).store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == len(datasets)
    assert "FailedSOPSequence" not in response
    return datasets


def test_stowed_instances_are_found_by_qido(server: RunningServer, stowed: list) -> None:
    c = client(server)
    for ds in stowed:
        studies = c.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
        assert [value(s, "0020000D") for s in studies] == [ds.StudyInstanceUID]
        instances = c.search_for_instances(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        assert ds.SOPInstanceUID in {value(i, "00080018") for i in instances}
    by_modality = c.search_for_series(search_filters={"Modality": "MR"})
    mr_series = {value(s, "0020000E") for s in by_modality}
    assert stowed[0].SeriesInstanceUID in mr_series


def test_wado_rs_instance_is_byte_identical(server: RunningServer, stowed: list) -> None:
    import requests

    for name, ds in zip(STOWED, stowed, strict=True):
        url = (
            f"http://127.0.0.1:{server.http_port}/dicom-web/studies/{ds.StudyInstanceUID}"
            f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        )
        r = requests.get(
            url,
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        boundary = r.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
        part = r.content.split(b"--" + boundary.encode())[1]
        body = part.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]
        assert body == pydicom_file(name).read_bytes()


def test_frames_equal_pydicom(server: RunningServer, stowed: list) -> None:
    c = client(server)
    for ds in stowed:
        count = int(ds.get("NumberOfFrames", 1) or 1)
        numbers = list(range(1, count + 1))
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            expected = list(generate_frames(ds.PixelData, number_of_frames=count))
            media = (("image/dicom-rle", str(ds.file_meta.TransferSyntaxUID)),)
            got = c.retrieve_instance_frames(
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, numbers,
                media_types=media,
            )  # fmt: skip
        else:
            size = len(ds.PixelData) // count
            expected = [ds.PixelData[i * size : (i + 1) * size] for i in range(count)]
            got = c.retrieve_instance_frames(
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, numbers
            )
        assert [bytes(f) for f in got] == expected


def test_c_stored_instance_is_visible_to_qido(server: RunningServer) -> None:
    ds = pydicom.dcmread(pydicom_file(C_STORED))
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title="DUCKPACS")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    found = client(server).search_for_instances(
        search_filters={"SOPInstanceUID": ds.SOPInstanceUID}
    )
    assert [value(i, "00080018") for i in found] == [ds.SOPInstanceUID]
    got = client(server).retrieve_instance(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    assert got.PixelData == ds.PixelData


def test_stowed_instance_is_visible_to_c_find(server: RunningServer, stowed: list) -> None:
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(MRImageStorage)  # unused; keeps the association's contexts honest
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title="DUCKPACS")
    assert assoc.is_established
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = stowed[0].StudyInstanceUID
    query.SeriesInstanceUID = stowed[0].SeriesInstanceUID
    query.SOPInstanceUID = ""
    try:
        answers = [
            ds.SOPInstanceUID
            for status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
            if status and status.Status in (0xFF00, 0xFF01)
        ]
    finally:
        assoc.release()
    assert answers == [stowed[0].SOPInstanceUID]


def test_stow_of_a_bad_body_is_a_failure_reason(server: RunningServer) -> None:
    import requests

    boundary = "xyzzy"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + b"not a dicom file"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = requests.post(
        f"http://127.0.0.1:{server.http_port}/dicom-web/studies",
        data=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
        timeout=30,
    )
    assert r.status_code in (400, 409)
    assert "00081198" in r.json()  # FailedSOPSequence, PS3.18 10.5.3
    assert io.BytesIO(r.content).read(1) == b"{"
