"""multipart/related encode/decode and lenient Accept parsing (RFC 2387, PS3.18 8.6, 8.7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from duckpacs.web import multipart
from duckpacs.web.multipart import MultipartError, parse_accept, parse_media_type


def test_quoted_and_unquoted_type_parameter_are_the_same() -> None:
    quoted = parse_media_type('multipart/related; type="application/dicom"; transfer-syntax=*')
    unquoted = parse_media_type("multipart/related;type=application/dicom;transfer-syntax=*")
    assert quoted == unquoted
    assert quoted.related_type == "application/dicom"
    assert quoted.transfer_syntax == "*"


def test_accept_orders_by_quality_and_keeps_commas_inside_quotes() -> None:
    header = (
        'multipart/related; type="application/dicom"; q=0.5, '
        'application/dicom+json, multipart/related; type="image/jpeg,image/png"; q=0.8, '
        "image/gif; q=0"
    )
    ranges = parse_accept(header)
    assert [r.type for r in ranges] == [
        "application/dicom+json",
        "multipart/related",
        "multipart/related",
    ]
    assert ranges[1].related_type == "image/jpeg,image/png"
    assert ranges[2].q == 0.5


def test_missing_accept_means_anything() -> None:
    (any_type,) = parse_accept(None)
    assert any_type.matches("image/png") and any_type.matches("application/dicom")
    assert parse_media_type("*").type == "*/*"
    assert parse_media_type("image/*").matches("image/jpeg")
    assert not parse_media_type("image/*").matches("application/dicom")


@pytest.mark.parametrize("bad", ["dicom", "/x", "a/b; q=high"])
def test_bad_media_types(bad: str) -> None:
    with pytest.raises(MultipartError):
        parse_media_type(bad)


def test_encode_produces_rfc2046_delimiters() -> None:
    body = b"".join(multipart.encode("BND", [(b"one", {"Content-Type": "a/b"}), (b"two\r\n", {})]))
    assert body == (b"--BND\r\nContent-Type: a/b\r\n\r\none\r\n--BND\r\n\r\ntwo\r\n\r\n--BND--\r\n")
    parts = multipart.decode(body, "multipart/related; boundary=BND")
    assert [p.body for p in parts] == [b"one", b"two\r\n"]
    assert parts[0].content_type == "a/b"
    assert parts[1].headers == {}


def test_decode_is_lenient_where_safe() -> None:
    # LF line ends, no closing delimiter, quoted boundary, preamble before the first part.
    body = b'preamble\n--"q"\nContent-Type: x/y\n\nA\n--"q"\nContent-Type: x/y\n\nB\n--"q"'
    parts = multipart.decode(body, 'multipart/related; boundary="\\"q\\""')
    assert [p.body for p in parts] == [b"A", b"B"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"--a\r\n\r\nx\r\n--a--", None),
        (b"--a\r\n\r\nx\r\n--a--", "application/dicom"),
        (b"--a\r\n\r\nx\r\n--a--", "multipart/related"),
        (b"nothing", "multipart/related; boundary=a"),
        (b"--a\r\nContent-Type: x", "multipart/related; boundary=a"),
        (b"--a\r\n\r\nno end", "multipart/related; boundary=a"),
        (b"--a--\r\n", "multipart/related; boundary=a"),
    ],
)
def test_decode_errors(body: bytes, content_type: str | None) -> None:
    with pytest.raises(MultipartError):
        multipart.decode(body, content_type)


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_round_trip_of_arbitrary_bytes(bodies: list[bytes]) -> None:
    boundary = multipart.new_boundary()
    encoded = b"".join(multipart.encode(boundary, [(b, {"Content-Type": "x/y"}) for b in bodies]))
    ctype = multipart.content_type(boundary, "x/y")
    assert [p.body for p in multipart.decode(encoded, ctype)] == bodies
