"""WADO-RS Retrieve and its transfer syntaxes (PS3.18 8.7.3, since 2016c): without a
``transfer-syntax`` parameter instances come in Explicit VR Little Endian and frames and pixel
bulk data in the default syntax of the media type asked for; ``transfer-syntax=*`` keeps what
is stored; explicit syntaxes are honoured when they can be produced, else 406 with a reason."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import requests
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian

from duckpacs.web.multipart import Part, decode
from tests.web_support.fixtures import web_fixture  # noqa: F401 (provides `web`)
from tests.web_support.server import WebServer

EXPLICIT_LE = str(ExplicitVRLittleEndian)
J2K_LOSSY = "1.2.840.10008.1.2.4.91"  # pydicom's JPEG2000.dcm
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"  # pydicom's examples_ybr_color.dcm, 30 frames


def url_of(web: WebServer, name: str) -> str:
    ds = pydicom.dcmread(web.files[name], stop_before_pixels=True)
    return (
        f"{web.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def get(url: str, accept: str | None = None) -> requests.Response:
    return requests.get(url, headers={"Accept": accept} if accept else {}, timeout=60)


def parts(r: requests.Response) -> list[Part]:
    assert r.status_code == 200, r.text
    return decode(r.content, r.headers["content-type"])


def test_instances_default_to_explicit_vr_little_endian(web: WebServer) -> None:
    url = url_of(web, "JPEG2000.dcm")
    original = pydicom.dcmread(web.files["JPEG2000.dcm"])
    for accept in (None, "*/*", 'multipart/related; type="application/dicom"'):
        (part,) = parts(get(url, accept))
        assert part.content_type == f"application/dicom; transfer-syntax={EXPLICIT_LE}", accept
        ds = pydicom.dcmread(io.BytesIO(part.body))
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
        assert ds.SOPInstanceUID == original.SOPInstanceUID  # the same instance, decoded
        assert np.array_equal(ds.pixel_array, original.pixel_array)
    # As stored: with * and with the stored syntax named.
    for syntax in ("*", J2K_LOSSY):
        accept = f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
        (part,) = parts(get(url, accept))
        assert part.body == web.files["JPEG2000.dcm"].read_bytes()
        assert part.content_type == f"application/dicom; transfer-syntax={J2K_LOSSY}"
    # Another compressed syntax would need an encoder: 406, saying what is stored.
    jpeg_ls = "1.2.840.10008.1.2.4.80"
    r = get(url, f'multipart/related; type="application/dicom"; transfer-syntax={jpeg_ls}')
    assert r.status_code == 406
    assert J2K_LOSSY in r.json()["error"] and "transfer-syntax=*" in r.json()["error"]


def test_frames_default_to_the_media_types_syntax(web: WebServer) -> None:
    path = web.files["examples_ybr_color.dcm"]
    url = url_of(web, "examples_ybr_color.dcm") + "/frames/2"
    ds = pydicom.dcmread(path)
    stored = list(generate_frames(ds.PixelData, number_of_frames=30))
    # image/jpeg's default is JPEG baseline, which is what is stored: the stored bytes.
    (part,) = parts(get(url, 'multipart/related; type="image/jpeg"'))
    assert part.body == stored[1]
    assert part.content_type == f"image/jpeg; transfer-syntax={JPEG_BASELINE}"
    # application/octet-stream (also what */* and no Accept get): native pixels, decoded.
    for accept in (None, "*/*", 'multipart/related; type="application/octet-stream"'):
        (part,) = parts(get(url, accept))
        assert part.content_type == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
        pixels = np.frombuffer(part.body, np.uint8).reshape(ds.Rows, ds.Columns, 3)
        assert np.array_equal(pixels, ds.pixel_array[1]), accept
    # transfer-syntax=*: as stored, in the stored syntax's media type.
    any_syntax = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    (part,) = parts(get(url, any_syntax))
    assert part.body == stored[1]
    assert part.content_type == f"image/jpeg; transfer-syntax={JPEG_BASELINE}"


def test_frames_that_cannot_be_produced_are_406_with_a_reason(web: WebServer) -> None:
    url = url_of(web, "JPEG2000.dcm") + "/frames/1"
    # image/jp2's default is the lossless 1.2.840.10008.1.2.4.90; this one is stored lossy.
    r = get(url, 'multipart/related; type="image/jp2"')
    assert r.status_code == 406
    assert "image/jp2" in r.json()["error"] and J2K_LOSSY in r.json()["error"]
    (part,) = parts(get(url, f'multipart/related; type="image/jp2"; transfer-syntax={J2K_LOSSY}'))
    assert part.content_type == f"image/jp2; transfer-syntax={J2K_LOSSY}"
    r = get(url, f'multipart/related; type="image/jpeg"; transfer-syntax={J2K_LOSSY}')
    assert r.status_code == 406  # that syntax is not a JPEG one (PS3.18 Table 8.7.3-5)


def test_pixel_bulk_data_follows_the_frames_rules(web: WebServer) -> None:
    url = url_of(web, "examples_ybr_color.dcm") + "/bulkdata/7FE00010"
    ds = pydicom.dcmread(web.files["examples_ybr_color.dcm"])
    (part,) = parts(get(url))
    assert part.content_type == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    assert np.array_equal(
        np.frombuffer(part.body, np.uint8).reshape(ds.pixel_array.shape), ds.pixel_array
    )
    stored = parts(get(url, 'multipart/related; type="image/jpeg"; transfer-syntax=*'))
    assert [p.body for p in stored] == list(generate_frames(ds.PixelData, number_of_frames=30))
    # A bulk value other than pixels is only ever application/octet-stream.
    ct = url_of(web, "CT_small.dcm")
    meta = get(ct + "/metadata", "application/dicom+json").json()[0]
    uri = next(v["BulkDataURI"] for t, v in meta.items() if "BulkDataURI" in v and t != "7FE00010")
    assert get(f"{ct}/{uri}", 'multipart/related; type="image/jpeg"').status_code == 406
    assert get(f"{ct}/{uri}").status_code == 200
