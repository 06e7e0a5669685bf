"""Every web route against random and boundary input (Hypothesis), over `duckpacs serve` and a
real archive (store + DuckDB index): never a 5xx, never a traceback in a body, the server
alive and its memory bounded afterwards.

``make test`` runs a few hundred examples per route; ``make fuzz`` sets
``DUCKPACS_FUZZ_EXAMPLES`` to tens of thousands.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pydicom
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from tests.web_support.hostile import HostileTarget, hostile_target

EXAMPLES = int(os.environ.get("DUCKPACS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SEEDED = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtdose.dcm", "SC_rgb_rle_2frame.dcm")
# Memory the server may keep after the run beyond what it held once warmed up: caches
# (metadata, DuckDB's buffer) fill, nothing grows per request.
RSS_GROWTH = 256 << 20


def _testdata(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None
    return Path(path).read_bytes()


class Target:
    """The running server, the UIDs it holds, and one HTTP session."""

    def __init__(self, hostile: HostileTarget) -> None:
        self.hostile = hostile
        self.http = requests.Session()
        self.uids: list[tuple[str, str, str]] = []
        for name in SEEDED:
            ds = pydicom.dcmread(io.BytesIO(_testdata(name)), stop_before_pixels=True)
            self.uids.append((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
            r = self.http.post(
                hostile.url + "/dicom-web/studies",
                data=_testdata(name),
                headers={"Content-Type": "application/dicom"},
            )
            assert r.status_code in (200, 202), r.text
        self.baseline = 0

    def send(self, method: str, path: str, **kw: object) -> requests.Response:
        r = self.http.request(method, self.hostile.url + path, timeout=60, **kw)  # type: ignore[arg-type]
        assert r.status_code < 500 or r.status_code == 507, (method, path, r.status_code, r.text)
        assert b"Traceback" not in r.content[:100000], (method, path)
        return r


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with hostile_target(tmp_path_factory.mktemp("fuzz") / "archive") as hostile:
        t = Target(hostile)
        # Warm up every path once, so the baseline holds the caches and imports.
        for study, series, sop in t.uids:
            base = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
            for suffix in ("", "/metadata", "/rendered", "/thumbnail", "/frames/1"):
                t.http.get(hostile.url + base + suffix)
        t.baseline = hostile.rss()
        yield t
        assert hostile.alive(), "the server died"
        grown = hostile.rss() - t.baseline
        assert grown < RSS_GROWTH, f"RSS grew by {grown >> 20} MiB"
        assert not [line for line in hostile.log if "internal error" in line]


# --- strategies ---------------------------------------------------------------------------

BOUNDARY_INTS = [
    "0",
    "1",
    "-1",
    "2147483647",
    "2147483648",
    "9223372036854775807",
    "9223372036854775808",
    "99999999999999999999",
    "1e3",
    "0x10",
    " 1",
    "1.5",
    "\u00b2",
    "\u0661",
    "1" * 5000,
    "",
]
KEYWORDS = [
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "ModalitiesInStudy",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "AccessionNumber",
    "00100010",
    "0020000D",
    "00080020",
    "NumberOfFrames",
    "Rows",
    "PixelData",
    "ReferencedImageSequence",
    "ffffffff",
    "0008103E",
    "PatientBirthDate",
]
MEDIA = [
    "*/*",
    "application/dicom+json",
    "application/json",
    "application/dicom",
    "multipart/related",
    "multipart/related; type=application/dicom",
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    "multipart/related; type=application/octet-stream; transfer-syntax=*",
    "multipart/related; type=image/jpeg",
    "image/jpeg",
    "image/png",
    "image/*",
    "text/html",
    "application/octet-stream",
    "*",
    "a/b;q=x",
    "*/*;q=0",
    ";;;",
    ",",
]
SYNTAXES = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
    "*",
    "x",
]

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
numberish = st.one_of(
    st.sampled_from(BOUNDARY_INTS), st.integers(-(10**30), 10**30).map(str), st.floats().map(str)
)
value = st.one_of(
    text,
    numberish,
    st.sampled_from(
        ["*", "?", "-", "\\", "A*", "19000101-", "=", "all", "true", "%", "'", '"', "\x00"]
    ),
)


def accept_header() -> st.SearchStrategy[str]:
    media = st.one_of(
        st.sampled_from(MEDIA),
        st.sampled_from(MEDIA).flatmap(
            lambda m: st.sampled_from(SYNTAXES).map(lambda s: f"{m}; transfer-syntax={s}")
        ),
        ascii_text,
    )
    return st.lists(media, min_size=1, max_size=3).map(", ".join)


def query(names: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(names, value).map(lambda nv: f"{quote(nv[0])}={quote(nv[1])}")
    raw_junk = st.sampled_from(["%", "%zz", "%ff%fe", "&&", "=", "a=%00", "a", ";", "%E2%82"])
    return st.lists(st.one_of(pair, raw_junk), max_size=6).map("&".join)


def segment(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(known),
        st.sampled_from(known).map(lambda u: u + "9"),
        text.filter(bool).map(lambda s: quote(s, safe="")),
        st.sampled_from(["1", "0", "*", "..", "%2e%2e", "1.2.3", "a" * 300, "1" * 5000]),
    )


def headers(accept: str | None) -> dict[str, str]:
    # requests refuses to send values with leading or trailing white space.
    return {} if accept is None or accept != accept.strip() else {"Accept": accept}


# --- QIDO-RS ------------------------------------------------------------------------------

QIDO_NAMES = st.one_of(
    st.sampled_from(["limit", "offset", "includefield", "fuzzymatching", "accept", *KEYWORDS]),
    text.filter(bool),
)


@FUZZ
@given(
    level=st.sampled_from(["studies", "series", "instances"]),
    scoped=st.integers(0, 2),
    q=query(QIDO_NAMES),
    paging=st.tuples(st.sampled_from(["limit", "offset"]), numberish),
    accept=st.one_of(st.none(), accept_header()),
    data=st.data(),
)
def test_qido_never_fails(
    target: Target,
    level: str,
    scoped: int,
    q: str,
    paging: tuple[str, str],
    accept: str | None,
    data: st.DataObject,
) -> None:
    study, series, _ = data.draw(st.sampled_from(target.uids))
    path = "/dicom-web"
    if scoped >= 1 and level != "studies":
        path += f"/studies/{data.draw(segment([study]))}"
    if scoped == 2 and level == "instances":
        path += f"/series/{data.draw(segment([series]))}"
    full = f"{path}/{level}?{q}&{paging[0]}={quote(paging[1])}"
    target.send("GET", full, headers=headers(accept))


def test_offset_beyond_any_integer_is_a_400_naming_it(target: Target) -> None:
    r = target.send("GET", "/dicom-web/studies?offset=99999999999999999999")
    assert r.status_code == 400
    assert "offset" in r.json()["error"]


# --- WADO-RS (instances, frames, bulk data, metadata) ---------------------------------------

WADO_TAILS = ["", "/metadata", "/frames/{n}", "/bulkdata/{tag}", "/bulkdata/{n}/{n2}"]


@FUZZ
@given(
    depth=st.integers(1, 3),
    tail=st.sampled_from(WADO_TAILS),
    n=st.one_of(
        st.sampled_from(["1", "2", "1,2", "0", "1,,2", "99999999999999999999", "\u00b2"]), numberish
    ),
    n2=numberish,
    tag=st.one_of(
        st.sampled_from(["7FE00010", "00291001", "00100010", "zz", "7fe0001"]), ascii_text
    ),
    q=query(st.sampled_from(["accept", "transfer-syntax", "charset"])),
    accept=st.one_of(st.none(), accept_header()),
    method=st.sampled_from(["GET", "GET", "HEAD"]),
    data=st.data(),
)
def test_wado_rs_never_fails(
    target: Target,
    depth: int,
    tail: str,
    n: str,
    n2: str,
    tag: str,
    q: str,
    accept: str | None,
    method: str,
    data: st.DataObject,
) -> None:
    uids = data.draw(st.sampled_from(target.uids))
    path = "/dicom-web"
    for kind, uid in zip(("studies", "series", "instances")[:depth], uids, strict=False):
        path += f"/{kind}/{data.draw(segment([uid]))}"
    if depth == 3 or tail in ("", "/metadata"):
        path += tail.format(n=quote(n, safe=","), n2=quote(n2), tag=quote(tag, safe=""))
    target.send(method, f"{path}?{q}", headers=headers(accept))


# --- rendered and thumbnail -------------------------------------------------------------------

window = st.one_of(
    st.tuples(
        numberish, numberish, st.sampled_from(["", ",linear", ",sigmoid", ",LINEAR_EXACT", ",x"])
    ).map(lambda t: f"{t[0]},{t[1]}{t[2]}"),
    st.sampled_from(["40,400", "nan,1", "inf,inf", "0,0", "1,1e308", ",", "a,b"]),
    text,
)
viewport = st.one_of(
    st.lists(st.integers(-10, 9000).map(str), min_size=1, max_size=7).map(",".join),
    st.sampled_from(["64,64", "128,128,0,0,10,10", "1,1", "8193,1", "99999999999999999999,1"]),
    text,
)


@FUZZ
@given(
    depth=st.integers(1, 4),
    kind=st.sampled_from(["rendered", "thumbnail"]),
    frames=st.sampled_from(["1", "2", "1,2", "0", "x", "99999999999999999999"]),
    params=st.fixed_dictionaries(
        {},
        optional={
            "window": window,
            "viewport": viewport,
            "quality": numberish,
            "accept": st.sampled_from(MEDIA),
        },
    ),
    accept=st.one_of(st.none(), accept_header()),
    data=st.data(),
)
def test_rendered_never_fails(
    target: Target,
    depth: int,
    kind: str,
    frames: str,
    params: dict[str, str],
    accept: str | None,
    data: st.DataObject,
) -> None:
    uids = data.draw(st.sampled_from(target.uids))
    path = "/dicom-web"
    for level, uid in zip(("studies", "series", "instances"), uids[: min(depth, 3)], strict=False):
        path += f"/{level}/{data.draw(segment([uid]))}"
    if depth == 4:
        path += f"/frames/{quote(frames, safe=',')}"
    q = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    target.send("GET", f"{path}/{kind}?{q}", headers=headers(accept))


# --- WADO-URI ---------------------------------------------------------------------------------


@FUZZ
@given(
    params=st.fixed_dictionaries(
        {"requestType": st.sampled_from(["WADO", "WADO", "wado", "", "X"])},
        optional={
            "contentType": st.one_of(st.sampled_from(MEDIA), ascii_text),
            "transferSyntax": st.sampled_from(SYNTAXES),
            "rows": numberish,
            "columns": numberish,
            "frameNumber": numberish,
            "imageQuality": numberish,
            "windowCenter": numberish,
            "windowWidth": numberish,
            "anonymize": st.sampled_from(["yes", "no"]),
            "charset": text,
        },
    ),
    at_root=st.booleans(),
    data=st.data(),
)
def test_wado_uri_never_fails(
    target: Target, params: dict[str, str], at_root: bool, data: st.DataObject
) -> None:
    study, series, sop = data.draw(st.sampled_from(target.uids))
    uids = {"studyUID": study, "seriesUID": series, "objectUID": sop}
    for key, uid in uids.items():
        if data.draw(st.booleans()):
            params[key] = uid
        elif data.draw(st.booleans()):
            params[key] = data.draw(text)
    path = "/wado" if at_root else "/dicom-web/wado"
    q = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
    target.send("GET", f"{path}?{q}")


# --- STOW-RS ----------------------------------------------------------------------------------


def _part_body(target: Target) -> st.SearchStrategy[bytes]:
    dicom = st.sampled_from(SEEDED).map(_testdata)
    return st.one_of(
        dicom,
        st.tuples(dicom, st.integers(0, 4000)).map(lambda t: t[0][: t[1]]),  # truncated
        st.tuples(dicom, st.integers(0, 3000), st.binary(min_size=1, max_size=8)).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]  # overwritten bytes
        ),
        st.binary(max_size=300),
        st.just(b"DICM" * 40),
    )


@FUZZ
@given(data=st.data())
def test_stow_never_fails(target: Target, data: st.DataObject) -> None:
    boundary = data.draw(st.sampled_from(["b0undary", "x", "--", "a b", "\u00e9"]) | ascii_text)
    parts = data.draw(st.lists(_part_body(target), max_size=3))
    part_type = data.draw(st.sampled_from(["application/dicom", "application/json", ""]))
    chunks = []
    for body in parts:
        head = f"Content-Type: {part_type}\r\n" if part_type else ""
        chunks.append(
            b"--" + boundary.encode() + b"\r\n" + head.encode() + b"\r\n" + body + b"\r\n"
        )
    if data.draw(st.booleans()):
        chunks.append(b"--" + boundary.encode() + b"--\r\n")
    body = b"".join(chunks)
    if data.draw(st.booleans()):
        body = data.draw(st.binary(max_size=200)) + body
    content_type = data.draw(
        st.one_of(
            st.just(f'multipart/related; type="application/dicom"; boundary="{boundary}"'),
            st.just(f"multipart/related; type=application/dicom; boundary={boundary}"),
            st.just(f"multipart/related; type=image/png; boundary={boundary}"),
            st.sampled_from(["application/dicom", "multipart/related", "text/plain", "", "/"]),
            ascii_text,
        )
    )
    study = data.draw(st.one_of(st.none(), st.sampled_from([u[0] for u in target.uids]), text))
    path = "/dicom-web/studies" + ("" if study is None else "/" + quote(study, safe=""))
    hdrs = {"Content-Type": content_type} if content_type.strip() == content_type != "" else {}
    target.send("POST", path, data=body, headers=hdrs)


# --- the UI's /api ----------------------------------------------------------------------------


@FUZZ
@given(
    route=st.sampled_from(
        [
            "/api/login",
            "/api/logout",
            "/api/me",
            "/api/tokens",
            "/api/status",
            "/api/studies/{s}/archive.zip",
            "/api/admin/queue",
            "/api/peers",
            "/api/admin/queue/retry",
            "/api/admin/queue/drop",
            "/api/studies/{s}/send",
            "/",
            "/admin",
            "/static/{x}",
        ]
    ),
    method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"]),
    body=st.one_of(
        st.binary(max_size=200),
        st.sampled_from(
            [
                b"{}",
                b"[]",
                b"null",
                b'{"user": 1}',
                b'{"user":"a","password":"b"}',
                b'{"ids": [1, "x"]}',
                b'{"ids": [99999999999999999999]}',
                b'{"to": "nowhere"}',
                b'{"destination": 5}',
                b"{" * 5000,
            ]
        ),
    ),
    q=query(st.sampled_from(["limit", "state", "to"])),
    data=st.data(),
)
def test_api_never_fails(
    target: Target, route: str, method: str, body: bytes, q: str, data: st.DataObject
) -> None:
    study = data.draw(st.one_of(st.sampled_from([u[0] for u in target.uids]), text))
    static = data.draw(st.sampled_from(["app.js", "../app.py", "%2e%2e/app.py", "x", ""]))
    path = route.format(s=quote(study, safe=""), x=static)
    target.send(method, f"{path}?{q}", data=body, headers={"Content-Type": "application/json"})
