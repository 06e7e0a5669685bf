"""Conformance of ``duckpacs dump --json`` (``_core.dump_json``) with pydicom.

For every pydicom test file, every synthetic file (``tests/synthetic.py``) and the files of the
optional shared corpus (``tests/corpus.py``), our DICOM JSON model
(PS3.18 F.2) must agree with ``pydicom.Dataset.to_json_dict()`` element for element: tags,
VRs, values, nested sequences, person names. Bulk data (binary VRs) is compared by tag and VR
only, never by value. The deliberate differences below are applied to pydicom's side before
comparing, each with the section of the standard that justifies ours:

D1  PS3.5 6.2 (Table 6.2-1): leading and trailing spaces are not significant in AE, AS, CS,
    DA, DS, DT, IS, LO, PN, SH, TM, UC, UI; we trim each value of a multi-valued element,
    pydicom trims only the end of the whole value ("DERIVED \\PRIMARY" -> "DERIVED ").
D2  PS3.18 F.2.5: an empty value inside a multi-valued attribute is JSON ``null``; pydicom
    writes ``""``.
D3  PS3.5 7.8.1 and 6.2.2: a private data element whose VR is not in the file (implicit VR, or
    explicit UN) is reported as UN with its bytes kept; we ship no private dictionary, pydicom
    applies its own (e.g. Siemens ``0019,1010`` as SH). Such elements are compared by tag only.

Files whose reading fails on one side are listed in ``EXPECTED_REJECTIONS`` with both reasons.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest

from duckpacs import _core
from duckpacs.errors import ParseError
from tests.corpus import iter_gunzipped, pydicom_test_files, shared_corpus_files, synthetic_files

BINARY_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}
SIGNIFICANT_LEADING_SPACE = {"LT", "ST", "UT", "UR"}

# file name -> (our reason, pydicom's behaviour). We refuse truncated data: an archive must not
# store a file it cannot give back whole; pydicom reads what is there and stops.
EXPECTED_REJECTIONS: dict[str, tuple[str, str]] = {
    "MR_truncated.dcm": (
        "Pixel Data value length 8192 runs past the end of the file",
        "accepted: reads the 8130 bytes that are there",
    ),
    "rtplan_truncated.dcm": (
        "(300A,00B0) value length runs past the end of the file",
        "accepted: stops at the end of the file",
    ),
    "DICOMDIR-nooffset": (
        "last directory record item (length 248) runs 24 bytes past the end of the file",
        "accepted: reads the truncated item",
    ),
    "no_meta.dcm": (
        "first element (0820,0500) claims 173 MB: the file starts one byte into an element",
        "accepted: returns that single nonsense element",
    ),
    "emri_small_jpeg_2k_lossless_too_short.dcm": (
        "encapsulated Pixel Data ends without its sequence delimiter",
        "accepted: reads the fragments that are there",
    ),
    "badVR.dcm": (
        "accepted: the IS value '1A' is kept as a string",
        "rejected: ValueError invalid literal for int() with base 10: '1A'",
    ),
}

# What our ParseError says for each file we reject (checked, so the reasons above stay true).
OUR_ERRORS = {
    "MR_truncated.dcm": "at byte 1488 in (7FE0,0010): value length 8192 runs past the end",
    "rtplan_truncated.dcm": "in (300A,00B0): value length 976 runs past the end",
    "DICOMDIR-nooffset": "item length 248 runs past the end of its sequence",
    "no_meta.dcm": "at byte 0 in (0820,0500): value length 173228800 runs past the end",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "expected a fragment item or sequence delimiter",
}

# Not DICOM at all: both reject (pydicom with force=True returns an empty or garbage dataset).
NOT_DICOM = {"crayons.icc", "README", "rtplan.dump", "rtstruct.dump"}


def _is_private(tag: str) -> bool:
    return int(tag[:4], 16) % 2 == 1


def _normalise_pydicom(vr: str, values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, str):
            v = v.rstrip(" \0") if vr in SIGNIFICANT_LEADING_SPACE else v.strip(" \0")  # D1
            out.append(None if v == "" else v)  # D2
        else:
            out.append(v)
    return out


def _differences(ours: dict[str, Any], theirs: dict[str, Any], path: str = "") -> list[str]:
    diffs: list[str] = []
    for tag in sorted(set(ours) | set(theirs)):
        where = f"{path}{tag}"
        if tag not in ours or tag not in theirs:
            side = "pydicom" if tag in theirs else "ours"
            diffs.append(f"{where}: only in {side}")
            continue
        a, b = ours[tag], theirs[tag]
        if a["vr"] == "UN" and _is_private(tag):  # D3
            continue
        if a["vr"] != b["vr"]:
            diffs.append(f"{where}: VR {a['vr']} vs pydicom {b['vr']}")
            continue
        if a["vr"] in BINARY_VRS:
            continue
        if a["vr"] == "SQ":
            items_a, items_b = a.get("Value", []), b.get("Value", [])
            if len(items_a) != len(items_b):
                diffs.append(f"{where}: {len(items_a)} items vs pydicom {len(items_b)}")
            for i, (x, y) in enumerate(zip(items_a, items_b, strict=False)):
                diffs.extend(_differences(x, y, f"{where}[{i}]."))
            continue
        theirs_value = _normalise_pydicom(a["vr"], b.get("Value", []))
        if all(v is None for v in theirs_value) and len(theirs_value) <= 1:
            theirs_value = []
        if a.get("Value", []) != theirs_value:
            diffs.append(f"{where}: {a.get('Value')} vs pydicom {theirs_value}")
    return diffs


def _check(path: Path) -> None:
    data = path.read_bytes()
    name = path.name
    try:
        ours: dict[str, Any] | None = json.loads(_core.dump_json(data))
        our_error = ""
    except ParseError as e:
        ours, our_error = None, str(e)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            theirs: dict[str, Any] | None = pydicom.dcmread(path, force=True).to_json_dict()
            their_error = ""
        except Exception as e:  # pydicom raises many types on bad input
            theirs, their_error = None, f"{type(e).__name__}: {e}"
    if name in NOT_DICOM:
        assert ours is None, f"{name} is not DICOM but we parsed it"
        return
    if name in EXPECTED_REJECTIONS:
        assert (ours is None) != (theirs is None), (name, our_error, their_error)
        if ours is None:
            assert OUR_ERRORS[name] in our_error, (name, our_error)
        return
    assert ours is not None, f"{name}: we reject ({our_error}), pydicom: {their_error or 'ok'}"
    assert theirs is not None, f"{name}: pydicom rejects ({their_error}), we accept"
    diffs = _differences(ours, theirs)
    assert not diffs, f"{name}: " + "; ".join(diffs[:10])


def _sample(paths: list[Path], every: int) -> list[Path]:
    """All files of the small folders, every n-th file of the two large series."""
    big = ("mr_toshiba_dti", "mr_philips_classic_gz")
    kept = []
    for i, p in enumerate(paths):
        if any(part in big for part in p.parts) and i % every:
            continue
        kept.append(p)
    return kept


@pytest.mark.parametrize("path", pydicom_test_files(), ids=lambda p: p.name)
def test_pydicom_test_files_agree(path: Path) -> None:
    _check(path)


def test_synthetic_and_shared_corpus_agree(tmp_path: Path) -> None:
    """Every synthetic file (each transfer syntax, private and nested sequences, character
    sets, multi-frame, no preamble), and a sample of the shared corpus when present."""
    files = synthetic_files() + _sample(shared_corpus_files(), 40)
    for path in iter_gunzipped(files, tmp_path):
        _check(path)


@pytest.mark.slow
def test_every_corpus_file_agrees(tmp_path: Path) -> None:
    for path in iter_gunzipped(synthetic_files() + shared_corpus_files(), tmp_path):
        _check(path)
