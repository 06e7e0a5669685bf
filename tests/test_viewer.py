"""The web viewer in Debian's Chromium: images drawn in the browser from original-precision
WADO-RS frames equal pydicom's output (MONOCHROME1, a 16-bit CT under a CT preset, palette
colour, the frames of an enhanced multi-frame MR with per-frame functional groups), and a
length measured on a synthetic phantom with a 100 mm bar."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, apply_windowing
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from tests.web_support.folder_reader import FolderReader
from tests.web_support.server import CHROMIUM, WebServer, browser_available, web_server

pytestmark = pytest.mark.skipif(
    not browser_available(), reason="needs playwright and /usr/bin/chromium"
)

BAR_SPACING = 0.5  # mm per pixel of the phantom
BAR = (100, 300, 200)  # x from, x to, row: 200 pixels = 100 mm


def _base(modality: str, sop_class: str, patient: str = "VIEWER") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Viewer^Test", patient, modality
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20260101", 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    return ds


def phantom() -> Dataset:
    """A 12-bit CT slice (stored 0..4095, intercept -1024) with a 1000 HU bar 100 mm long."""
    ds = _base("CT", "1.2.840.10008.5.1.4.1.1.2")
    ds.Rows = ds.Columns = 400
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [BAR_SPACING, BAR_SPACING]
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    pixels = np.full((400, 400), 1024, dtype=np.uint16)  # water
    x0, x1, row = BAR
    pixels[row - 3 : row + 3, x0:x1] = 2024  # 1000 HU
    ds.PixelData = pixels.tobytes()
    return ds


def projection_phantom() -> Dataset:
    """The bar on a radiograph: spacing known at the detector only (Imager Pixel Spacing)."""
    ds = phantom()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1")
    ds.Modality, ds.PatientID = "CR", "CR1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.ImagerPixelSpacing = ds.PixelSpacing
    del ds.PixelSpacing, ds.ImageOrientationPatient, ds.ImagePositionPatient
    return ds


def enhanced_mr() -> Dataset:
    """An enhanced MR of three frames, each with its own rescale and window in the per-frame
    functional groups, spacing and orientation in the shared ones (PS3.3 C.7.6.16)."""
    ds = _base("MR", "1.2.840.10008.5.1.4.1.1.4.1")
    ds.Rows, ds.Columns, ds.NumberOfFrames = 64, 48, 3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [2.0, 1.0], 3.0  # rows 2 mm apart
    orientation = Dataset()
    orientation.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    groups = []
    for n in range(3):
        position, voi, rescale = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [float(n * 3), 0.0, 0.0]
        voi.WindowCenter, voi.WindowWidth = 500 + 300 * n, 800 + 200 * n
        rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = n * 10, 1 + n, "US"
        group = Dataset()
        group.PlanePositionSequence, group.FrameVOILUTSequence = [position], [voi]
        group.PixelValueTransformationSequence = [rescale]
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = groups
    y, x = np.mgrid[0:64, 0:48]
    frames = np.stack([(x * 20 + y * 7 + n * 300) % 1600 for n in range(3)]).astype(np.uint16)
    ds.PixelData = frames.tobytes()
    return ds


def pair_of_series() -> list[Dataset]:
    """Two axial CT series of one study in one frame of reference: 5 slices 2 mm apart from
    z=0, and 4 slices from z=1 in reverse instance order (synchronised scrolling)."""
    out = []
    first = _base("CT", "1.2.840.10008.5.1.4.1.1.2", patient="SYNC")
    for series, (zs, number) in enumerate((([0, 2, 4, 6, 8], 1), ([7, 5, 3, 1], 2))):
        uid = generate_uid()
        for n, z in enumerate(zs, 1):
            ds = _base("CT", "1.2.840.10008.5.1.4.1.1.2", patient="SYNC")
            ds.StudyInstanceUID, ds.FrameOfReferenceUID = (
                first.StudyInstanceUID,
                first.FrameOfReferenceUID,
            )
            ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = uid, number, n
            ds.Rows = ds.Columns = 32
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
            ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, z]
            ds.SliceLocation = z
            ds.PixelData = np.full((32, 32), z * 100 + series, dtype=np.int16).tobytes()
            out.append(ds)
    return out


PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Count 0/Kids[]>>"
    b"endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


def reports(reference: Dataset) -> list[Dataset]:
    """A Basic Text SR and an Encapsulated PDF in the study of ``reference``."""
    sr = _base("SR", "1.2.840.10008.5.1.4.1.1.88.11")
    pdf = _base("DOC", "1.2.840.10008.5.1.4.1.1.104.1")
    for ds in (sr, pdf):
        ds.StudyInstanceUID = reference.StudyInstanceUID
        ds.PatientName, ds.PatientID = reference.PatientName, reference.PatientID
        del ds.SamplesPerPixel, ds.PhotometricInterpretation
    sr.ValueType, sr.ContinuityOfContent = "CONTAINER", "SEPARATE"
    sr.CompletionFlag, sr.VerificationFlag = "COMPLETE", "VERIFIED"
    sr.ContentDate, sr.ContentTime = "20260102", "120000"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = (
        "18748-4",
        "LN",
        "Diagnostic imaging report",
    )
    sr.ConceptNameCodeSequence = [title]
    finding = Dataset()
    finding.RelationshipType, finding.ValueType = "CONTAINS", "TEXT"
    name = Dataset()
    name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning = "121071", "DCM", "Finding"
    finding.ConceptNameCodeSequence = [name]
    finding.TextValue = "Bar of 100 mm, no other abnormality."
    sr.ContentSequence = [finding]
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.DocumentTitle = "Scanned referral"
    pdf.BurnedInAnnotation = "YES"
    pdf.ContentDate, pdf.ContentTime, pdf.AcquisitionDateTime = "20260103", "090000", ""
    pdf.ConceptNameCodeSequence = []
    pdf.EncapsulatedDocument = PDF_BYTES + (b"\x00" if len(PDF_BYTES) % 2 else b"")
    pdf.EncapsulatedDocumentLength = len(PDF_BYTES)
    return [sr, pdf]


def _to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def viewer(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[WebServer, dict[str, Dataset]]]:
    made = {"phantom": phantom(), "enhanced": enhanced_mr(), "cr": projection_phantom()}
    extra = pair_of_series() + reports(made["phantom"])
    made["sync"] = extra[0]

    def add(reader: FolderReader) -> FolderReader:
        for ds in [*made.values(), *extra[1:]]:
            outcome = reader.ingest(_to_bytes(ds))
            assert outcome.failure is None, outcome.reason
        return reader

    with web_server(Path(tmp_path_factory.mktemp("viewer")), wrap=add) as server:
        yield server, made


@pytest.fixture(scope="module")
def page(viewer: tuple[WebServer, dict[str, Dataset]]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))

        def on_console(message: Any) -> None:
            if "Content Security Policy" in message.text:
                errors.append(message.text)

        pg.on("console", on_console)
        pg.route(re.compile(r"^http://127\.0\.0\.1:"), _with_strict_csp)
        yield pg
        browser.close()
        assert not errors, errors


# The web layer's policy for the UI (no inline script or style, no eval, nothing framed
# but what says otherwise): the viewer must work under it.
STRICT_CSP = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
}


def _with_strict_csp(route: Any) -> None:
    response = route.fetch()
    headers = dict(response.headers)
    for name, value in STRICT_CSP.items():
        headers.setdefault(name, value)  # as the server's middleware: answers may override
    route.fulfill(response=response, headers=headers)


def _open(page: Any, url: str, ds: Dataset, count: int) -> None:
    page.goto(f"{url}/#/viewer/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}")
    page.reload()  # a fresh viewer for each series
    page.wait_for_function(
        f"() => document.getElementById('position').textContent === '1 / {count}'"
    )


# The image as drawn on the active viewport's canvas at one canvas pixel per image pixel.
READ_PIXELS = """() => {
  const v = window.duckpacs.viewer.active, g = v.geometry();
  const w = Math.round(g.w), h = Math.round(g.h);
  return { width: w, height: h, data: Array.from(v.ctx.getImageData(g.ox, g.oy, w, h).data) };
}"""


def _drawn(page: Any) -> npt.NDArray[np.uint8]:
    page.click("#actual")
    got = page.evaluate(READ_PIXELS)
    rgba = np.array(got["data"], dtype=np.uint8).reshape(got["height"], got["width"], 4)
    return rgba[..., :3]


def _pydicom_8bit(ds: Dataset, frame_pixels: npt.NDArray[Any] | None = None) -> npt.NDArray[Any]:
    """pydicom's modality LUT and windowing, its output range mapped onto 0..255."""
    arr = ds.pixel_array if frame_pixels is None else frame_pixels
    out = apply_windowing(apply_modality_lut(arr, ds), ds)
    lo = -(2 ** (ds.BitsStored - 1)) if ds.PixelRepresentation else 0
    hi = 2 ** (ds.BitsStored - 1) - 1 if ds.PixelRepresentation else 2**ds.BitsStored - 1
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    lo, hi = lo * slope + intercept, hi * slope + intercept
    return (out - lo) / (hi - lo) * 255.0


def _assert_close(drawn: npt.NDArray[np.uint8], expected: npt.NDArray[Any]) -> None:
    diff = np.abs(drawn.astype(np.float64) - expected)
    assert diff.max() <= 1.0, f"{int((diff > 1).sum())} pixels off by up to {diff.max():.1f}"


def test_monochrome1_matches_pydicom(viewer: tuple[WebServer, Any], page: Any) -> None:
    server, _ = viewer
    ds = pydicom.dcmread(server.files["mono1"])
    _open(page, server.url, ds, 1)
    # No window in the file: the viewer's default spans the values (as /rendered does).
    values = apply_modality_lut(ds.pixel_array, ds)
    low, high = float(values.min()), float(values.max())
    ds.WindowCenter, ds.WindowWidth = (low + high + 1) / 2, high - low + 1
    expected = 255.0 - _pydicom_8bit(ds)  # MONOCHROME1: low values are white
    drawn = _drawn(page)
    assert (drawn[..., 0] == drawn[..., 1]).all()
    _assert_close(drawn[..., 0], expected)


def test_16bit_ct_preset_matches_pydicom(viewer: tuple[WebServer, Any], page: Any) -> None:
    server, _ = viewer
    ds = pydicom.dcmread(server.files["CT_small.dcm"])
    _open(page, server.url, ds, 1)
    page.select_option("#preset", label="CT abdomen 40/400")
    page.wait_for_function("() => document.getElementById('wl').textContent === 'W 400 L 40'")
    ds.WindowCenter, ds.WindowWidth = 40, 400
    _assert_close(_drawn(page)[..., 0], _pydicom_8bit(ds))
    page.select_option("#preset", label="CT lung -600/1500")
    page.wait_for_function("() => document.getElementById('wl').textContent === 'W 1500 L -600'")
    ds.WindowCenter, ds.WindowWidth = -600, 1500
    _assert_close(_drawn(page)[..., 0], _pydicom_8bit(ds))


def test_palette_colour_matches_pydicom(viewer: tuple[WebServer, Any], page: Any) -> None:
    server, _ = viewer
    ds = pydicom.dcmread(server.files["examples_palette.dcm"])
    _open(page, server.url, ds, 1)
    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float64) * 255.0 / 65535.0
    _assert_close(_drawn(page), rgb)


def test_rgb_and_ybr_colour(viewer: tuple[WebServer, Any], page: Any) -> None:
    server, _ = viewer
    ds = pydicom.dcmread(server.files["examples_rgb_color.dcm"])
    _open(page, server.url, ds, 1)
    _assert_close(_drawn(page), ds.pixel_array.astype(np.float64))
    # JPEG YBR_FULL_422, 30 frames: the server decodes (to RGB, as pydicom does) and says so.
    ds = pydicom.dcmread(server.files["examples_ybr_color.dcm"])
    _open(page, server.url, ds, 30)
    _assert_close(_drawn(page), ds.pixel_array[0].astype(np.float64))


def test_enhanced_multiframe_per_frame_groups(viewer: tuple[WebServer, Any], page: Any) -> None:
    server, made = viewer
    ds = made["enhanced"]
    _open(page, server.url, ds, 3)
    frames = ds.pixel_array
    for n in range(3):
        if n:
            page.focus(".viewport.active canvas")
            page.keyboard.press("ArrowDown")
            page.wait_for_function(
                f"() => document.getElementById('position').textContent === '{n + 1} / 3'"
            )
        group = ds.PerFrameFunctionalGroupsSequence[n]
        voi, rescale = group.FrameVOILUTSequence[0], group.PixelValueTransformationSequence[0]
        page.wait_for_function(
            f"() => document.getElementById('wl').textContent === "
            f"'W {int(voi.WindowWidth)} L {int(voi.WindowCenter)}'"
        )
        flat = Dataset()  # the frame's attributes at the top level, as pydicom wants them
        flat.BitsStored, flat.PixelRepresentation = 16, 0
        flat.PhotometricInterpretation = "MONOCHROME2"
        flat.RescaleSlope, flat.RescaleIntercept = rescale.RescaleSlope, rescale.RescaleIntercept
        flat.WindowCenter, flat.WindowWidth = voi.WindowCenter, voi.WindowWidth
        drawn = _drawn(page)
        # Rows are 2 mm apart, columns 1 mm: at 1:1 the image is drawn twice as tall.
        assert drawn.shape[:2] == (128, 48)
        _assert_close(drawn[::2, :, 0], _frame(flat, frames[n]))
    text = page.text_content(".viewport.active")
    assert "fr 3/3" in text and "Thk 3 mm" in text
    markers = page.eval_on_selector_all(
        ".viewport.active .mk", "els => els.map(e => e.textContent)"
    )
    assert sorted(markers) == sorted(["A", "P", "H", "F"])  # sagittal: A/P across, H/F down


def _frame(flat: Dataset, pixels: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return _pydicom_8bit(flat, pixels)


def test_length_of_a_100_mm_bar(viewer: tuple[WebServer, Any], page: Any) -> None:
    server, made = viewer
    ds = made["phantom"]
    _open(page, server.url, ds, 1)
    page.click("[data-tool=length]")
    x0, x1, row = BAR
    ends = [
        page.evaluate(f"() => window.duckpacs.viewer.active.imageToClient({x}, {row + 0.5})")
        for x in (x0, x1)
    ]
    page.mouse.move(ends[0]["x"], ends[0]["y"])
    page.mouse.down()
    page.mouse.move(ends[1]["x"], ends[1]["y"], steps=10)
    page.mouse.up()
    page.wait_for_selector("#measurements li")
    text = page.text_content("#measurements li")
    value = float(re.search(r"([\d.]+) mm", text).group(1))  # type: ignore[union-attr]
    assert abs(value - 100.0) <= 1.0, text


def test_measurement_saved_as_sr_and_shown_again(
    viewer: tuple[WebServer, dict[str, Dataset]], page: Any
) -> None:
    """Runs after the length test: its measurement is saved as a TID 1500 SR, found in the
    archive, and drawn again when the study is opened anew."""
    server, made = viewer
    ds = made["phantom"]
    page.wait_for_selector("#save-sr:not([disabled])")
    page.click("#save-sr")
    page.wait_for_function(
        "() => document.getElementById('status').textContent.startsWith('Measurements saved')"
    )
    found = requests.get(
        f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/instances",
        params={"Modality": "SR", "includefield": "SeriesInstanceUID"},
    ).json()
    srs = []
    for row in found:
        url = (
            f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/"
            f"{row['0020000E']['Value'][0]}/instances/{row['00080018']['Value'][0]}"
        )
        body = requests.get(url, headers={"Accept": "multipart/related; type=application/dicom"})
        srs.append(pydicom.dcmread(io.BytesIO(_first_part(body))))
    sr = next(
        s
        for s in srs
        if "ContentTemplateSequence" in s
        and s.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    )
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"
    group = sr.ContentSequence[-1].ContentSequence[0]
    assert group.ContentTemplateSequence[0].TemplateIdentifier == "1410"
    scoord = next(i for i in group.ContentSequence if i.ValueType == "SCOORD")
    assert scoord.GraphicType == "POLYLINE"
    assert scoord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        ds.SOPInstanceUID
    )
    num = next(i for i in group.ContentSequence if i.ValueType == "NUM")
    assert num.ConceptNameCodeSequence[0].CodeMeaning == "Length"
    assert abs(float(num.MeasuredValueSequence[0].NumericValue) - 100.0) <= 1.0
    assert num.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    _open(page, server.url, ds, 1)
    page.wait_for_selector("#measurements li.saved")
    assert re.search(r"length: (Length )?(99|100)\.\d mm", page.text_content("#measurements li"))
    shown = page.evaluate(
        f"() => window.duckpacs.viewer.measurementsOf('{ds.SOPInstanceUID}/1').map(m => m.kind)"
    )
    assert shown == ["length"]


def _first_part(response: requests.Response) -> bytes:
    boundary = re.search(r"boundary=\"?([^\";]+)", response.headers["content-type"]).group(1)  # type: ignore[union-attr]
    part = response.content.split(b"--" + boundary.encode())[1]
    return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]


def test_reports_text_sr_and_pdf(viewer: tuple[WebServer, dict[str, Dataset]], page: Any) -> None:
    server, made = viewer
    _open(page, server.url, made["phantom"], 1)
    page.wait_for_selector("#reports button.report >> nth=1")
    titles = page.eval_on_selector_all(
        "#reports button.report", "els => els.map(e => e.textContent)"
    )
    assert any(t.startswith("Diagnostic imaging report") for t in titles), titles
    assert any(t.startswith("Scanned referral") for t in titles), titles
    page.click("#reports button.report >> text=Diagnostic imaging report")
    page.wait_for_selector("#report-view:not([hidden])")
    assert "Finding: Bar of 100 mm, no other abnormality." in page.text_content("#report-body")
    page.click("#report-close")
    page.click("#reports button.report >> text=Scanned referral")
    page.wait_for_selector("#report-body iframe")
    src = page.get_attribute("#report-body iframe", "src")
    frame = page.frame_locator("#report-body iframe")
    assert frame is not None
    document = requests.get(server.url + src)
    assert document.headers["content-type"] == "application/pdf"
    assert document.content == PDF_BYTES  # the padding byte is not part of the document
    page.click("#report-close")


def test_dicomdir_download(viewer: tuple[WebServer, dict[str, Dataset]], page: Any) -> None:
    server, made = viewer
    study = made["enhanced"].StudyInstanceUID
    _open(page, server.url, made["enhanced"], 3)
    page.wait_for_function(
        "() => document.getElementById('download-dicomdir').href.includes(" + repr(study) + ")"
    )
    href = page.get_attribute("#download-dicomdir", "href")
    assert href == f"/api/studies/{study}/dicomdir.zip"
    r = requests.get(server.url + href)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = zf.namelist()
        assert "DICOMDIR" in names
        dicomdir = pydicom.dcmread(io.BytesIO(zf.read("DICOMDIR")))
    records = [r.DirectoryRecordType for r in dicomdir.DirectoryRecordSequence]
    assert records.count("IMAGE") == 1 and "PATIENT" in records
    assert requests.get(f"{server.url}/api/studies/1.2.3/dicomdir.zip").status_code == 404


def test_layout_drag_sync_prior_and_overlays(
    viewer: tuple[WebServer, dict[str, Dataset]], page: Any
) -> None:
    server, made = viewer
    first = made["sync"]
    _open(page, server.url, first, 5)
    page.click("[data-layout='2']")
    # The second viewport is filled with the study's next series; drag the first one there
    # too, then back the second, as a reader would.
    page.wait_for_selector(".viewport[data-n='1'][data-series]")
    cards = page.locator("#series-list .series")
    assert cards.count() == 2
    second_uid = cards.nth(1).get_attribute("data-series")
    cards.nth(0).drag_to(page.locator(".viewport[data-n='1'] canvas"))
    page.wait_for_selector(f".viewport[data-n='1'][data-series='{first.SeriesInstanceUID}']")
    cards.nth(1).drag_to(page.locator(".viewport[data-n='1'] canvas"))
    page.wait_for_selector(f".viewport[data-n='1'][data-series='{second_uid}']")
    # Synchronised scrolling: viewport 1 at z=4 (image 3) brings viewport 2 to z=3 or 5.
    # (Loading the second series already moved viewport 1 to its first slice, z=7.)
    page.click(".viewport[data-n='0'] canvas")
    page.keyboard.press("Home")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => document.getElementById('position').textContent === '3 / 5'")
    page.wait_for_function(
        "() => { const t = document.querySelector(\".viewport[data-n='1'] .ov.bl\").textContent;"
        " return t.includes('Loc 3.0 mm') || t.includes('Loc 5.0 mm'); }"
    )
    # Overlays: the key hides them, again shows them.
    assert page.is_visible(".viewport[data-n='0'] .ov.tl")
    page.keyboard.press("o")
    assert not page.is_visible(".viewport[data-n='0'] .ov.tl")
    page.keyboard.press("o")
    assert page.is_visible(".viewport[data-n='0'] .ov.tl")
    # n: the next series of the study in the active viewport.
    page.keyboard.press("n")
    page.wait_for_selector(f".viewport[data-n='0'][data-series='{second_uid}']")
    # A prior of the phantom's patient (the enhanced MR) opens beside it.
    _open(page, server.url, made["phantom"], 1)
    page.wait_for_selector("#priors button.prior")
    page.click("#priors button.prior")
    page.wait_for_selector(
        f".viewport[data-n='1'][data-series='{made['enhanced'].SeriesInstanceUID}']"
    )
    page.wait_for_function(
        "() => document.querySelector(\".viewport[data-n='1'] .ov.bl\")"
        ".textContent.includes('fr 1/3')"
    )


def _drag(page: Any, points: list[tuple[float, float]]) -> None:
    """Press at the first image point, drag to the second, click at any further ones."""
    client = [
        page.evaluate(f"() => window.duckpacs.viewer.active.imageToClient({x}, {y})")
        for x, y in points
    ]
    page.mouse.move(client[0]["x"], client[0]["y"])
    page.mouse.down()
    page.mouse.move(client[1]["x"], client[1]["y"], steps=8)
    page.mouse.up()
    for c in client[2:]:
        page.mouse.click(c["x"], c["y"])


def test_angle_and_elliptical_roi(viewer: tuple[WebServer, dict[str, Dataset]], page: Any) -> None:
    server, made = viewer
    _open(page, server.url, made["phantom"], 1)
    page.wait_for_selector("#measurements li.saved")  # the SR saved by the test before
    page.click("[data-tool=angle]")
    _drag(page, [(100, 100), (100, 200), (200, 200)])
    page.click("[data-tool=ellipse]")
    _drag(page, [(40, 40), (80, 80)])  # water: 0 HU everywhere, 20 mm across
    page.wait_for_function("() => document.querySelectorAll('#measurements li').length === 3")
    texts = page.eval_on_selector_all("#measurements li", "els => els.map(e => e.textContent)")
    assert texts[1] == "angle: 90.0°", texts
    assert texts[2] == "ellipse: mean 0.0 HU SD 0.0 min 0 max 0 area 314.2 mm²", texts


def test_measurements_api_refuses_bad_input(viewer: tuple[WebServer, dict[str, Dataset]]) -> None:
    server, made = viewer
    ds = made["phantom"]
    url = f"{server.url}/api/studies/{ds.StudyInstanceUID}/measurements"
    good = {
        "kind": "length",
        "points": [[1, 1], [5, 1]],
        "values": {"length": [2.0, "mm"]},
        "series": ds.SeriesInstanceUID,
        "instance": ds.SOPInstanceUID,
        "sop_class": ds.SOPClassUID,
        "frame": 1,
    }
    cases: list[tuple[bytes | dict[str, Any] | list[int], int, str]] = [
        (b"not json", 400, "measurements"),
        ({"measurements": [{**good, "kind": "circle"}]}, 400, "kind 'circle'"),
        ({"measurements": [{**good, "points": [[1, 1]]}]}, 400, "expected 2 points"),
        ({"measurements": [{**good, "values": {"length": [2, "furlong"]}}]}, 400, "furlong"),
        ({"measurements": [{**good, "values": {"length": [2, ["mm"]]}}]}, 400, "unit"),
        ({"measurements": [{**good, "frame": True}]}, 400, "frame must be"),
        ({"measurements": [{**good, "points": "0,0"}]}, 400, "expected 2 points"),
        ({"measurements": {"length": 1}}, 400, "expected"),
        ([1, 2], 400, "measurements"),
        ({"measurements": [{**good, "instance": "1.2.3"}]}, 404, "no instance 1.2.3"),
        ({"measurements": []}, 400, "nothing to save"),
    ]
    for body, status, text in cases:
        r = (
            requests.post(url, data=body)
            if isinstance(body, bytes)
            else requests.post(url, json=body)
        )
        assert r.status_code == status and text in r.json()["error"], (body, r.text)


def test_mr_window_from_file_and_voi_lut(viewer: tuple[WebServer, Any], page: Any) -> None:
    server, _ = viewer
    ds = pydicom.dcmread(server.files["MR_small.dcm"])
    _open(page, server.url, ds, 1)
    _assert_close(_drawn(page)[..., 0], _pydicom_8bit(ds))
    # A VOI LUT Sequence instead of a window (PS3.3 C.11.2.1.3): its output, to 8 bits.
    ds = pydicom.dcmread(server.files["voilut"])
    _open(page, server.url, ds, 1)
    lut = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds).astype(np.int64), ds)
    _assert_close(_drawn(page)[..., 0], lut.astype(np.float64) * 255.0 / 65535.0)


def test_keys_presets_invert_and_tags(viewer: tuple[WebServer, Any], page: Any) -> None:
    server, _ = viewer
    ds = pydicom.dcmread(server.files["CT_small.dcm"])
    _open(page, server.url, ds, 1)
    page.focus(".viewport.active canvas")
    page.keyboard.press("2")  # CT lung
    page.wait_for_function("() => document.getElementById('wl').textContent === 'W 1500 L -600'")
    ds.WindowCenter, ds.WindowWidth = -600, 1500
    expected = _pydicom_8bit(ds)
    _assert_close(_drawn(page)[..., 0], expected)
    page.keyboard.press("i")
    page.wait_for_function(
        "() => document.querySelector('.viewport.active .ov.br').textContent.includes('inverted')"
    )
    _assert_close(_drawn(page)[..., 0], 255.0 - expected)
    page.keyboard.press("t")
    page.wait_for_selector("#tag-table tr")
    page.fill("#tag-filter", "00100020")
    page.wait_for_function(
        "() => document.querySelector('#tag-table tr').textContent === "
        f"'(0010,0020)LO{ds.PatientID}'"
    )
    page.focus(".viewport.active canvas")
    page.keyboard.press("t")
    assert not page.is_visible("#tags-panel")


def test_length_at_the_detector(viewer: tuple[WebServer, dict[str, Dataset]], page: Any) -> None:
    server, made = viewer
    _open(page, server.url, made["cr"], 1)
    page.click("[data-tool=length]")
    x0, x1, row = BAR
    _drag(page, [(x0, row + 0.5), (x1, row + 0.5)])
    page.wait_for_selector("#measurements li")
    text = page.text_content("#measurements li")
    assert re.fullmatch(r"length: (99\.\d|100\.\d) mm \(at detector\)", text), text
