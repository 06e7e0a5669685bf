"""The forwarding queue (DATA/queue.sqlite): one job per destination and instance, retries
that back off, what a kill leaves behind, and what operators do (retry, drop)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from duckpacs.routing.queue import Cursor, DelivererLock, Poll, Queue, backoff


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    q = Queue(tmp_path / "queue.sqlite")
    yield q
    q.close()


def settle(q: Queue, dest: str, sent=(), refused=(), untried=(), reason: str = "") -> None:
    q.settle(dest, list(sent), list(refused), list(untried), reason=reason, max_attempts=3,
             initial=10, maximum=40)  # fmt: skip


def test_an_instance_is_queued_once_per_destination(queue: Queue) -> None:
    ids = queue.enqueue([("1.1", "9"), ("1.2", "9")], ["a", "b"], "route:x")
    assert len(ids) == 4
    again = queue.enqueue([("1.1", "9")], ["a"], "route:y")
    assert again == [ids[0]]
    assert {(j.destination, j.sop_instance_uid, j.origin) for j in queue.jobs()} == {
        ("a", "1.1", "route:x"), ("a", "1.2", "route:x"), ("b", "1.1", "route:x"),
        ("b", "1.2", "route:x"),
    }  # fmt: skip


def test_a_job_sent_is_not_queued_again_by_a_rule_but_is_by_a_manual_send(queue: Queue) -> None:
    (job_id,) = queue.enqueue([("1.1", "9")], ["a"], "route:x")
    assert [j.id for j in queue.claim("a", 10)] == [job_id]
    settle(queue, "a", sent=[job_id])
    queue.enqueue([("1.1", "9")], ["a"], "route:x")
    assert [j.state for j in queue.jobs(states=())] == ["sent"]
    queue.enqueue([("1.1", "9")], ["a"], "send:cli", again=True)
    (job,) = queue.jobs()
    assert (job.state, job.origin, job.attempts) == ("waiting", "send:cli", 0)


def test_claims_take_due_jobs_oldest_first_and_only_once(queue: Queue) -> None:
    ids = queue.enqueue([(f"1.{n}", "9") for n in range(5)], ["a"], "route:x")
    first = queue.claim("a", 3)
    assert [j.id for j in first] == ids[:3]
    assert [j.id for j in queue.claim("a", 10)] == ids[3:]
    assert queue.claim("a", 10) == []
    assert queue.claim("b", 10) == []


def test_a_refused_instance_waits_then_fails_after_max_attempts(queue: Queue) -> None:
    (job_id,) = queue.enqueue([("1.1", "9")], ["a"], "route:x")
    queue.claim("a", 1)
    before = time.time()
    settle(queue, "a", refused=[(job_id, "the peer answered 0xA700")])
    (job,) = queue.jobs()
    assert (job.state, job.attempts) == ("waiting", 1) and job.next_at >= before + 10
    assert queue.claim("a", 1) == []  # not due yet: its own back-off
    for attempt in (2, 3):
        assert queue.retry(ids=[job_id]) == 1  # the operator's retry makes it due now...
        with queue._tx() as con:  # ...and resets attempts: put them back for this test
            con.execute("UPDATE jobs SET attempts = ? WHERE id = ?", [attempt - 1, job_id])
        assert [j.id for j in queue.claim("a", 1)] == [job_id]
        settle(queue, "a", refused=[(job_id, "the peer answered 0xA700")])
    (job,) = queue.jobs(states=("failed",))
    assert job.attempts == 3 and job.error == "the peer answered 0xA700"
    assert queue.retry(ids=[job_id]) == 1
    assert queue.jobs()[0].state == "waiting" and queue.jobs()[0].attempts == 0


def test_back_off_doubles_and_is_capped() -> None:
    assert [backoff(n, 10, 60) for n in range(1, 6)] == [10, 20, 40, 60, 60]
    assert backoff(10_000, 1, 600) == 600


def test_a_destination_that_is_down_backs_off_alone(queue: Queue) -> None:
    queue.enqueue([("1.1", "9")], ["down", "up"], "route:x")
    jobs = queue.claim("down", 10)
    before = time.time()
    next_try = queue.unreachable("down", [j.id for j in jobs], "connection refused",
                                 initial=10, maximum=40)  # fmt: skip
    assert next_try >= before + 10
    assert queue.next_try("down") >= before + 10
    assert queue.next_try("up") <= time.time()
    (waiting,) = queue.jobs(destination="down")
    assert (waiting.state, waiting.attempts, waiting.error) == ("waiting", 0, "connection refused")
    queue.claim("down", 10)  # not due: the destination's back-off holds it
    queue.unreachable("down", [], "connection refused", initial=10, maximum=40)
    (row,) = [r for r in queue.summary() if r["destination"] == "down"]
    assert row["failures"] == 2 and row["next_try"] >= before + 20
    settle(queue, "down")  # an association that worked clears the back-off
    (row,) = [r for r in queue.summary() if r["destination"] == "down"]
    assert row["failures"] == 0 and row["next_try"] is None


def test_after_a_kill_answered_jobs_count_as_sent_and_claimed_ones_wait(queue: Queue) -> None:
    ids = queue.enqueue([(f"1.{n}", "9") for n in range(3)], ["a"], "route:x")
    queue.claim("a", 3)
    queue.answered(ids[0])
    queue.answered(ids[1])
    # (killed here: the association's outcome was never read)
    assert queue.recover() == (2, 1)
    assert [j.state for j in queue.jobs(states=())] == ["sent", "sent", "waiting"]


def test_retry_and_drop_need_a_selection_and_keep_sent_jobs(queue: Queue) -> None:
    ids = queue.enqueue([(f"1.{n}", f"s{n % 2}") for n in range(4)], ["a", "b"], "route:x")
    queue.claim("a", 1)
    settle(queue, "a", sent=[ids[0]])
    assert queue.drop(study="s1") == 4  # 1.1 and 1.3 for a and b
    assert queue.drop(destination="a") == 1  # 1.2 (1.0 was sent)
    assert queue.retry(destination="b") == 2
    states = {(j.destination, j.sop_instance_uid): j.state for j in queue.jobs(states=())}
    assert states[("a", "1.0")] == "sent"
    assert states[("a", "1.1")] == states[("b", "1.3")] == "dropped"
    assert states[("b", "1.0")] == states[("b", "1.2")] == "waiting"
    assert queue.pending_studies() == {"s0"}


def test_a_poll_writes_jobs_watches_and_cursor_together(queue: Queue) -> None:
    assert queue.cursor() is None
    queue.record_poll(Poll([("a", "1.1", "s", "route:x")], [("r", "s")], [], Cursor(7, "1.1", 5)))
    assert queue.cursor() == Cursor(7, "1.1", 5)
    assert queue.watched("r", ["s", "t"]) == {"s"}
    assert queue.stable("r", time.time() + 1) == [("s", 0)]
    queue.fire("r", "s", [("a", "1.2", "s", "route:r")], 9)
    assert queue.stable("r", time.time() + 1) == []
    queue.record_poll(Poll([], [], [("r", "s")], None))  # a later arrival re-arms it
    assert queue.stable("r", time.time() + 1) == [("s", 9)]
    assert {j.sop_instance_uid for j in queue.jobs()} == {"1.1", "1.2"}


def test_one_deliverer_at_a_time(tmp_path: Path) -> None:
    first, second = DelivererLock(tmp_path / "q.lock"), DelivererLock(tmp_path / "q.lock")
    assert first.acquire() and first.held
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()
