"""DICOMweb conformance with dicomweb-client as the client (PS3.18 10.4-10.6, 9), checked
against pydicom's reading of the same files."""

from __future__ import annotations

import io
import json
from urllib.parse import urljoin

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from tests.web_support.fixtures import web_fixture  # noqa: F401 (provides `web`)
from tests.web_support.server import WebServer

# Every test on the embedded index and again on PostgreSQL (tests/pg_support.py).
pytestmark = pytest.mark.usefixtures("each_index_backend")


def client(web: WebServer) -> DICOMwebClient:
    return DICOMwebClient(url=web.dicomweb)


def uids(path: object) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def value(obj: dict, tag: str) -> object:
    return obj[tag]["Value"][0]


# --- QIDO-RS --------------------------------------------------------------------------------


def test_search_for_studies_returns_every_study_with_default_attributes(web: WebServer) -> None:
    studies = client(web).search_for_studies()
    expected = {uids(p)[0] for p in web.files.values()}
    assert {value(s, "0020000D") for s in studies} == expected
    ct = next(s for s in studies if value(s, "0020000D") == uids(web.files["CT_small.dcm"])[0])
    ds = pydicom.dcmread(web.files["CT_small.dcm"], stop_before_pixels=True)
    assert ct["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": str(ds.PatientName)}]}
    assert value(ct, "00100020") == ds.PatientID
    assert value(ct, "00080020") == ds.StudyDate
    assert ct["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{ds.StudyInstanceUID}")


def test_search_matching_by_keyword_and_by_tag(web: WebServer) -> None:
    ds = pydicom.dcmread(web.files["CT_small.dcm"], stop_before_pixels=True)
    by_keyword = client(web).search_for_studies(search_filters={"PatientID": ds.PatientID})
    by_tag = client(web).search_for_studies(search_filters={"00100020": ds.PatientID})
    assert [value(s, "0020000D") for s in by_keyword] == [str(ds.StudyInstanceUID)]
    assert by_tag == by_keyword
    wildcard = client(web).search_for_studies(search_filters={"PatientName": "CompressedSamples*"})
    assert wildcard and all(
        value(s, "00100010")["Alphabetic"].startswith("CompressedSamples") for s in wildcard
    )


def test_fuzzy_matching_limit_offset_and_includefield(web: WebServer) -> None:
    c = client(web)
    everything = c.search_for_studies()
    page1 = c.search_for_studies(limit=2, offset=0)
    page2 = c.search_for_studies(limit=2, offset=2)
    assert len(page1) == 2 and len(page2) == 2
    assert page1 + page2 == everything[:4]
    fuzzy = c.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "lestr"})
    strict = c.search_for_studies(search_filters={"PatientName": "lestr"})
    assert fuzzy and not strict
    included = c.search_for_studies(fields=["StudyDescription", "00081030"], limit=1)
    assert "00081030" in included[0]
    everything_fields = c.search_for_studies(fields=["all"], limit=1)
    assert "0020000D" in everything_fields[0]


def test_search_for_series_and_instances(web: WebServer) -> None:
    study, series, instance = uids(web.files["rtdose.dcm"])
    c = client(web)
    found = c.search_for_series(study)
    assert series in {value(s, "0020000E") for s in found}
    everywhere = c.search_for_series(search_filters={"Modality": "RTDOSE"})
    assert {value(s, "0020000E") for s in everywhere} == {series}
    instances = c.search_for_instances(study, series)
    assert [value(i, "00080018") for i in instances] == [instance]
    assert value(instances[0], "00280008") == 15
    all_instances = c.search_for_instances()
    assert len(all_instances) == len(web.files)
    in_study = c.search_for_instances(study)
    assert instance in {value(i, "00080018") for i in in_study}


def test_empty_result_is_an_empty_list_with_200(web: WebServer) -> None:
    r = requests.get(web.dicomweb + "/studies", params={"PatientID": "nobody-here"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/dicom+json")
    assert r.json() == []
    assert client(web).search_for_studies(search_filters={"PatientID": "nobody"}) == []


def test_qido_bad_requests(web: WebServer) -> None:
    for params in ({"NotAKeyword": "x"}, {"limit": "-1"}, {"offset": "ten"}, {"00081110.1": "x"}):
        r = requests.get(web.dicomweb + "/studies", params=params)
        assert r.status_code == 400, params
        assert r.headers["content-type"] == "application/json"
        assert r.json()["status"] == 400
    r = requests.get(web.dicomweb + "/studies", headers={"Accept": "application/xml"})
    assert r.status_code == 406


# --- WADO-RS ---------------------------------------------------------------------------------


def test_retrieve_instance_is_byte_identical(web: WebServer) -> None:
    for name in ("CT_small.dcm", "JPEG2000.dcm", "rtdose.dcm"):
        study, series, instance = uids(web.files[name])
        r = requests.get(
            f"{web.dicomweb}/studies/{study}/series/{series}/instances/{instance}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert r.status_code == 200
        from duckpacs.web.multipart import decode

        parts = decode(r.content, r.headers["content-type"])
        assert [p.body for p in parts] == [web.files[name].read_bytes()]
        ds = client(web).retrieve_instance(study, series, instance)
        assert ds.SOPInstanceUID == instance


def test_retrieve_study_and_series(web: WebServer) -> None:
    study, series, _ = uids(web.files["MR_small.dcm"])
    in_study = [p for p in web.files.values() if uids(p)[0] == study]
    got = client(web).retrieve_study(study)
    assert sorted(d.SOPInstanceUID for d in got) == sorted(uids(p)[2] for p in in_study)
    meta = client(web).retrieve_study_metadata(study)  # streamed: several instances
    assert sorted(value(m, "00080018") for m in meta) == sorted(uids(p)[2] for p in in_study)
    assert len(in_study) > 1
    got_series = client(web).retrieve_series(study, series)
    assert [d.SOPInstanceUID for d in got_series] == [uids(web.files["MR_small.dcm"])[2]]
    assert got_series[0].pixel_array.tolist() == (
        pydicom.dcmread(web.files["MR_small.dcm"]).pixel_array.tolist()
    )


def test_transfer_syntax_negotiation(web: WebServer) -> None:
    study, series, instance = uids(web.files["rtdose.dcm"])  # stored implicit VR LE
    url = f"{web.dicomweb}/studies/{study}/series/{series}/instances/{instance}"
    c = client(web)
    explicit = c.retrieve_instance(
        study, series, instance, media_types=(("application/dicom", ExplicitVRLittleEndian),)
    )
    assert explicit.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    original = pydicom.dcmread(web.files["rtdose.dcm"])
    assert np.array_equal(explicit.pixel_array, original.pixel_array)
    # Unquoted type= and a compressed syntax we would have to encode: 406.
    r = requests.get(
        url,
        headers={
            "Accept": "multipart/related; type=application/dicom; "
            "transfer-syntax=1.2.840.10008.1.2.4.80"
        },
    )
    assert r.status_code == 406
    assert r.json()["status"] == 406
    # A compressed instance asked for uncompressed is decoded.
    study, series, instance = uids(web.files["JPEG2000.dcm"])
    r = requests.get(
        f"{web.dicomweb}/studies/{study}/series/{series}/instances/{instance}",
        headers={
            "Accept": f'multipart/related; type="application/dicom"; '
            f"transfer-syntax={ImplicitVRLittleEndian}"
        },
    )
    from duckpacs.web.multipart import decode

    (part,) = decode(r.content, r.headers["content-type"])
    assert part.content_type == f"application/dicom; transfer-syntax={ImplicitVRLittleEndian}"
    decoded = pydicom.dcmread(io.BytesIO(part.body))
    assert decoded.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert np.array_equal(
        decoded.pixel_array, pydicom.dcmread(web.files["JPEG2000.dcm"]).pixel_array
    )


def test_metadata_matches_pydicom_and_bulkdata_uris_resolve(web: WebServer) -> None:
    path = web.files["CT_small.dcm"]
    study, series, instance = uids(path)
    c = client(web)
    ds = pydicom.dcmread(path)
    for level_meta, meta_url in (
        (c.retrieve_study_metadata(study), f"{web.dicomweb}/studies/{study}/metadata"),
        (
            c.retrieve_series_metadata(study, series),
            f"{web.dicomweb}/studies/{study}/series/{series}/metadata",
        ),
        (
            c.retrieve_instance_metadata(study, series, instance),
            f"{web.dicomweb}/studies/{study}/series/{series}/instances/{instance}/metadata",
        ),
    ):
        meta = level_meta[0] if isinstance(level_meta, list) else level_meta
        if isinstance(level_meta, list):
            meta = next(m for m in level_meta if value(m, "00080018") == instance)
        pixel = meta["7FE00010"]
        assert "Value" not in pixel and "InlineBinary" not in pixel
        uri = pixel["BulkDataURI"]
        assert not uri.startswith(("http", "/")), "relative, to survive reverse proxies"
        bulk = c.retrieve_bulkdata(urljoin(meta_url, uri))
        assert bulk == [ds.PixelData]
        rebuilt = pydicom.Dataset.from_json(
            {k: v for k, v in meta.items() if "BulkDataURI" not in v}
        )
        for keyword in ("PatientName", "Rows", "Columns", "RescaleSlope", "ImagePositionPatient"):
            assert rebuilt[keyword].value == ds[keyword].value, keyword


def test_large_binary_values_top_level_and_nested_resolve(web: WebServer) -> None:
    path = web.files["bulky"]
    study, series, instance = uids(path)
    ds = pydicom.dcmread(path)
    top = ds[0x00291001]  # first element of the private block (0029,10xx)
    nested = ds.ReferencedImageSequence[0][0x00291002]
    url = f"{web.dicomweb}/studies/{study}/series/{series}/metadata"
    (meta,) = client(web).retrieve_series_metadata(study, series)
    uris = {
        "top": meta["00291001"]["BulkDataURI"],
        "nested": meta["00081140"]["Value"][0]["00291002"]["BulkDataURI"],
        "pixels": meta["7FE00010"]["BulkDataURI"],
    }
    assert all(not u.startswith(("/", "http")) for u in uris.values())
    got = {k: client(web).retrieve_bulkdata(urljoin(url, u)) for k, u in uris.items()}
    assert got == {"top": [top.value], "nested": [nested.value], "pixels": [ds.PixelData]}
    base = f"{web.dicomweb}/studies/{study}/series/{series}/instances/{instance}/bulkdata"
    assert requests.get(base + "/0/99999999").status_code == 404
    assert requests.get(base + "/x/1").status_code == 400
    assert requests.get(base + "/zz").status_code == 400
    assert requests.get(base + "/00100010").status_code == 400  # PN is no bulk value
    assert requests.get(base + "/00291001").status_code == 200  # a binary one by its tag


def test_frames_of_a_native_multiframe_instance(web: WebServer) -> None:
    path = web.files["rtdose.dcm"]
    study, series, instance = uids(path)
    ds = pydicom.dcmread(path)
    size = ds.Rows * ds.Columns * ds.BitsAllocated // 8
    frames = client(web).retrieve_instance_frames(study, series, instance, [1, 7, 15])
    assert frames == [ds.PixelData[(n - 1) * size : n * size] for n in (1, 7, 15)]
    arr = np.frombuffer(frames[1], dtype=ds.pixel_array.dtype).reshape(ds.Rows, ds.Columns)
    assert np.array_equal(arr, ds.pixel_array[6])


def test_frames_of_a_compressed_instance_as_stored_and_decoded(web: WebServer) -> None:
    path = web.files["examples_ybr_color.dcm"]  # 30 frames, JPEG baseline
    study, series, instance = uids(path)
    ds = pydicom.dcmread(path)
    expected = list(generate_frames(ds.PixelData, number_of_frames=30))
    c = client(web)
    got = c.retrieve_instance_frames(
        study, series, instance, [2, 30], media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),)
    )
    assert got == [expected[1], expected[29]]
    r = requests.get(
        f"{web.dicomweb}/studies/{study}/series/{series}/instances/{instance}/frames/3",
        headers={"Accept": 'multipart/related; type="application/octet-stream"'},
    )
    assert r.status_code == 200
    from duckpacs.web.multipart import decode

    (part,) = decode(r.content, r.headers["content-type"])
    pixels = np.frombuffer(part.body, dtype=np.uint8).reshape(ds.Rows, ds.Columns, 3)
    assert np.array_equal(pixels, ds.pixel_array[2])


def test_frame_errors(web: WebServer) -> None:
    study, series, instance = uids(web.files["rtdose.dcm"])
    base = f"{web.dicomweb}/studies/{study}/series/{series}/instances/{instance}/frames"
    assert requests.get(base + "/16").status_code == 404
    assert requests.get(base + "/0").status_code == 400
    assert requests.get(base + "/1,x").status_code == 400
    r = requests.get(base + "/1", headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert r.status_code == 406


def test_unknown_routes_and_methods_answer_json(web: WebServer) -> None:
    r = requests.get(web.dicomweb + "/no/such/resource")
    assert r.status_code == 404 and r.json() == {"error": "Not Found", "status": 404}
    r = requests.delete(web.dicomweb + "/studies")
    assert r.status_code == 405 and r.json()["status"] == 405
    assert "GET" in r.headers["allow"]


def test_unknown_uids_are_404_with_json(web: WebServer) -> None:
    for path in (
        "/studies/1.2.3",
        "/studies/1.2.3/metadata",
        "/studies/1.2.3/series/4.5/instances/6.7/frames/1",
        "/studies/1.2.3/thumbnail",
    ):
        r = requests.get(web.dicomweb + path)
        assert r.status_code == 404, path
        assert r.json()["status"] == 404


def test_rendered_and_thumbnail(web: WebServer) -> None:
    study, series, instance = uids(web.files["CT_small.dcm"])
    c = client(web)
    jpeg = c.retrieve_instance_rendered(study, series, instance, media_types=("image/jpeg",))
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    png = c.retrieve_instance_frames_rendered(
        study, series, instance, [1], media_types=("image/png",), params={"window": "40,400"}
    )
    assert Image.open(io.BytesIO(png)).size == (128, 128)
    series_png = c.retrieve_series_rendered(study, series, media_types=("image/png",))
    one_png = c.retrieve_instance_rendered(study, series, instance, media_types=("image/png",))
    assert Image.open(io.BytesIO(series_png)).tobytes() == Image.open(io.BytesIO(one_png)).tobytes()
    r = requests.get(f"{web.dicomweb}/studies/{study}/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    for url in (
        f"/studies/{study}/thumbnail",
        f"/studies/{study}/series/{series}/thumbnail",
        f"/studies/{study}/series/{series}/instances/{instance}/thumbnail?viewport=64,64",
    ):
        r = requests.get(web.dicomweb + url, headers={"Accept": "image/png"})
        assert r.status_code == 200, url
        assert r.headers["content-type"] == "image/png"
        assert max(Image.open(io.BytesIO(r.content)).size) <= 128
    bad = requests.get(
        f"{web.dicomweb}/studies/{study}/series/{series}/instances/{instance}/rendered",
        params={"window": "40"},
    )
    assert bad.status_code == 400
    gif = requests.get(
        f"{web.dicomweb}/studies/{study}/series/{series}/instances/{instance}/rendered",
        headers={"Accept": "image/gif"},
    )
    assert gif.status_code == 406


# --- STOW-RS ---------------------------------------------------------------------------------


def _new_instance() -> pydicom.Dataset:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def test_store_instances_then_find_and_retrieve_them(web: WebServer) -> None:
    c = client(web)
    datasets = [_new_instance() for _ in range(2)]
    datasets[1].StudyInstanceUID = datasets[0].StudyInstanceUID
    response = c.store_instances(datasets)
    stored = response.ReferencedSOPSequence
    assert {i.ReferencedSOPInstanceUID for i in stored} == {d.SOPInstanceUID for d in datasets}
    assert "FailedSOPSequence" not in response
    study = str(datasets[0].StudyInstanceUID)
    assert len(c.search_for_instances(study)) == 2
    back = c.retrieve_instance(
        study, str(datasets[1].SeriesInstanceUID), str(datasets[1].SOPInstanceUID)
    )
    assert back.PatientName == datasets[1].PatientName


def test_store_reports_per_instance_failures(web: WebServer) -> None:
    good, other = _new_instance(), _new_instance()
    study = str(good.StudyInstanceUID)
    buf = io.BytesIO()
    good.save_as(buf)
    other_buf = io.BytesIO()
    other.save_as(other_buf)
    boundary = "b0undary"
    body = (
        b"".join(
            [
                b"--"
                + boundary.encode()
                + b"\r\nContent-Type: application/dicom\r\n\r\n"
                + data
                + b"\r\n"
                for data in (buf.getvalue(), b"not dicom at all", other_buf.getvalue())
            ]
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    r = requests.post(
        f"{web.dicomweb}/studies/{study}",
        data=body,
        headers={
            "Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}",
            "Accept": "application/dicom+json",
        },
    )
    assert r.status_code == 202
    result = r.json()
    failed = result["00081198"]["Value"]
    reasons = sorted(value(f, "00081197") for f in failed)
    assert reasons == [0xA900, 0xC000]
    assert value(result["00081199"]["Value"][0], "00081155") == str(good.SOPInstanceUID)
    # Every instance refused: 409.
    r = requests.post(
        f"{web.dicomweb}/studies",
        data=b"--x\r\nContent-Type: application/dicom\r\n\r\njunk\r\n--x--\r\n",
        headers={"Content-Type": "multipart/related; type=application/dicom; boundary=x"},
    )
    assert r.status_code == 409
    r = requests.post(f"{web.dicomweb}/studies", data=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = requests.post(
        f"{web.dicomweb}/studies",
        data=b"no boundary here",
        headers={"Content-Type": "multipart/related; type=application/dicom; boundary=zz"},
    )
    assert r.status_code == 400


# --- WADO-URI ---------------------------------------------------------------------------------


def test_wado_uri(web: WebServer) -> None:
    path = web.files["CT_small.dcm"]
    study, series, instance = uids(path)
    params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": instance}
    r = requests.get(web.url + "/wado", params={**params, "contentType": "application/dicom"})
    assert r.status_code == 200 and r.content == path.read_bytes()
    r = requests.get(web.url + "/wado", params=params)
    assert r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (128, 128)
    r = requests.get(
        web.url + "/wado",
        params={
            **params,
            "contentType": "image/png",
            "rows": "64",
            "windowCenter": "40",
            "windowWidth": "400",
        },
    )
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)
    assert requests.get(web.url + "/wado", params={**params, "requestType": "X"}).status_code == 400
    missing = requests.get(web.url + "/wado", params={**params, "objectUID": "1.2.3"})
    assert missing.status_code == 404
    r = requests.get(web.url + "/wado", params={**params, "contentType": "text/html"})
    assert r.status_code == 406


@pytest.mark.parametrize("origin", ["https://viewer.example.org"])
def test_cors_is_off_by_default(web: WebServer, origin: str) -> None:
    r = requests.get(web.dicomweb + "/studies", headers={"Origin": origin})
    assert "access-control-allow-origin" not in r.headers


def test_index_rows_as_dicom_text_become_dicom_json() -> None:
    """The DuckDB index returns DICOM text with backslash-separated values."""
    from duckpacs import _core

    row = {
        "PatientName": "Doe^Jane",
        "ModalitiesInStudy": "CT\\MR",
        "NumberOfStudyRelatedInstances": "12",
        "PixelSpacing": "0.5\\0.5",
        "Rows": "512",
        "StudyDescription": "",
        "ImageComments": "a\\b stays one value",
        "ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2.3"}],
        "AccessionNumber": None,
    }
    (out,) = json.loads(_core.rows_json([row]))
    assert out["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert out["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert out["00201208"] == {"vr": "IS", "Value": [12]}
    assert out["00280030"] == {"vr": "DS", "Value": [0.5, 0.5]}
    assert out["00280010"] == {"vr": "US", "Value": [512]}
    assert out["00081030"] == {"vr": "LO"}
    assert out["00204000"] == {"vr": "LT", "Value": ["a\\b stays one value"]}
    assert out["00081115"]["Value"][0]["0020000E"] == {"vr": "UI", "Value": ["1.2.3"]}
    assert out["00080050"] == {"vr": "SH"}
    assert list(out) == sorted(out)


def test_stow_of_a_single_application_dicom_body(web: WebServer) -> None:
    """(The size cap, http.max_body, is in test_web_hardening.)"""
    ds = _new_instance()
    buf = io.BytesIO()
    ds.save_as(buf)
    r = requests.post(
        f"{web.dicomweb}/studies",
        data=buf.getvalue(),
        headers={"Content-Type": "application/dicom"},
    )
    assert r.status_code == 200
    assert value(r.json()["00081199"]["Value"][0], "00081155") == str(ds.SOPInstanceUID)
