"""The PostgreSQL index answers as the embedded one: the same instances loaded into both,
then a broad set of queries (every level, wildcards, ranges, lists, fuzzy names, private and
non-key attributes, sequences, computed keys, paging, routing's and policy's queries) and
the tables compared; plus what only a shared index has (per-node marks, the unique key) and
what its ``sql`` allows."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from duckpacs.errors import QueryError
from duckpacs.index import Index
from tests import index_truth as truth
from tests.index_rows import build_batch
from tests.pg_support import Cluster

pytestmark = pytest.mark.usefixtures("pg_cluster")


@pytest.fixture(scope="module")
def records() -> list[truth.Record]:
    return truth.load(truth.pydicom_files() + truth.corpus_files())


def _load(ix: Any, records: list[truth.Record]) -> None:
    third = len(records) // 3
    for part in (records[:third], records[third : 2 * third], records[2 * third :]):
        ix.add_batch(build_batch((r.ds, r.extra) for r in part), marks={1: 100})


@pytest.fixture(scope="module")
def pair(
    records: list[truth.Record], tmp_path_factory: pytest.TempPathFactory, pg_cluster: Cluster
) -> Iterator[tuple[Index, Any]]:
    from duckpacs.index.pg.db import PgIndex

    duck = Index.open(tmp_path_factory.mktemp("archive"))
    pg = PgIndex.open(pg_cluster.config())
    _load(duck, records)
    _load(pg, records)
    yield duck, pg
    duck.close()
    pg.close()


def _any(records: list[truth.Record], keyword: str) -> str:
    for r in records:
        value = r.ds.get(keyword)
        if value not in (None, ""):
            return str(value)
    raise AssertionError(f"no {keyword} in the corpus")


def queries(
    records: list[truth.Record],
) -> list[tuple[str, dict[str, Any], list[str], dict[str, Any]]]:
    study = _any(records, "StudyInstanceUID")
    series = _any(records, "SeriesInstanceUID")
    name = _any(records, "PatientName")
    return [
        ("patient", {}, ["PatientName", "NumberOfPatientRelatedInstances"], {}),
        ("patient", {"PatientName": f"{name[:2]}*"}, ["PatientBirthDate"], {}),
        ("patient", {"PatientName": name[:3].lower()}, [], {"fuzzy": True}),
        ("study", {}, ["StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedSeries"], {}),
        ("study", {"StudyDate": "19900101-20301231"}, ["PatientName", "StudyTime"], {}),
        ("study", {"StudyDate": "-20050101"}, ["AccessionNumber"], {}),
        (
            "study",
            {"StudyDate": "20000101-", "StudyTime": "0800-1800"},
            [],
            {"combined_datetime": True},
        ),  # fmt: skip
        ("study", {"ModalitiesInStudy": "MR"}, ["SOPClassesInStudy"], {}),
        ("study", {"ModalitiesInStudy": ["CT", "M?"]}, [], {}),
        ("study", {"PatientName": "*^*"}, ["StudyDescription"], {}),
        ("study", {"PatientName": "*"}, ["ReferringPhysicianName", "PatientID"], {}),
        (
            "study",
            {"StudyInstanceUID": [study, "1.2.3.4.5.6"]},
            ["NumberOfStudyRelatedInstances"],
            {},
        ),
        (
            "series",
            {"StudyInstanceUID": study},
            ["Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances"],
            {},
        ),  # fmt: skip
        ("series", {"Modality": "CT\\MR"}, ["SeriesDescription", "BodyPartExamined"], {}),
        ("series", {"SeriesDescription": "*a*"}, ["ProtocolName"], {}),
        ("image", {"SeriesInstanceUID": series}, ["InstanceNumber", "Rows", "Columns"], {}),
        ("image", {"InstanceNumber": "1"}, ["SOPClassUID", "ImageType"], {}),
        ("image", {"SliceThickness": "5"}, ["EchoTime", "WindowCenter"], {}),
        ("image", {"Modality": "MR", "EchoTime": ""}, ["RepetitionTime", "00191001"], {}),
        ("image", {"ImageType": "ORIGINAL*"}, ["Manufacturer"], {}),
        ("image", {"ContentDate": "19000101-"}, ["ContentTime", "AcquisitionDate"], {}),
        ("image", {"PatientName": f"{name[:1]}*"}, ["PatientID"], {}),
        ("image", {"ReferencedImageSequence": [{"ReferencedSOPClassUID": ""}]}, [], {}),
        ("image", {}, ["ReferencedImageSequence"], {"limit": 7, "offset": 3}),
        ("image", {"PixelSpacing": "*"}, ["PixelSpacing"], {"limit": 50}),
    ]


def test_find_count_and_locations_agree(
    pair: tuple[Index, Any], records: list[truth.Record]
) -> None:
    duck, pg = pair
    for level, query, keys, options in queries(records):
        want = duck.find(level, query, keys, **options)
        assert pg.find(level, query, keys, **options) == want, (level, query, options)
        if not options:
            assert pg.count(level, query) == duck.count(level, query), (level, query)
            assert pg.locations(level, query) == duck.locations(level, query), (level, query)


def test_tables_and_stats_agree(pair: tuple[Index, Any]) -> None:
    duck, pg = pair
    assert pg.stats() == duck.stats()
    tables = {
        "patients": "patient_id",
        "studies": "study_instance_uid",
        "series": "series_instance_uid",
        "instances": "sop_instance_uid",
    }
    for table, order in tables.items():
        want = duck.table(table, order).to_pylist()
        got = pg.table(table, order).to_pylist()
        for row in want + got:
            for column in ("rep_iid", "iid", "node"):  # numbering; PostgreSQL's own column
                row.pop(column, None)
        assert got == want, table


def test_routing_and_policy_queries_agree(pair: tuple[Index, Any]) -> None:
    duck, pg = pair
    newest_d, newest_p = duck.newest_instance(), pg.newest_instance()
    assert newest_d is not None and newest_p is not None
    assert newest_p[1:] == newest_d[1:]
    assert [a[1:] for a in pg.arrivals(0, 1000)] == [a[1:] for a in duck.arrivals(0, 1000)]
    top = newest_d[0]
    assert pg.matching_arrivals({"Modality": "MR"}, None, 0, top) == duck.matching_arrivals(
        {"Modality": "MR"}, None, 0, top
    )
    assert pg.stored_bytes() == duck.stored_bytes()
    assert pg.studies_oldest_first(5) == duck.studies_oldest_first(5)
    cutoff = datetime.date(2100, 1, 1)
    assert pg.studies_dated_before({}, cutoff) == duck.studies_dated_before({}, cutoff)
    uids = [a[1] for a in duck.arrivals(0, 10)]
    assert pg.known_uids(uids) == duck.known_uids(uids)
    assert pg.instances_at(uids) == duck.instances_at(uids)
    readers = pg.reader(), duck.reader()
    assert readers[0].locate_uids(uids) == readers[1].locate_uids(uids)
    for reader in readers:
        reader.close()


def test_dedupe_replace_and_remove_agree(
    records: list[truth.Record], tmp_path: Path, pg_cluster: Cluster
) -> None:
    from duckpacs.index.pg.db import PgIndex

    duck, pg = Index.open(tmp_path), PgIndex.open(pg_cluster.config())
    try:
        for step in (
            lambda ix: ix.add_batch(build_batch((r.ds, r.extra) for r in records)),
            lambda ix: ix.add_batch(build_batch((r.ds, r.extra) for r in records)),
            lambda ix: ix.add_batch(
                build_batch((r.ds, {**r.extra, "sha256": "f" * 64, "pack": 9}) for r in records[:5])
            ),
            lambda ix: ix.remove([str(r.ds.SOPInstanceUID) for r in records[5:9]]),
            lambda ix: ix.relocate([((9, 0, 1), (11, 0, 1))]),
        ):
            assert step(pg) == step(duck)
            assert pg.stats() == duck.stats()
        assert pg.find("study", {}, ["NumberOfStudyRelatedInstances"]) == duck.find(
            "study", {}, ["NumberOfStudyRelatedInstances"]
        )
    finally:
        duck.close()
        pg.close()


@pytest.fixture
def nodes(pg_cluster: Cluster) -> Iterator[tuple[Any, Any]]:
    """Two nodes, ``node-a`` and ``node-b``, on one fresh PostgreSQL index."""
    from duckpacs.index.pg.db import PgIndex

    dsn = pg_cluster.database()
    a = PgIndex.open(pg_cluster.config("node-a", dsn))
    b = PgIndex.open(pg_cluster.config("node-b", dsn))
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_marks_are_kept_per_node(nodes: tuple[Any, Any]) -> None:
    a, b = nodes
    a.set_marks({1: 100, 2: 50})
    b.set_marks({1: 7})
    a.advance_marks({1: 90, 3: 10})  # never back
    assert a.marks() == {1: 100, 2: 50, 3: 10}
    assert b.marks() == {1: 7}


def test_two_writers_store_an_instance_once(
    records: list[truth.Record], nodes: tuple[Any, Any]
) -> None:
    a, b = nodes
    first = a.add_batch(build_batch((r.ds, r.extra) for r in records[:20]))
    second = b.add_batch(build_batch((r.ds, r.extra) for r in records[10:30]))
    assert first["added"] + first["unchanged"] + first["duplicates"] == 20
    assert second["added"] == len(
        {str(r.ds.SOPInstanceUID) for r in records[20:30]}
        - {str(r.ds.SOPInstanceUID) for r in records[:20]}
    )
    assert a.stats()["instances"] == len({str(r.ds.SOPInstanceUID) for r in records[:30]})


def test_sql_runs_postgresql_read_only(pair: tuple[Index, Any]) -> None:
    _, pg = pair
    rows = pg.sql("SELECT count(*) AS n FROM instances WHERE sop_instance_uid LIKE '1%'")
    assert rows.columns == ["n"] and rows.rows[0][0] > 0
    for text in ("DELETE FROM instances", "SELECT 1; DELETE FROM instances",
                 "COMMIT; DELETE FROM instances"):  # fmt: skip
        with pytest.raises(QueryError):
            pg.sql(text)
    assert pg.stats()["instances"] > 0
    elements = pg.sql("SELECT tag, keyword FROM elements WHERE keyword = 'ImageType' LIMIT 1")
    assert elements.rows[0] == ("00080008", "ImageType")


def test_writers_racing_with_the_same_instances_store_each_once(
    records: list[truth.Record], pg_cluster: Cluster
) -> None:
    import threading

    from duckpacs.index.pg.db import PgIndex

    dsn = pg_cluster.database()
    nodes = [PgIndex.open(pg_cluster.config(f"node-{n}", dsn)) for n in range(3)]
    errors: list[BaseException] = []

    def ingest(ix: Any) -> None:
        try:
            for start in range(0, len(records), 7):
                ix.add_batch(build_batch((r.ds, r.extra) for r in records[start : start + 7]))
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=ingest, args=(ix,)) for ix in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    try:
        assert not errors, errors
        unique = len({str(r.ds.SOPInstanceUID) for r in records})
        assert nodes[0].stats()["instances"] == unique
        studies = nodes[1].find("study", {}, ["NumberOfStudyRelatedInstances"])
        total = sum(int(s["NumberOfStudyRelatedInstances"]) for s in studies)
        assert total == unique
    finally:
        for ix in nodes:
            ix.close()


def test_store_locations_are_each_nodes_own(
    records: list[truth.Record], nodes: tuple[Any, Any]
) -> None:
    a, b = nodes
    first, second = records[0], records[1]
    a.add_batch(build_batch([(first.ds, {**first.extra, "pack": 1, "offset": 0})]))
    b.add_batch(build_batch([(second.ds, {**second.extra, "pack": 1, "offset": 0})]))
    assert a.relocate([((1, 0, 5), (2, 8, 5))]) == 1  # a's row only
    assert b.remove_locations([(1, 0, 5)]) == 1  # b's row only
    assert a.known_uids([str(first.ds.SOPInstanceUID), str(second.ds.SOPInstanceUID)]) == {
        str(first.ds.SOPInstanceUID)
    }
    assert a.instances_at([str(first.ds.SOPInstanceUID)])[str(first.ds.SOPInstanceUID)][:2] == (
        2,
        8,
    )


def test_clearing_one_node_keeps_the_others_rows(
    records: list[truth.Record], nodes: tuple[Any, Any]
) -> None:
    """`duckpacs reindex` on one node of a shared index empties only that node's rows
    before refilling them from its store: the other nodes' instances stay findable."""
    a, b = nodes
    a.add_batch(build_batch((r.ds, r.extra) for r in records[:10]))
    b.add_batch(build_batch((r.ds, r.extra) for r in records[10:20]))
    a.set_marks({1: 100})
    b.set_marks({1: 7})
    kept = {str(r.ds.SOPInstanceUID) for r in records[10:20]}
    gone = {str(r.ds.SOPInstanceUID) for r in records[:10]} - kept
    a.clear()
    assert b.known_uids(sorted(kept | gone)) == kept
    assert a.marks() == {} and b.marks() == {1: 7}
    assert b.stats()["instances"] == len(kept)
    b.clear()  # the last node: the whole index is empty again
    assert b.stats()["instances"] == 0 and b.marks() == {}


def test_another_nodes_instance_is_found_but_never_read_here(
    records: list[truth.Record], nodes: tuple[Any, Any]
) -> None:
    """A location is a place in the store of the node that wrote it: node b finds node a's
    instance, but a retrieval through b is refused with a clear error, never answered with
    whatever record b's own store holds at that pack and offset."""
    from duckpacs.errors import ArchiveIndexError

    a, b = nodes
    first = records[0]
    uid = str(first.ds.SOPInstanceUID)
    a.add_batch(build_batch([(first.ds, {**first.extra, "pack": 1, "offset": 32})]))
    assert b.count("image", {"SOPInstanceUID": uid}) == 1
    assert [r[0] for r in a.locations("image", {"SOPInstanceUID": uid})] == [uid]
    assert [r[0] for r in a.instance_refs([uid])] == [uid]
    with pytest.raises(ArchiveIndexError, match="node 'node-a'"):
        b.locations("image", {"SOPInstanceUID": uid})
    with pytest.raises(ArchiveIndexError, match="node 'node-a'"):
        b.instance_refs([uid])
