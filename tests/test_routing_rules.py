"""Routing rules over a real archive: which instances each rule queues (C-FIND matching on
indexed attributes, CallingAE), where the rules resume after a restart, stable studies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from duckpacs.archive.facade import Archive
from duckpacs.config import Route
from duckpacs.errors import ConfigError
from duckpacs.routing.queue import Queue
from duckpacs.routing.rules import Rules
from tests.routing_support import instance
from tests.synthetic import encode, uid

# Every test on the embedded index and again on PostgreSQL (tests/pg_support.py).
pytestmark = pytest.mark.usefixtures("each_index_backend")


def store(archive: Archive, study: str, n: int, ae: str, **attrs: str) -> str:
    ds = instance(study, n, **attrs)
    result = archive.store(encode(ds), calling_ae=ae)
    assert result.status == 0
    return str(ds.SOPInstanceUID)


def queued(queue: Queue) -> set[tuple[str, str]]:
    return {(j.destination, j.sop_instance_uid) for j in queue.jobs(states=())}


ROUTES = [
    Route("ct", {"Modality": "CT", "CallingAE": "CT*"}, ("tele",)),
    Route("heads", {"StudyDescription": "*HEAD*", "StudyDate": "20240101-20241231"}, ("pacs",)),
    Route("mr-station", {"StationName": ["MR?B", "MRX"]}, ("pacs", "tele")),
]


def test_rules_queue_the_instances_they_match(tmp_path: Path) -> None:
    s1, s2, s3 = uid("rules", 1), uid("rules", 2), uid("rules", 3)
    with Archive.open(tmp_path / "data") as archive:
        queue = Queue(tmp_path / "data" / "queue.sqlite")
        rules = Rules(archive.index, queue, ROUTES)
        rules.check()
        rules.start()
        ct_head = store(archive, s1, 1, "CT1", modality="CT", description="HEAD ROUTINE")
        ct_other_ae = store(archive, s1, 2, "WS", modality="CT", description="HEAD ROUTINE")
        old_head = store(archive, s2, 1, "CT2", modality="CT", description="HEAD",
                         study_date="20190101")  # fmt: skip
        mr = store(archive, s3, 1, "MR", modality="MR", station="MR7B", description="KNEE")
        store(archive, s3, 2, "MR", modality="MR", station="MR77B", description="KNEE")
        archive.flush()
        assert rules.poll() == 5
        assert queued(queue) == {
            ("tele", ct_head), ("tele", old_head),  # CT from a CT* caller
            ("pacs", ct_head), ("pacs", ct_other_ae),  # HEAD in 2024, whoever sent it
            ("pacs", mr), ("tele", mr),  # station MR?B
        }  # fmt: skip
        assert {j.origin for j in queue.jobs() if j.sop_instance_uid == mr} == {"route:mr-station"}
        assert rules.poll() == 0  # nothing new
        queue.close()


def test_the_rules_resume_where_they_stopped_and_only_for_new_arrivals(tmp_path: Path) -> None:
    data = tmp_path / "data"
    routes = [Route("all", {}, ("pacs",))]
    study = uid("resume")
    with Archive.open(data) as archive:
        before = store(archive, study, 1, "A")  # received before routing ever ran
        archive.flush()
        queue = Queue(data / "queue.sqlite")
        rules = Rules(archive.index, queue, routes)
        rules.start()
        first = store(archive, study, 2, "A")
        archive.flush()
        rules.poll()
        between = store(archive, study, 3, "A")  # arrives while the rules are stopped
        queue.close()
    with Archive.open(data) as archive:
        queue = Queue(data / "queue.sqlite")
        rules = Rules(archive.index, queue, routes)
        rules.start()
        rules.poll()
        assert {u for _d, u in queued(queue)} == {first, between}
        assert before not in {u for _d, u in queued(queue)}
        queue.close()


def test_when_the_last_instance_read_was_deleted_the_next_arrivals_are_not_missed(
    tmp_path: Path,
) -> None:
    """The index numbers rows from its largest iid at each opening: after the newest rows
    are deleted, new rows reuse numbers the rules had passed."""
    data = tmp_path / "data"
    routes = [Route("all", {}, ("pacs",))]
    study = uid("reuse")
    with Archive.open(data) as archive:
        queue = Queue(data / "queue.sqlite")
        rules = Rules(archive.index, queue, routes)
        rules.start()
        store(archive, study, 1, "A")
        last = store(archive, study, 2, "A")
        archive.flush()
        rules.poll()
        ref = archive.lookup(last)
        assert ref is not None
        archive.delete([ref])
        queue.close()
    with Archive.open(data) as archive:
        newcomer = store(archive, study, 3, "A")  # gets the deleted row's iid
        archive.flush()
        queue = Queue(data / "queue.sqlite")
        rules = Rules(archive.index, queue, routes)
        rules.start()
        rules.poll()
        assert newcomer in {u for _d, u in queued(queue)}
        queue.close()


def test_a_stable_study_goes_whole_once_quiet_and_again_for_late_arrivals(tmp_path: Path) -> None:
    data = tmp_path / "data"
    route = Route("stable", {"Modality": "CT"}, ("pacs",), "stable-study", 1)
    study, other = uid("stable", 1), uid("stable", 2)
    with Archive.open(data) as archive:
        queue = Queue(data / "queue.sqlite")
        rules = Rules(archive.index, queue, [route])
        rules.start()
        sr = store(archive, study, 1, "A", modality="SR")  # no match, but part of the study
        ct = store(archive, study, 2, "A", modality="CT")
        store(archive, other, 1, "A", modality="MR")  # a study nothing matches
        archive.flush()
        rules.poll()
        assert rules.fire_stable() == 0  # not quiet for a second yet
        time.sleep(1.1)
        assert rules.fire_stable() == 2
        assert queued(queue) == {("pacs", sr), ("pacs", ct)}
        late = store(archive, study, 3, "A", modality="SR")
        archive.flush()
        rules.poll()
        time.sleep(1.1)
        assert rules.fire_stable() == 1
        assert queued(queue) == {("pacs", sr), ("pacs", ct), ("pacs", late)}
        queue.close()


def test_a_rule_that_cannot_be_compiled_stops_with_its_name(tmp_path: Path) -> None:
    with Archive.open(tmp_path / "data") as archive:
        queue = Queue(tmp_path / "q.sqlite")
        rules = Rules(archive.index, queue, [Route("bad", {"StudyDate": "2024"}, ("x",))])
        with pytest.raises(ConfigError, match="route 'bad': match: not a DICOM date"):
            rules.check()
        queue.close()
