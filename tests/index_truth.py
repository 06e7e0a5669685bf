"""Ground truth for the index tests: the test corpora read with pydicom, and an independent
implementation of PS3.4 C.2.2.2 matching over pydicom datasets (plain Python, no SQL)."""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

import pydicom
import pydicom.data
from pydicom.dataset import Dataset

from tests import synthetic
from tests.corpus import shared_folder, synthetic_files, synthetic_folder


def pydicom_files() -> list[str]:
    """Every DICOM file shipped inside the pydicom wheel (test files and charset files)."""
    base = os.path.dirname(pydicom.data.__file__)
    return sorted(glob.glob(f"{base}/test_files/*.dcm")) + sorted(
        glob.glob(f"{base}/charset_files/*.dcm")
    )


def corpus_files() -> list[str]:
    """Files with private blocks, nested sequences, several character sets and a study of
    several series: every synthetic file but the gzipped ones and most of the long MR series,
    then (when present) the Agfa files and part of the Toshiba series of the shared corpus."""
    keep = [p for p in synthetic_files(include_gz=False) if p.parent.name != synthetic.MR_SERIES]
    files = sorted(synthetic_folder(synthetic.MR_SERIES).glob("*.dcm"))[:10] + keep
    agfa = shared_folder("dcm_qa_agfa")
    if agfa is not None:
        files += sorted(p for p in agfa.rglob("*") if p.suffix.lower() in (".dcm", ".img"))
    toshiba = shared_folder("mr_toshiba_dti")
    if toshiba is not None:
        files += sorted(toshiba.glob("*.dcm"))[:30]
    return [str(p) for p in files]


def read(path: str) -> Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True)
            str(ds)  # decode every element now: unreadable files are left out here
        except Exception:
            return None
    if not str(ds.get("SOPInstanceUID", "") or ""):
        return None
    return ds


@dataclass
class Record:
    ds: Dataset
    extra: dict[str, Any]


def load(paths: Iterable[str]) -> list[Record]:
    out = []
    for i, p in enumerate(paths):
        ds = read(p)
        if ds is not None:
            extra = {
                "pack": 7,
                "offset": i * 1000,
                "length": 999,
                "sha256": f"{i:064x}",
                "size": 999,
                "source_ae": "TEST",
            }
            out.append(Record(ds, extra))
    return out


def distinct(count: int) -> list[Record]:
    """``count`` records of the pydicom files with distinct SOP Instance UIDs (some files
    share one), each at its own store location."""
    by_uid = {str(r.ds.SOPInstanceUID): r for r in load(pydicom_files()[:40])}
    assert len(by_uid) >= count
    return list(by_uid.values())[:count]


def latest(records: list[Record]) -> list[Record]:
    """One record per SOP Instance UID, the last one winning (as the index does)."""
    by_uid: dict[str, Record] = {}
    for r in records:
        by_uid[str(r.ds.SOPInstanceUID)] = r
    return list(by_uid.values())


# -- values ---------------------------------------------------------------------------------


def values(ds: Dataset, keyword_or_tag: str | int) -> list[str] | None:
    """Text values of an element (None when absent), as the index stores them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            elem = ds[keyword_or_tag]
        except KeyError:
            return None
    if elem is None:
        return None
    v = elem.value
    if v is None or v == "":
        return []
    items = list(v) if elem.VM > 1 or isinstance(v, list) else [v]
    return [str(x).strip(" \x00") for x in items]


def wildcard(pattern: str, text: str, flags: int = 0) -> bool:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, text, flags | re.S) is not None


def pn_match(pattern: str, value: str, fuzzy: bool = False) -> bool:
    if fuzzy and not pattern.endswith("*"):
        pattern += "*"
    flags = re.I if fuzzy else 0
    candidates = [value, *value.split("=")]
    return any(wildcard(pattern, c, flags) for c in candidates)


def da(text: str) -> date | None:
    try:
        return datetime.strptime(text.replace(".", ""), "%Y%m%d").date()
    except ValueError:
        return None


def tm(text: str) -> time | None:
    t = text.replace(":", "")
    whole, _, frac = t.partition(".")
    if len(whole) not in (2, 4, 6):
        return None
    whole = whole.ljust(6, "0")
    try:
        return time(
            int(whole[:2]), int(whole[2:4]), int(whole[4:6]), int((frac[:6] or "0").ljust(6, "0"))
        )
    except ValueError:
        return None


def match_value(vr: str, query: str, value: str, fuzzy: bool = False) -> bool:
    """Single/wildcard/range matching of one stored value against one query value."""
    if vr == "PN":
        return pn_match(query, value, fuzzy)
    if vr == "DA":
        v = da(value)
        if v is None:
            return False
        if "-" in query:
            lo, hi = query.split("-")
            return (not lo or v >= da(lo)) and (not hi or v <= da(hi))  # type: ignore[operator]
        return v == da(query)
    if vr == "TM":
        v = tm(value)
        if v is None:
            return False
        lo, _, hi = query.partition("-") if "-" in query else (query, "", query)
        lo_t = tm(lo) if lo else None
        hi_t = _end_of(hi) if hi else None
        return (lo_t is None or v >= lo_t) and (hi_t is None or v <= hi_t)
    if vr in ("DS", "IS", "FL", "FD", "US", "SS", "UL", "SL"):
        try:
            return float(value) == float(query)
        except ValueError:
            return False
    return wildcard(query, value)


def _end_of(text: str) -> time:
    whole = text.replace(":", "").partition(".")[0]
    filled = whole + "5959"[len(whole) - 2 :]
    t = tm(filled)
    assert t is not None
    return t.replace(microsecond=999999)


def match(ds: Dataset, key: str, vr: str, query: str | list[str], fuzzy: bool = False) -> bool:
    """Does one dataset satisfy one query key (any value of a multi-valued attribute)."""
    parts = query if isinstance(query, list) else query.split("\\")
    parts = [p.strip() for p in parts if p.strip()]
    if not parts or "*" in parts:
        return True
    stored = values(ds, key)
    if not stored:
        return False
    return any(match_value(vr, q, v, fuzzy) for q in parts for v in stored)
