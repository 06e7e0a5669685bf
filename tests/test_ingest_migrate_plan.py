"""The migration planner against a simulated peer: windows, caps, enumeration, listings."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from duckpacs.ingest.migrate import (
    Answer,
    FolderTarget,
    Journal,
    Limits,
    RemoteStudy,
    Scope,
    Span,
    enumerate_rest,
    list_instances,
    open_journal,
    plan_windows,
)
from duckpacs.ingest.migrate.reconcile import image_limits, judge, verify_studies
from duckpacs.ingest.migrate.report import NotDone, Reconciliation
from duckpacs.ingest.migrate.scope import ALPHABET
from tests.migrate_support import FakePeer, Study, study

SPAN = Span(date(2020, 1, 1), date(2020, 12, 31))


def found(journal: Journal) -> set[str]:
    return {s.uid for s in journal.all_studies()}


def busy_day() -> list[Study]:
    """Twelve studies over a year, and one day with six: three in one hour (three patients)."""
    studies = [study(f"1.2.{m}", f"2020{m:02d}15", "100000", f"P{m}") for m in range(1, 13)]
    studies += [
        study("1.3.1", "20200615", "080000", "A1"),
        study("1.3.2", "20200615", "083000", "B7"),
        study("1.3.3", "20200615", "084500", "B8"),
        study("1.3.4", "20200615", "140000", "C1"),
        study("1.3.5", "20200615", "141500", "C2"),
    ]
    return studies


@pytest.mark.parametrize("ending", ["cancel", "success", "refuse"])
def test_windows_split_by_day_hour_and_patient_until_nothing_is_cut(
    tmp_path: Path, ending: str
) -> None:
    studies = busy_day()
    peer = FakePeer(studies, cap=2, ending=ending)
    # A peer ending cut answers with success is only caught at the configured limit.
    limits = Limits(limit=2 if ending == "success" else 500)
    with open_journal(tmp_path / "j.sqlite") as journal:
        queries = plan_windows(peer, journal, SPAN, limits)
        assert found(journal) == {s.uid for s in studies}
        assert queries == len(peer.calls)
        keys = " | ".join(peer.calls)
        assert "20200615 T08-08" in keys  # the day was split by hour...
        assert "20200615 T08-08 P=B*" in keys  # ...and the busy hour by Patient ID
        rec = journal.reconcile()
        assert rec.studies_found == len(studies) and rec.undated == 0
        # Resuming queries nothing again.
        peer.calls.clear()
        assert plan_windows(peer, journal, SPAN, limits) == 0 and not peer.calls


def test_limits_suspect_round_counts_until_the_peer_signals_its_cuts() -> None:
    limits = Limits(limit=500)
    assert not limits.suspect(_answer(7))
    assert limits.suspect(_answer(100))  # round: a typical limit, worth a split
    assert limits.suspect(_answer(256))
    assert not limits.definite(_answer(100))  # ...but not known to be cut
    assert limits.suspect(_answer(500)) and limits.definite(_answer(500))  # the configured one
    assert limits.suspect(_answer(0, capped=True)) and limits.seen is None  # refused outright
    assert limits.suspect(_answer(37, capped=True)) and limits.seen == 37
    # A peer that says when it cuts is believed when it does not.
    assert not limits.suspect(_answer(100)) and not limits.suspect(_answer(37))


def _answer(count: int, capped: bool = False) -> Answer:
    return Answer(count, capped)


def test_scope_keys_and_splits() -> None:
    day = Scope(date(2020, 6, 15), date(2020, 6, 15))
    assert day.study_date == "20200615" and day.split()[0].hours == (0, 11)
    hour = Scope(date(2020, 6, 15), date(2020, 6, 15), (8, 8))
    assert hour.study_time == "080000-085959.999999"
    parts = hour.split()
    assert len(parts) == len(ALPHABET) and parts[0].patient_key == "0*"
    ab = Scope(patient="AB")
    assert ab.patient_key == "AB*" and ab.split()[0].patient_key == "AB"  # AB itself first
    assert ab.split()[0].split() == []  # an exact Patient ID is the floor
    assert Scope().describe() == "every study" and Scope().key() == "*"
    assert "\\" not in ALPHABET and "*" not in ALPHABET and "?" not in ALPHABET


def undated_and_outside() -> list[Study]:
    return [
        study("1.2.1", "20200105", "101010", "P1"),
        study("1.2.2", "20200106", "", "P2"),  # no Study Time
        study("1.2.3", "", "", "P3"),  # no Study Date
        study("1.2.4", "", "", "P1"),  # P1's second study, undated
        study("1.2.5", "20991231", "120000", "P5"),  # a date outside every window
        study("1.2.6", "00000000", "", "P6"),  # not a date at all
    ]


def test_enumeration_lists_every_study_in_one_query_when_the_peer_does_not_cap(
    tmp_path: Path,
) -> None:
    studies = undated_and_outside()
    peer = FakePeer(studies)
    with open_journal(tmp_path / "j.sqlite") as journal:
        plan_windows(peer, journal, Span(), Limits())
        assert found(journal) == {"1.2.1", "1.2.2"}
        assert enumerate_rest(peer, journal, Span(), Limits()) == 1
        assert found(journal) == {s.uid for s in studies}
        rec = journal.reconcile()
        assert rec.found_outside == 4 and rec.undated == 3
        assert rec.enumeration == "listing every study" and not rec.gaps
        assert "studies without a Study Date: 3" in rec.lines()
        # Done once per span and day.
        assert enumerate_rest(peer, journal, Span(), Limits()) == 0


def test_enumeration_by_patient_asks_only_for_patients_whose_count_is_not_met(
    tmp_path: Path,
) -> None:
    studies = undated_and_outside()
    studies += [study(f"1.5.{i}", f"2020020{i}", "090000", f"Q{i}") for i in range(1, 6)]
    studies.append(study("1.6.1", "", "", ""))  # neither a Study Date nor a Patient ID
    peer = FakePeer(studies, cap=3)
    with open_journal(tmp_path / "j.sqlite") as journal:
        plan_windows(peer, journal, Span(), Limits())
        peer.calls.clear()
        enumerate_rest(peer, journal, Span(), Limits())
        # Every study but the one no key can select.
        assert found(journal) == {s.uid for s in studies} - {"1.6.1"}
        exact = [c for c in peer.calls if c.startswith("study *") and "P=" in c]
        # P1 (one undated study), P5 (outside the windows), P6 (no date). Not the Q patients,
        # all found by the windows, nor P3, whose study came in the cut first answer.
        assert peer.calls[0] == "study *"
        assert exact == ["study * P=P1", "study * P=P5", "study * P=P6"]
        rec = journal.reconcile()
        assert rec.enumeration == "listing every patient's studies"
        assert rec.gaps == [
            "1 of 1 studies of a patient without a Patient ID (no C-FIND key selects them on "
            "a peer that caps its answers)"
        ]
        assert not rec.complete  # a study known to exist and not listed is not complete
        assert any("Patient ID prefix" in c for c in rec.caveats)  # the patients were many


def test_enumeration_by_prefix_when_the_peer_has_no_patient_root(tmp_path: Path) -> None:
    studies = undated_and_outside()
    peer = FakePeer(studies, cap=2, patient_root=False)
    with open_journal(tmp_path / "j.sqlite") as journal:
        plan_windows(peer, journal, Span(), Limits())
        enumerate_rest(peer, journal, Span(), Limits())
        assert found(journal) == {s.uid for s in studies}
        rec = journal.reconcile()
        assert rec.enumeration == "Patient ID prefixes" and not rec.gaps
        assert any("Patient Root" in c for c in rec.caveats)


def test_a_patient_with_more_studies_than_the_cap_is_listed_by_date(tmp_path: Path) -> None:
    studies = [study(f"1.7.{d}", f"202001{d:02d}", "", "BUSY") for d in range(1, 8)]
    studies.append(study("1.7.99", "", "", "BUSY"))  # undated: no key reaches it
    peer = FakePeer(studies, cap=3)
    with open_journal(tmp_path / "j.sqlite") as journal:
        enumerate_rest(peer, journal, Span(), Limits())
        assert found(journal) == {f"1.7.{d}" for d in range(1, 8)}
        rec = journal.reconcile()
        assert rec.gaps == [
            "patient BUSY: 8 studies at the peer, 7 listed (the rest have no Study Date "
            "and the peer caps its answers)"
        ]


def test_a_bounded_span_adds_only_undated_studies(tmp_path: Path) -> None:
    studies = undated_and_outside() + [study("1.2.7", "20190101", "", "P7")]
    peer = FakePeer(studies)
    span = Span(date(2020, 1, 1), date(2020, 12, 31))
    with open_journal(tmp_path / "j.sqlite") as journal:
        plan_windows(peer, journal, span, Limits())
        enumerate_rest(peer, journal, span, Limits())
        assert found(journal) == {"1.2.1", "1.2.2", "1.2.3", "1.2.4", "1.2.6"}
    with pytest.raises(ValueError, match="before"):
        Span(date(2021, 1, 1), date(2020, 1, 1))


def test_listing_goes_series_by_series_when_the_peer_caps_instances() -> None:
    held = Study(
        "9.1", "20200101", "", "P", {"9.1.a": ["9.1.a.1", "9.1.a.2"], "9.1.b": ["9.1.b.1"]}
    )
    peer = FakePeer([held], instance_cap=2)
    listing = list_instances(peer, "9.1", image_limits())
    assert listing.uids == {"9.1.a.1", "9.1.a.2", "9.1.b.1"} and not listing.cut
    assert "series 9.1" in peer.calls and listing.series_of({"9.1.b.1"}) == ["9.1.b"]
    big = Study("9.2", "20200101", "", "P", {"9.2.a": [f"9.2.a.{i}" for i in range(5)]})
    listing = list_instances(FakePeer([big], instance_cap=2), "9.2", image_limits())
    assert listing.cut == "the peer cut series 9.2.a at 2 instances"


def test_verify_believes_the_instance_list_not_the_count(tmp_path: Path) -> None:
    """A peer announcing a stale count (2) for a study of 3 instances, and one announcing
    none: both are judged by the SOP Instance UIDs it lists."""
    stale = study("8.1", "20200101", "", "P", instances=3)
    stale.announced = 2
    silent = study("8.2", "20200102", "", "Q", instances=2)
    silent.announced = None
    peer = FakePeer([stale, silent])
    out = tmp_path / "out"
    out.mkdir()
    for sop in ["8.1.1", "8.1.2", "8.2.1", "8.2.2"]:  # 8.1.3 never arrived
        (out / f"{sop}.dcm").write_bytes(b"x")
    with open_journal(tmp_path / "j.sqlite") as journal:
        plan_windows(peer, journal, SPAN, Limits())
        verify_studies(peer, journal, FolderTarget.into(out), "the folder")
        rec = journal.reconcile()
    assert rec.studies_done == 1 and not rec.complete
    assert rec.not_done == [
        NotDone("8.1", "missing", "1 of 3 instances not in the folder", ("8.1.3",))
    ]


def test_judge_without_a_listing_falls_back_to_counts() -> None:
    counted = RemoteStudy("1", "", "", 3)
    assert judge(counted, None, set(), 3, "the archive").status == "done"
    assert judge(counted, None, set(), 2, "the archive").reason == (
        "the archive holds 2 of 3 instances"
    )
    assert judge(RemoteStudy("1", "", "", None), None, set(), 2, "x").status == "unverifiable"


def test_report_lines_name_only_what_exists() -> None:
    rec = Reconciliation(studies_found=2, studies_done=2, windows=3)
    text = "\n".join(rec.lines())
    assert "Study Date" not in text and "C-MOVE" not in text and rec.complete
    rec = Reconciliation(studies_found=3, studies_done=2, undated=1, by_move=2, windows=1)
    rec.enumeration, rec.found_outside = "listing every study", 1
    rec.get_refused = "C-GET refused: the peer aborted the C-GET without sending anything"
    missing = tuple(f"1.2.{i}" for i in range(7))
    rec.not_done.append(NotDone("9.9", "missing", "7 of 9 instances not in the archive", missing))
    lines = rec.lines()
    assert lines[0].endswith(
        "(1 date-window query; 1 more found outside the windows by listing every study)"
    )
    assert "studies without a Study Date: 1" in lines
    assert any(line.startswith("retrieved by C-MOVE: 2 studies (C-GET refused") for line in lines)
    assert lines[-1].startswith("missing: 9.9: 7 of 9 instances") and "2 more" in lines[-1]
    assert rec.as_json()["not_done"] == [
        {"uid": "9.9", "status": "missing", "reason": "7 of 9 instances not in the archive",
         "missing": list(missing)}
    ]  # fmt: skip
