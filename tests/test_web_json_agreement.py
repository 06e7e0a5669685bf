"""One producer of DICOM JSON (PS3.18 F.2): for the same instance, the STOW-RS response, QIDO-RS
at instance level, WADO-RS metadata and `duckpacs dump --json` agree on every attribute they
share: a multi-group person name in ISO 2022 (PS3.5 H.3.1), IS and DS numbers, empty values,
and bulk data URIs (the metadata's and the dump's point at the same bytes)."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from tests.helpers import RunningServer, duckpacs_cmd, running_server
from tests.synthetic import SECONDARY_CAPTURE, uid

NAME = "Yamada^Tarou=山田^太郎=やまだ^たろう"
QIDO_KEYS = [
    "PatientName", "PatientID", "AccessionNumber", "ReferringPhysicianName", "InstanceNumber",
    "SliceThickness", "PixelSpacing", "ImageType", "StudyDescription", "Rows", "Columns",
]  # fmt: skip


def instance() -> bytes:
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = uid("agree-sop")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("agree-study"), uid("agree-series")
    ds.PatientName, ds.PatientID = NAME, "AGREE-1"
    ds.AccessionNumber = ""  # empty: no "Value" (PS3.18 F.2.5)
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "山田の検査"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]  # an empty value among others: null
    ds.InstanceNumber = "7"
    ds.SliceThickness = "1.50"
    ds.PixelSpacing = ["0.5", "0.25"]
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    block = ds.private_block(0x0029, "DUCKPACS AGREE", create=True)
    block.add_new(0x01, "OB", bytes(range(256)) * 8)  # beyond the inline threshold: a URI
    ds.PixelData = bytes(range(256)) * 4
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = (
        SECONDARY_CAPTURE,
        uid("agree-sop"),
    )
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def multipart_payload(r: requests.Response) -> bytes:
    """The one part of a multipart/related answer."""
    boundary = r.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    part = r.content.split(b"--" + boundary.encode())[1]
    return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("agree") / "archive"
    data.mkdir()
    with running_server(data) as srv:
        yield srv


def test_stow_qido_metadata_and_dump_agree(server: RunningServer, tmp_path: Path) -> None:
    data = instance()
    base = f"http://127.0.0.1:{server.http_port}/dicom-web"
    accept = {"Accept": "application/dicom+json"}
    r = requests.post(
        f"{base}/studies", data=data, headers={"Content-Type": "application/dicom", **accept}
    )
    assert r.status_code == 200, r.text
    stow = r.json()
    qido = requests.get(
        f"{base}/instances",
        params={"SOPInstanceUID": uid("agree-sop"), "includefield": ",".join(QIDO_KEYS)},
        headers=accept,
    ).json()
    assert len(qido) == 1
    url = f"{base}/studies/{uid('agree-study')}/series/{uid('agree-series')}/instances/" + uid(
        "agree-sop"
    )
    (metadata,) = requests.get(url + "/metadata", headers=accept).json()
    path = tmp_path / "agree.dcm"
    path.write_bytes(data)
    dumped = subprocess.run(
        duckpacs_cmd("dump", "--json", "--bulk-data-uri", "bulkdata/", "--inline-threshold",
                     "1024", str(path)),
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    dump = json.loads(dumped.stdout)

    # The values this test is about, as PS3.18 F.2 writes them.
    assert metadata["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    assert metadata["00200013"] == {"vr": "IS", "Value": [7]}
    assert metadata["00180050"] == {"vr": "DS", "Value": [1.5]}
    assert metadata["00280030"] == {"vr": "DS", "Value": [0.5, 0.25]}
    assert metadata["00080050"] == {"vr": "SH"}
    assert metadata["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", None]}

    # QIDO and the dump agree with the metadata on every attribute they share.
    (found,) = qido
    shared = set(found) & set(metadata) & set(dump)
    wanted = {"00100010", "00200013", "00180050", "00280030", "00080050", "00080090",
              "00080008", "00081030", "00280010"}  # fmt: skip
    assert wanted <= shared
    for tag in sorted(shared):
        assert found[tag] == metadata[tag] == dump[tag], tag
    assert set(metadata) == set(dump)
    for tag in set(metadata) - {"7FE00010", "00291001"}:
        assert metadata[tag] == dump[tag], tag

    # Bulk data: both URIs, resolved against the instance, give the same bytes.
    for tag in ("7FE00010", "00291001"):
        ours, theirs = metadata[tag]["BulkDataURI"], dump[tag]["BulkDataURI"]
        got = [
            multipart_payload(requests.get(f"{url}/{uri}", headers={"Accept": "*/*"}))
            for uri in (ours, theirs)
        ]
        assert got[0] == got[1] and len(got[0]) in (1024, 2048), tag

    # The STOW-RS response names the same instance, and QIDO's Retrieve URL.
    (item,) = stow["00081199"]["Value"]
    assert item["00081150"]["Value"] == metadata["00080016"]["Value"]
    assert item["00081155"]["Value"] == metadata["00080018"]["Value"]
    assert item["00081190"] == found["00081190"] == {"vr": "UR", "Value": [url]}
