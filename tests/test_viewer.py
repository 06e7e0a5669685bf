"""The web viewer in Debian's Chromium: images drawn in the browser from original-precision
WADO-RS frames equal pydicom's output (MONOCHROME1, a 16-bit CT under a CT preset, palette
colour, the frames of an enhanced multi-frame MR with per-frame functional groups), and a
length measured on a synthetic phantom with a 100 mm bar."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_windowing
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

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
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
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


def _to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, dict[str, Dataset]]]:
    made = {"phantom": phantom(), "enhanced": enhanced_mr()}

    def add(reader: FolderReader) -> FolderReader:
        for ds in made.values():
            reader.ingest(_to_bytes(ds))
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
        yield pg
        browser.close()
        assert not errors, errors


def _open(page: Any, url: str, ds: Dataset, count: int) -> None:
    page.goto(f"{url}/#/viewer/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}")
    page.reload()  # a fresh viewer for each series
    page.wait_for_function(f"document.getElementById('position').textContent === '1 / {count}'")


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
    page.wait_for_function("document.getElementById('wl').textContent === 'W 400 L 40'")
    ds.WindowCenter, ds.WindowWidth = 40, 400
    _assert_close(_drawn(page)[..., 0], _pydicom_8bit(ds))
    page.select_option("#preset", label="CT lung -600/1500")
    page.wait_for_function("document.getElementById('wl').textContent === 'W 1500 L -600'")
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
                f"document.getElementById('position').textContent === '{n + 1} / 3'"
            )
        group = ds.PerFrameFunctionalGroupsSequence[n]
        voi, rescale = group.FrameVOILUTSequence[0], group.PixelValueTransformationSequence[0]
        page.wait_for_function(
            f"document.getElementById('wl').textContent === "
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
    markers = page.eval_on_selector_all(".viewport.active .mk", "els => els.map(e => e.textContent)")
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
        page.evaluate(f"window.duckpacs.viewer.active.imageToClient({x}, {row + 0.5})")
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
