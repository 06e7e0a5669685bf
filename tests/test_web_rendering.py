"""/rendered and /thumbnail against pydicom's decoding plus the PS3.3 C.11 formulas."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.pixels import apply_voi_lut

from duckpacs.web import rendering
from tests.web_support.fixtures import web_fixture  # noqa: F401 (provides `web`)
from tests.web_support.server import WebServer


def rendered(web: WebServer, key: str, frame: int | None = None, **params: str) -> np.ndarray:
    ds = pydicom.dcmread(web.files[key], stop_before_pixels=True)
    url = (
        f"{web.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    url += f"/frames/{frame}/rendered" if frame else "/rendered"
    r = requests.get(url, params=params, headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)))


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently of the code under test."""
    out = np.empty(values.shape, dtype=np.float64)
    low = values <= center - 0.5 - (width - 1) / 2
    high = values > center - 0.5 + (width - 1) / 2
    mid = ~(low | high)
    out[low], out[high] = 0, 255
    out[mid] = ((values[mid] - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.rint(out).astype(np.uint8)


def modality(ds: pydicom.Dataset, frame: int = 0) -> np.ndarray:
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames") or 1) > 1:
        arr = arr[frame]
    return arr * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


def test_ct_rescale_and_explicit_window(web: WebServer) -> None:
    ds = pydicom.dcmread(web.files["CT_small.dcm"])
    got = rendered(web, "CT_small.dcm", window="40,400")
    assert np.array_equal(got, linear_window(modality(ds), 40, 400))


def test_default_window_comes_from_the_header(web: WebServer) -> None:
    ds = pydicom.dcmread(web.files["MR_small.dcm"])
    assert "WindowCenter" in ds
    got = rendered(web, "MR_small.dcm")
    expected = linear_window(modality(ds), float(ds.WindowCenter), float(ds.WindowWidth))
    assert np.array_equal(got, expected)


def test_monochrome1_is_inverted(web: WebServer) -> None:
    ds = pydicom.dcmread(web.files["mono1"])
    got = rendered(web, "mono1", window="100,1000")
    assert np.array_equal(got, 255 - linear_window(modality(ds), 100, 1000))
    normal = rendered(web, "CT_small.dcm", window="100,1000")
    assert np.array_equal(got, 255 - normal)


def test_voi_lut_sequence(web: WebServer) -> None:
    ds = pydicom.dcmread(web.files["voilut"])
    lut = apply_voi_lut(modality(ds).astype(np.int64), ds).astype(np.float64)
    expected = np.rint(lut * 255 / 65535).astype(np.uint8)
    assert np.array_equal(rendered(web, "voilut"), expected)


def test_colour_and_multiframe(web: WebServer) -> None:
    rgb = pydicom.dcmread(web.files["examples_rgb_color.dcm"])
    assert np.array_equal(rendered(web, "examples_rgb_color.dcm"), rgb.pixel_array)
    rle = pydicom.dcmread(web.files["SC_rgb_rle_2frame.dcm"])
    assert np.array_equal(rendered(web, "SC_rgb_rle_2frame.dcm", frame=2), rle.pixel_array[1])
    palette = pydicom.dcmread(web.files["examples_palette.dcm"])
    colour = pydicom.pixels.apply_color_lut(palette.pixel_array, palette)
    expected = np.rint(colour.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(rendered(web, "examples_palette.dcm"), expected)
    dose = pydicom.dcmread(web.files["rtdose.dcm"])
    values = modality(dose, 9)
    got = rendered(web, "rtdose.dcm", frame=10)
    low, high = values.min(), values.max()
    assert np.array_equal(got, linear_window(values, (low + high + 1) / 2, high - low + 1))


def test_jpeg_ybr_multiframe_matches_pydicom_closely(web: WebServer) -> None:
    ds = pydicom.dcmread(web.files["examples_ybr_color.dcm"])
    got = rendered(web, "examples_ybr_color.dcm", frame=5).astype(int)
    assert np.abs(got - ds.pixel_array[4].astype(int)).max() <= 1


def test_viewport_scales_and_crops(web: WebServer) -> None:
    full = rendered(web, "CT_small.dcm", window="40,400")
    small = rendered(web, "CT_small.dcm", window="40,400", viewport="64,32")
    assert small.shape == (32, 32)
    crop = rendered(web, "CT_small.dcm", window="40,400", viewport="32,32,10,20,32,32")
    assert np.array_equal(crop, full[20:52, 10:42])


@pytest.mark.parametrize("text", ["1", "a,b", "40,0", "40,400,cubic", "40,400,linear,x"])
def test_bad_windows(text: str) -> None:
    with pytest.raises(rendering.RenderError):
        rendering.parse_window(text)


@pytest.mark.parametrize("text", ["1", "0,10", "10,10,1", "a,b", "99999,10", "10,10,0,0,0,5"])
def test_bad_viewports(text: str) -> None:
    with pytest.raises(rendering.RenderError):
        rendering.parse_viewport(text)


def test_window_functions() -> None:
    values = np.array([-1000.0, 0.0, 40.0, 1000.0])
    assert rendering.parse_window("40,400,linear-exact") == rendering.Window(
        40, 400, "LINEAR_EXACT"
    )
    exact = rendering.window_to_8bit(values, rendering.Window(40, 400, "LINEAR_EXACT"))
    assert exact.tolist() == [0, 102, 128, 255]
    sigmoid = rendering.window_to_8bit(values, rendering.Window(40, 400, "SIGMOID"))
    assert sigmoid.tolist()[2] == 128 and sigmoid[0] == 0 and sigmoid[3] == 255
