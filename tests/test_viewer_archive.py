"""The viewer's server side over a real archive (``duckpacs serve``: store, DuckDB index):
frames marked when decoded, measurements saved as a TID 1500 SR and found again, a PDF
report, DICOMDIR media; and the static files' fitness for a strict Content-Security-Policy."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from duckpacs.web import __file__ as web_init
from tests.helpers import RunningServer, running_server
from tests.test_viewer import PDF_BYTES, _first_part, _to_bytes, phantom, reports
from tests.web_support.server import testdata as pydicom_file

# Every test on the embedded index and again on PostgreSQL (tests/pg_support.py).
pytestmark = pytest.mark.usefixtures("each_index_backend")

STATIC = Path(web_init).parent / "static"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("viewer-archive") / "data") as srv:
        yield srv


def _stow(base: str, *instances: bytes) -> None:
    boundary = "viewer-archive"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
            for data in instances
        )
        + f"--{boundary}--\r\n".encode()
    )
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    r = requests.post(f"{base}/dicom-web/studies", data=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text


def test_viewer_actions_on_the_archive(server: RunningServer) -> None:
    base = f"http://127.0.0.1:{server.http_port}"
    ds = phantom()
    ybr = pydicom_file("examples_ybr_color.dcm")
    _stow(base, _to_bytes(ds), *(_to_bytes(r) for r in reports(ds)), ybr.read_bytes())
    accept = (
        'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
    )
    native = requests.get(
        f"{base}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/1",
        headers={"Accept": accept},
    )
    assert native.status_code == 200 and "x-decoded-photometric" not in native.headers
    assert _first_part(native) == ds.PixelData
    jpeg = pydicom.dcmread(ybr, stop_before_pixels=True)
    decoded = requests.get(
        f"{base}/dicom-web/studies/{jpeg.StudyInstanceUID}/series/{jpeg.SeriesInstanceUID}"
        f"/instances/{jpeg.SOPInstanceUID}/frames/2",
        headers={"Accept": accept},
    )
    assert decoded.headers["x-decoded-photometric"] == "RGB"  # pydicom turned YBR into RGB
    assert len(_first_part(decoded)) == jpeg.Rows * jpeg.Columns * 3

    measurement = {
        "kind": "ellipse",
        "points": [[40, 40], [80, 60]],
        "values": {"area": [157.1, "mm2"], "mean": [0.0, "HU"], "sd": [0.0, "HU"]},
        "series": ds.SeriesInstanceUID,
        "instance": ds.SOPInstanceUID,
        "sop_class": ds.SOPClassUID,
        "frame": 1,
    }
    saved = requests.post(
        f"{base}/api/studies/{ds.StudyInstanceUID}/measurements",
        json={"measurements": [measurement]},
        headers={"X-Requested-With": "duckpacs"},
    )
    assert saved.status_code == 200, saved.text
    sr_uid = saved.json()["instance"]
    found = requests.get(
        f"{base}/dicom-web/studies/{ds.StudyInstanceUID}/instances",
        params={"SOPInstanceUID": sr_uid, "includefield": "Modality"},
        headers={"Accept": "application/dicom+json"},
    ).json()
    assert [row["00080060"]["Value"][0] for row in found] == ["SR"]
    got = requests.get(
        f"{base}/dicom-web/studies/{ds.StudyInstanceUID}/series/{saved.json()['series']}"
        f"/instances/{sr_uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
    )
    sr = pydicom.dcmread(io.BytesIO(_first_part(got)))
    assert (
        sr.PatientID == ds.PatientID and sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    )
    group = sr.ContentSequence[-1].ContentSequence[0]
    scoord = next(i for i in group.ContentSequence if i.ValueType == "SCOORD")
    # An ellipse is its axes' end points, the major (horizontal here) first.
    assert scoord.GraphicType == "ELLIPSE"
    assert [float(v) for v in scoord.GraphicData] == [40, 50, 80, 50, 60, 40, 60, 60]
    units = {
        i.ConceptNameCodeSequence[0].CodeMeaning: i.MeasuredValueSequence[0]
        .MeasurementUnitsCodeSequence[0]
        .CodeValue
        for i in group.ContentSequence
        if i.ValueType == "NUM"
    }
    assert units == {"Area": "mm2", "Mean": "[hnsf'U]", "Standard Deviation": "[hnsf'U]"}

    pdf = reports(ds)[1]
    rows = requests.get(
        f"{base}/dicom-web/studies/{ds.StudyInstanceUID}/instances",
        params={"Modality": "DOC", "includefield": "SeriesInstanceUID"},
        headers={"Accept": "application/dicom+json"},
    ).json()
    assert len(rows) == 1
    series, uid = rows[0]["0020000E"]["Value"][0], rows[0]["00080018"]["Value"][0]
    doc = requests.get(
        f"{base}/api/studies/{ds.StudyInstanceUID}/series/{series}/instances/{uid}/document"
    )
    assert doc.headers["content-type"] == pdf.MIMETypeOfEncapsulatedDocument
    assert (
        doc.content == PDF_BYTES
        and "frame-ancestors 'self'" in doc.headers["content-security-policy"]
    )
    image = requests.get(
        f"{base}/api/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/document"
    )
    assert image.status_code == 404 and "no encapsulated document" in image.json()["error"]

    media = requests.get(f"{base}/api/studies/{ds.StudyInstanceUID}/dicomdir.zip")
    assert media.status_code == 200
    with zipfile.ZipFile(io.BytesIO(media.content)) as zf:
        dicomdir = pydicom.dcmread(io.BytesIO(zf.read("DICOMDIR")))
        count = len([n for n in zf.namelist() if n != "DICOMDIR"])
    kinds = [r.DirectoryRecordType for r in dicomdir.DirectoryRecordSequence]
    assert count == 4  # the image, the text SR, the PDF and the saved measurements
    assert kinds.count("IMAGE") == 1 and kinds.count("SR DOCUMENT") == 2
    assert kinds.count("ENCAP DOC") == 1


def test_static_files_suit_a_strict_csp() -> None:
    """No inline script or style, no event handler attributes, no string evaluation."""
    for page in STATIC.glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page.name
        assert "<style" not in html and " style=" not in html, page.name
        assert not re.search(r"\son[a-z]+\s*=", html), page.name
    for script in STATIC.glob("*.js"):
        code = script.read_text()
        for banned in ("eval(", "new Function", "innerHTML", 'setTimeout("', 'setInterval("'):
            assert banned not in code, f"{script.name}: {banned}"
