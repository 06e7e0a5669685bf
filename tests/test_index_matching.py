"""Every PS3.4 C.2.2.2 matching rule of the index, checked against ground truth computed with
pydicom over the pydicom test files (charset files included), the synthetic corpus (private
blocks, nested sequences, character sets, a study of several series) and the shared corpus when
present.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword

from duckpacs.index import Index
from tests import index_truth as truth
from tests.index_rows import build_batch

UNIQUE = {
    "patient": "PatientID",
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "image": "SOPInstanceUID",
}


@pytest.fixture(scope="module")
def records() -> list[truth.Record]:
    return truth.load(truth.pydicom_files() + truth.corpus_files())


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def index(
    request: pytest.FixtureRequest,
    records: list[truth.Record],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Index]:
    """The same records in each index backend (every test runs on both)."""
    if request.param == "postgres":
        from duckpacs.index.pg.db import PgIndex

        ix: Any = PgIndex.open(request.getfixturevalue("pg_cluster").config())
    else:
        ix = Index.open(tmp_path_factory.mktemp("archive"))
    half = len(records) // 2  # two batches: the level tables must merge across batches
    ix.add_batch(build_batch((r.ds, r.extra) for r in records[:half]))
    ix.add_batch(build_batch((r.ds, r.extra) for r in records[half:]))
    yield ix
    ix.close()


def key_of(key: str) -> str | int:
    compact = key.strip("()").replace(",", "")
    return int(compact, 16) if len(compact) == 8 and compact.upper() == compact else key


def vr_of(key: str) -> str:
    try:
        tag = key_of(key)
        return dictionary_VR(tag if isinstance(tag, int) else tag_for_keyword(tag)).split(" or ")[0]
    except (KeyError, TypeError, ValueError):
        return "LO"


def expected(
    records: list[truth.Record], level: str, query: dict[str, Any], fuzzy: bool = False
) -> set[str]:
    """Unique keys of the entities with an instance matching every key of ``query``."""
    out = set()
    for r in truth.latest(records):
        if all(truth.match(r.ds, key_of(k), vr_of(k), v, fuzzy) for k, v in query.items()):
            unit = truth.values(r.ds, UNIQUE[level])
            out.add(unit[0] if unit else "")
    return out


def found(index: Index, level: str, query: dict[str, Any], fuzzy: bool = False) -> set[str]:
    rows = index.find(level, query, fuzzy=fuzzy)
    return {r[UNIQUE[level]] or "" for r in rows}


def check(
    index: Index,
    records: list[truth.Record],
    level: str,
    query: dict[str, Any],
    fuzzy: bool = False,
    nonempty: bool = True,
) -> set[str]:
    want = expected(records, level, query, fuzzy)
    assert found(index, level, query, fuzzy) == want
    if nonempty:
        assert want, f"query {query} matches nothing in the corpus: the test proves nothing"
    return want


# -- single value, universal, wildcard (C.2.2.2.1, .3, .4) ------------------------------------

SINGLE = [
    ("image", {"Modality": "MR"}),
    ("image", {"PatientID": "4MR1"}),
    ("study", {"PatientName": "Lestrade^G"}),
    ("patient", {"PatientSex": "F"}),
    ("series", {"BodyPartExamined": "HEAD"}),
    ("image", {"Manufacturer": "GE MEDICAL SYSTEMS", "Modality": "CT"}),
]


@pytest.mark.parametrize(("level", "query"), SINGLE)
def test_single_value_matching(
    index: Index, records: list[truth.Record], level: str, query: dict[str, Any]
) -> None:
    check(index, records, level, query)


def test_single_value_is_case_sensitive(index: Index, records: list[truth.Record]) -> None:
    assert check(index, records, "study", {"PatientName": "lestrade^g"}, nonempty=False) == set()


@pytest.mark.parametrize("level", ["patient", "study", "series", "image"])
def test_universal_matching_returns_every_entity(
    index: Index, records: list[truth.Record], level: str
) -> None:
    want = {(truth.values(r.ds, UNIQUE[level]) or [""])[0] for r in truth.latest(records)}
    assert found(index, level, {"PatientName": ""}) == want
    assert found(index, level, {"StudyDescription": "*"}) == want


WILDCARD = [
    ("study", {"PatientName": "Lestrade*"}),
    ("study", {"PatientName": "CompressedSamples^??1"}),
    ("image", {"PatientName": "*^G"}),
    ("series", {"SeriesDescription": "*"}),
    ("image", {"StudyDescription": "*a?e*"}),
    ("patient", {"PatientID": "*EXAMPLE"}),
]


@pytest.mark.parametrize(("level", "query"), WILDCARD)
def test_wildcard_matching(
    index: Index, records: list[truth.Record], level: str, query: dict[str, Any]
) -> None:
    check(index, records, level, query)


def test_wildcard_escapes_sql_like_characters(index: Index) -> None:
    assert index.find("study", {"PatientName": "%"}) == []
    assert index.find("study", {"PatientName": "_estrade^G"}) == []


# -- range matching (C.2.2.2.5) ---------------------------------------------------------------

RANGES = [
    ("study", {"StudyDate": "20000101-"}),
    ("study", {"StudyDate": "-19991231"}),
    ("study", {"StudyDate": "19900101-20101231"}),
    ("image", {"StudyDate": "20040826"}),
    ("study", {"StudyTime": "0900-1200"}),
    ("series", {"SeriesTime": "-1000"}),
    ("image", {"ContentDate": "19950101-20050101"}),
    ("image", {"AcquisitionDate": "20000101-"}),
    ("image", {"AcquisitionTime": "10-"}),
]


@pytest.mark.parametrize(("level", "query"), RANGES)
def test_range_matching(
    index: Index, records: list[truth.Record], level: str, query: dict[str, Any]
) -> None:
    check(index, records, level, query)


def test_partial_time_covers_whole_minute(index: Index, records: list[truth.Record]) -> None:
    some = next(r for r in records if truth.tm((truth.values(r.ds, "StudyTime") or ["x"])[0]))
    hhmm = truth.values(some.ds, "StudyTime")[0][:4]  # type: ignore[index]
    assert str(some.ds.StudyInstanceUID) in found(index, "study", {"StudyTime": hhmm})


def test_malformed_range_is_a_query_error(index: Index) -> None:
    from duckpacs.errors import QueryError

    with pytest.raises(QueryError, match="not a DICOM date"):
        index.find("study", {"StudyDate": "2020-13-45"})


# -- list of UID matching (C.2.2.2.2) ---------------------------------------------------------


def test_uid_list_matching(index: Index, records: list[truth.Record]) -> None:
    uids = sorted({str(r.ds.SOPInstanceUID) for r in records})[:4]
    assert found(index, "image", {"SOPInstanceUID": uids}) == set(uids)
    assert found(index, "image", {"SOPInstanceUID": "\\".join(uids)}) == set(uids)
    studies = sorted({str(r.ds.StudyInstanceUID) for r in records if "StudyInstanceUID" in r.ds})
    assert found(index, "study", {"StudyInstanceUID": studies[:3]}) == set(studies[:3])
    assert found(index, "study", {"StudyInstanceUID": "1.2.3.4.no.such"}) == set()


# -- person names, character sets, fuzzy ------------------------------------------------------

NAMES = [
    "Yamada^Tarou",
    "山田^太郎",
    "やまだ*",
    "Buc^Jérôme",
    "Äneas^Rüdiger",
    "Διονυσιος",
    "Люкceмбypг",
    "قباني^لنزار",
    "שרון^דבורה",
    "洪^吉洞",
    "김희중",
    "Wang^XiaoDong",
    "王^小*",
]


@pytest.mark.parametrize("name", NAMES)
def test_non_ascii_person_names_match_after_decoding(
    index: Index, records: list[truth.Record], name: str
) -> None:
    check(index, records, "patient", {"PatientName": name})
    check(index, records, "image", {"PatientName": name})


@pytest.mark.parametrize("name", ["buc^jÉrÔme", "yamada", "LESTRADE", "compressedsamples^mr"])
def test_fuzzy_person_name_matching(index: Index, records: list[truth.Record], name: str) -> None:
    check(index, records, "study", {"PatientName": name}, fuzzy=True)
    assert found(index, "study", {"PatientName": name}) == set()


# -- numbers, private tags, nested attributes -------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"EchoTime": "2.81"},
        {"SliceThickness": "5"},
        {"ImageType": "ORIGINAL"},
        {"ImageType": "DERIVED"},
        {"EchoTime": "", "Modality": "MR"},
    ],
)
def test_non_key_attributes(
    index: Index, records: list[truth.Record], query: dict[str, Any]
) -> None:
    check(index, records, "image", query)
    check(index, records, "study", query)


@pytest.mark.parametrize("tag", ["00091010", "00111010", "700D1016", "00211201"])
def test_private_tags(index: Index, records: list[truth.Record], tag: str) -> None:
    values = [v for r in records for v in (truth.values(r.ds, int(tag, 16)) or [])]
    assert values, f"the synthetic corpus has private tag {tag}"
    check(index, records, "image", {tag: values[0]})
    check(index, records, "series", {f"({tag[:4]},{tag[4:]})": values[0][:3] + "*"})
    rows = index.find("image", {tag: values[0]}, [tag])
    assert all(values[0] in (r[tag] or "").split("\\") for r in rows)


def test_sequence_matching(index: Index, records: list[truth.Record]) -> None:
    def has_item(r: truth.Record, seq: str, sub: str, value: str) -> bool:
        return any(truth.values(item, sub) == [value] for item in r.ds.get(seq, []) or [])

    cases = [
        ("DerivationCodeSequence", "CodeValue", "113040"),
        ("ReferencedImageSequence", "ReferencedSOPClassUID", "1.2.840.10008.5.1.4.1.1.4"),
    ]
    for seq, sub, value in cases:
        want = {
            str(r.ds.SOPInstanceUID) for r in truth.latest(records) if has_item(r, seq, sub, value)
        }
        assert want
        assert found(index, "image", {seq: [{sub: value}]}) == want
        if sub == "CodeValue":  # wildcards do not apply to UIDs (PS3.4 C.2.2.2.4)
            assert found(index, "image", {seq: [{sub: value[:-1] + "?"}]}) >= want
    # two keys must hold in the same item
    both = {"CodeValue": "113040", "CodingSchemeDesignator": "DCM"}
    wrong = {"CodeValue": "113040", "CodingSchemeDesignator": "SRT"}
    assert found(index, "image", {"DerivationCodeSequence": [both]})
    assert found(index, "image", {"DerivationCodeSequence": [wrong]}) == set()


def test_sequence_return_keys(index: Index) -> None:
    rows = index.find(
        "image", {"DerivationCodeSequence": [{"CodeValue": "113040", "CodeMeaning": ""}]}
    )
    assert rows
    for row in rows:
        items = row["DerivationCodeSequence"]
        assert any(i["CodeValue"] == "113040" and i["CodeMeaning"] for i in items)


# -- return keys, computed keys ---------------------------------------------------------------


def test_computed_study_keys(index: Index, records: list[truth.Record]) -> None:
    by_study: dict[str, list[truth.Record]] = defaultdict(list)
    for r in truth.latest(records):
        by_study[str(r.ds.get("StudyInstanceUID", ""))].append(r)
    rows = index.find(
        "study",
        {},
        [
            "NumberOfStudyRelatedInstances",
            "NumberOfStudyRelatedSeries",
            "ModalitiesInStudy",
            "SOPClassesInStudy",
        ],
    )
    assert len(rows) == len(by_study)
    for row in rows:
        group = by_study[row["StudyInstanceUID"] or ""]
        assert row["NumberOfStudyRelatedInstances"] == str(len(group))
        series = {str(r.ds.get("SeriesInstanceUID", "")) for r in group}
        assert row["NumberOfStudyRelatedSeries"] == str(len(series))
        modalities = sorted({str(r.ds.Modality) for r in group if r.ds.get("Modality")})
        assert (row["ModalitiesInStudy"] or "") == "\\".join(modalities)
        classes = sorted({str(r.ds.SOPClassUID) for r in group if r.ds.get("SOPClassUID")})
        assert row["SOPClassesInStudy"] == "\\".join(classes)


def test_computed_keys_of_upper_levels(index: Index, records: list[truth.Record]) -> None:
    """Upper-level computed keys are returned (and matched) at lower levels too."""
    latest = truth.latest(records)
    rows = index.find(
        "image",
        {"ModalitiesInStudy": "MR"},
        [
            "NumberOfStudyRelatedInstances",
            "NumberOfPatientRelatedStudies",
            "NumberOfSeriesRelatedInstances",
        ],
    )
    assert rows
    for row in rows:
        (me,) = [r for r in latest if str(r.ds.SOPInstanceUID) == row["SOPInstanceUID"]]
        study = str(me.ds.StudyInstanceUID)
        in_study = [r for r in latest if str(r.ds.get("StudyInstanceUID", "")) == study]
        assert row["NumberOfStudyRelatedInstances"] == str(len(in_study))
        assert "MR" in {str(r.ds.get("Modality", "")) for r in in_study}
        assert row["NumberOfPatientRelatedStudies"] is not None
    studies = index.find("study", {}, ["NumberOfPatientRelatedStudies"])
    assert all(r["NumberOfPatientRelatedStudies"] for r in studies)


def test_modalities_in_study_matching(index: Index, records: list[truth.Record]) -> None:
    want = {str(r.ds.StudyInstanceUID) for r in records if r.ds.get("Modality") in ("MR", "NM")}
    assert found(index, "study", {"ModalitiesInStudy": "MR\\NM"}) == want
    assert found(index, "study", {"ModalitiesInStudy": ["MR", "NM"]}) == want


def test_computed_patient_and_series_keys(index: Index, records: list[truth.Record]) -> None:
    latest = truth.latest(records)
    rows = index.find(
        "patient",
        {"PatientID": ""},
        ["NumberOfPatientRelatedInstances", "NumberOfPatientRelatedStudies"],
    )
    for row in rows:
        group = [r for r in latest if str(r.ds.get("PatientID", "")) == row["PatientID"]]
        assert row["NumberOfPatientRelatedInstances"] == str(len(group))
        assert row["NumberOfPatientRelatedStudies"] == str(
            len({str(r.ds.get("StudyInstanceUID", "")) for r in group})
        )
    for row in index.find("series", {}, ["NumberOfSeriesRelatedInstances"]):
        group = [
            r for r in latest if str(r.ds.get("SeriesInstanceUID", "")) == row["SeriesInstanceUID"]
        ]
        assert row["NumberOfSeriesRelatedInstances"] == str(len(group))


def test_return_keys_come_back_as_dicom_text(index: Index, records: list[truth.Record]) -> None:
    for r in truth.latest(records)[:40]:
        uid = str(r.ds.SOPInstanceUID)
        keys = [
            "StudyDate",
            "StudyTime",
            "PatientName",
            "EchoTime",
            "ImageType",
            "Rows",
            "InstanceNumber",
            "00091010",
            "NoSuchAttributeHere" if False else "PatientAge",
        ]
        (row,) = index.find("image", {"SOPInstanceUID": uid}, keys)
        for key in ("PatientName", "EchoTime", "ImageType", "PatientAge", "00091010"):
            want = truth.values(r.ds, key_of(key))
            assert row[key] == ("\\".join(want) if want is not None else None), key
        date_value = truth.values(r.ds, "StudyDate")
        if date_value and truth.da(date_value[0]):
            assert row["StudyDate"] == date_value[0].replace(".", "")
        time_value = truth.values(r.ds, "StudyTime")
        if time_value and truth.tm(time_value[0]) and row["StudyTime"]:
            assert truth.tm(row["StudyTime"]) == truth.tm(time_value[0])


def test_unknown_attribute_and_level_are_query_errors(index: Index) -> None:
    from duckpacs.errors import QueryError

    with pytest.raises(QueryError, match="unknown attribute"):
        index.find("study", {"NoSuchKeyword": "x"})
    with pytest.raises(QueryError, match="unknown query level"):
        index.find("frame", {})


def test_identifier_control_elements_are_ignored(index: Index) -> None:
    """A C-FIND identifier carries QueryRetrieveLevel and SpecificCharacterSet: not keys."""
    plain = index.find("study", {"PatientName": "Lestrade*"})
    full = index.find(
        "study",
        {
            "QueryRetrieveLevel": "STUDY",
            "SpecificCharacterSet": "ISO_IR 192",
            "PatientName": "Lestrade*",
        },
    )
    assert plain and full == plain


def test_limit_offset_and_count(index: Index) -> None:
    every = index.find("image", {})
    assert index.count("image", {}) == len(every)
    page = index.find("image", {}, limit=5, offset=3)
    assert [r["SOPInstanceUID"] for r in page] == [r["SOPInstanceUID"] for r in every[3:8]]


def test_locations_cover_every_instance_of_the_match(
    index: Index, records: list[truth.Record]
) -> None:
    study = next(r for r in records if str(r.ds.get("PatientName", "")) == "Lestrade^G")
    uid = str(study.ds.StudyInstanceUID)
    locs = index.locations("study", {"StudyInstanceUID": uid})
    want = {
        str(r.ds.SOPInstanceUID): r.extra
        for r in truth.latest(records)
        if str(r.ds.get("StudyInstanceUID", "")) == uid
    }
    assert {loc[0] for loc in locs} == set(want)
    for sop, cls, _ts, pack, offset, length in locs:
        assert (pack, offset, length) == (7, want[sop]["offset"], 999)
        assert cls


# -- combined date-time matching (C.2.2.2.5) on made-up studies -------------------------------


def _made_up(uid: str, date: str, time: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPInstanceUID = f"{uid}.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.StudyInstanceUID = uid
    ds.SeriesInstanceUID = f"{uid}.0"
    ds.PatientID = "P-COMBINED"
    ds.StudyDate, ds.StudyTime = date, time
    return ds


def test_combined_datetime_matching(tmp_path: Path) -> None:
    ix = Index.open(tmp_path)
    night = [
        ("1.9.1", "20200101", "2300"),
        ("1.9.2", "20200102", "0100"),
        ("1.9.3", "20200102", "1200"),
        ("1.9.4", "20191231", "2330"),
    ]
    ix.add_batch(build_batch((_made_up(*n), None) for n in night))
    query = {"StudyDate": "20200101-20200102", "StudyTime": "2200-0200"}
    assert found(ix, "study", query) == set()  # separately, no time is in 22:00..02:00
    combined = {r["StudyInstanceUID"] for r in ix.find("study", query, combined_datetime=True)}
    assert combined == {"1.9.1", "1.9.2"}
    query = {"StudyDate": "20200101-20200102", "StudyTime": "2200-0030"}
    combined = {r["StudyInstanceUID"] for r in ix.find("study", query, combined_datetime=True)}
    assert combined == {"1.9.1"}
    query = {"StudyDate": "20200101-", "StudyTime": "2300-"}
    combined = {r["StudyInstanceUID"] for r in ix.find("study", query, combined_datetime=True)}
    assert combined == {"1.9.1", "1.9.2", "1.9.3"}
    ix.close()


def _nested_truth(
    records: list[truth.Record], seq: str, direct: dict[str, str], inner: str, key: str, value: str
) -> set[str]:
    out = set()
    for r in truth.latest(records):
        for item in r.ds.get(seq, []) or []:
            if not all(truth.match(item, k, "CS", v) for k, v in direct.items()):
                continue
            if any(truth.values(sub, key) == [value] for sub in item.get(inner, []) or []):
                out.add(str(r.ds.SOPInstanceUID))
    return out


@pytest.mark.parametrize(
    ("seq", "direct", "inner", "key", "value"),
    [
        ("WaveformAnnotationSequence", {}, "ConceptNameCodeSequence", "CodeValue", "5.10.3-1"),
        (
            "WaveformAnnotationSequence",
            {"TemporalRangeType": "POINT"},
            "ConceptNameCodeSequence",
            "CodeValue",
            "5.10.3-2",
        ),
        (
            "WaveformAnnotationSequence",
            {"TemporalRangeType": "SEGMENT"},
            "ConceptNameCodeSequence",
            "CodeValue",
            "5.10.3-2",
        ),
        ("SourceImageSequence", {}, "PurposeOfReferenceCodeSequence", "CodeValue", "121320"),
    ],
)
def test_nested_sequence_matching(
    index: Index,
    records: list[truth.Record],
    seq: str,
    direct: dict[str, str],
    inner: str,
    key: str,
    value: str,
) -> None:
    want = _nested_truth(records, seq, direct, inner, key, value)
    query = {seq: [{**direct, inner: [{key: value}]}]}
    assert found(index, "image", query) == want
    if not direct:
        assert want, "the corpus must hold a match, or the test proves nothing"
