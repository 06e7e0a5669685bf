"""A migration run: find every study, fetch each one not done, prove what arrived.

:func:`migrate` plans (date windows, then the enumeration of what they miss), reopens studies
done earlier that the target no longer fully holds (by count: no network), then retrieves the
studies not done, ``parallel`` at once in worker threads, each on its own associations: the
IMAGE-level listing of the study, C-GET, and C-MOVE for whatever C-GET did not bring. The
target's ``finish`` (the archive's import), the comparison of the listing with what the target
holds, and the journal run on the calling thread as each retrieval completes, while the next
retrievals go on. :func:`verify` runs the plan and the comparison for every study and
fetches nothing.

A study is ``done`` when the target holds every SOP Instance UID the peer lists for it (or,
when the peer lists none, as many instances as it announces); otherwise ``incomplete``,
``failed`` or ``missing``, with the reason and the UIDs it lacks. The journal is committed
after each study, so an interrupted run resumes with the first study not done; a study
interrupted halfway is fetched again, which is harmless: files are named by SOP Instance UID
and the importer skips instances already archived with the same bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import date

from duckpacs.errors import NetworkError
from duckpacs.ingest.migrate.journal import Journal
from duckpacs.ingest.migrate.peer import DimseFinder, QueryRefused, RemotePeer, RemoteStudy
from duckpacs.ingest.migrate.plan import Span, enumerate_rest, plan_windows
from duckpacs.ingest.migrate.reconcile import (
    Listing,
    Verdict,
    image_limits,
    judge,
    list_instances,
    verify_studies,
)
from duckpacs.ingest.migrate.report import Reconciliation
from duckpacs.ingest.migrate.retrieve import MoveListener, Retrieved, get_study, move_study
from duckpacs.ingest.migrate.scope import Limits
from duckpacs.ingest.migrate.targets import FolderTarget, Receiver, Target


@dataclass(frozen=True)
class MoveDestination:
    """Where C-MOVE results come to: our AE title, and the address the listener binds."""

    ae_title: str
    bind: str = "0.0.0.0"
    port: int = 11112
    max_pdu: int = 262144


@dataclass
class Fetched:
    """What the retrieval of one study brought, before the target's verdict."""

    listing: Listing | None
    received: int = 0
    method: str = ""  # "C-GET", "C-MOVE" or "C-GET+C-MOVE"
    problem: str = ""  # a problem left after every attempt
    failed: int = 0  # sub-operations the peer reported failed in the last attempt


class Retrieval:
    """What the retrieval threads share: whether the peer refused C-GET, and the move
    listener, started when first needed and stopped by :meth:`close`."""

    def __init__(self, peer: RemotePeer, move_to: MoveDestination | None) -> None:
        self.peer = peer
        self.move_to = move_to
        self.get_refused = ""
        self.limits = image_limits()
        self._listener: MoveListener | None = None
        self._listen_error = ""
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()

    def _listening(self) -> tuple[MoveListener | None, str]:
        with self._lock:
            if self._listener is None and not self._listen_error and self.move_to is not None:
                to = self.move_to
                listener = MoveListener(to.ae_title, to.bind, to.port, to.max_pdu)
                try:
                    listener.start()
                    self._listener = listener
                except NetworkError as e:  # the port is taken: said once, for every study
                    self._listen_error = str(e)
            return self._listener, self._listen_error

    def fetch(self, study: RemoteStudy, receiver: Receiver) -> Fetched:
        """List the study's instances, C-GET it, C-MOVE whatever C-GET did not bring."""
        listing: Listing | None = None
        try:
            with DimseFinder(self.peer) as finder:
                listing = list_instances(finder, study.uid, self.limits)
        except QueryRefused:
            listing = None  # the verdict falls back to the peer's count
        out = Fetched(listing)
        got = self._get(study, listing, receiver, out)
        lacking = listing.uids - got.uids if listing is not None else set()
        if not (got.refused or got.problem or got.failed or lacking) or self.move_to is None:
            out.problem, out.failed = got.problem or got.refused, got.failed
            return out
        listener, error = self._listening()
        if listener is None:
            out.problem = f"{got.problem or got.refused or 'C-GET incomplete'}; {error}"
            return out
        # Only the series still lacking, when C-GET brought part of the study.
        series = listing.series_of(lacking) if listing is not None and got.uids else []
        moved = move_study(self.peer, listener, study.uid, series, receiver)
        out.method = "+".join(m for m in (out.method, "C-MOVE") if m)
        out.received += moved.received
        out.problem, out.failed = moved.problem, moved.failed
        return out

    def _get(
        self, study: RemoteStudy, listing: Listing | None, receiver: Receiver, out: Fetched
    ) -> Retrieved:
        """C-GET, unless the peer refused it before and C-MOVE can stand in."""
        if self.get_refused and self.move_to is not None:
            return Retrieved(refused=self.get_refused)
        classes = list(study.sop_classes) or (listing.sop_classes() if listing else [])
        got = get_study(self.peer, study.uid, classes, receiver)
        out.method, out.received = "C-GET", got.received
        if got.refused:
            with self._lock:
                self.get_refused = self.get_refused or f"C-GET refused: {got.refused}"
        return got


def find_everything(peer: RemotePeer, journal: Journal, span: Span, window_limit: int) -> None:
    """Date windows, then the enumeration of what they miss (see :mod:`.plan`)."""
    limits = Limits(window_limit)
    with DimseFinder(peer) as finder:
        plan_windows(finder, journal, span, limits)
        enumerate_rest(finder, journal, span, limits)


def migrate(
    peer: RemotePeer,
    journal: Journal,
    target: Receiver | Target,
    since: date | None = None,
    until: date | None = None,
    *,
    window_limit: int = 500,
    max_studies: int | None = None,
    parallel: int = 1,
    move_to: MoveDestination | None = None,
    on_study: Callable[[RemoteStudy, int], None] | None = None,
    on_instance: Callable[[int], None] | None = None,
) -> Reconciliation:
    """Plan (or resume the plan), retrieve every study not done, return the reconciliation.

    ``target`` is a :class:`Target` (e.g. :class:`ArchiveTarget`) or a plain receiver
    callable. ``since``/``until`` bound the Study Dates asked for (None: everything).
    ``max_studies`` stops after that many retrievals (a bounded run; the next run resumes).
    ``move_to`` enables the C-MOVE fallback. ``on_instance`` is called with each received
    instance's size, from the worker threads.
    """
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    sink = target if isinstance(target, Target) else FolderTarget(target)
    find_everything(peer, journal, Span(since, until), window_limit)
    _reopen_missing(journal, sink)
    pending = journal.pending()
    queue = iter(pending if max_studies is None else pending[: max(0, max_studies)])
    retrieval = Retrieval(peer, move_to)
    running: dict[Future[Fetched], RemoteStudy] = {}
    try:
        with ThreadPoolExecutor(parallel, thread_name_prefix="duckpacs-migrate") as pool:

            def start_next() -> None:
                study = next(queue, None)
                if study is not None:
                    receive = _counting(sink.begin(study), on_instance)
                    running[pool.submit(retrieval.fetch, study, receive)] = study

            for _ in range(parallel):
                start_next()
            try:
                while running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        study = running.pop(future)
                        fetched = future.result()
                        start_next()  # the next retrieval runs while this study is imported
                        _conclude(journal, sink, study, fetched)
                        if on_study is not None:
                            on_study(study, fetched.received)
            except BaseException:
                for future in running:
                    future.cancel()
                raise
    finally:
        retrieval.close()
    rec = journal.reconcile(sink.held)
    rec.get_refused = retrieval.get_refused
    return rec


def _where(sink: Target) -> str:
    return "the archive" if sink.held is not None else "the target"


def _conclude(journal: Journal, sink: Target, study: RemoteStudy, fetched: Fetched) -> None:
    """Import what arrived, compare it with the peer's listing, journal the verdict."""
    held, kept = sink.finish(study, fetched.received)
    listing = fetched.listing
    lacking = sink.lacking(listing.uids) if listing is not None else set()
    verdict = judge(study, listing, lacking, held, _where(sink))
    failed = f"{fetched.failed} sub-operations failed at the peer" if fetched.failed else ""
    problem = kept or fetched.problem or failed
    if problem and verdict.status == "done" and not (listing and listing.instances):
        verdict = Verdict("failed", problem)  # no listing to prove the study complete
    elif problem and verdict.status != "done":
        verdict = Verdict(verdict.status, f"{verdict.reason}; {problem}", verdict.missing)
    journal.record_study(
        study.uid,
        verdict.status,
        fetched.received,
        verdict.reason,
        held if sink.held is not None else None,
        listed=len(listing.instances) if listing is not None else None,
        method=fetched.method,
        missing=verdict.missing,
    )


def verify(
    peer: RemotePeer,
    journal: Journal,
    target: Target,
    since: date | None = None,
    until: date | None = None,
    *,
    window_limit: int = 500,
    on_study: Callable[[RemoteStudy, Verdict], None] | None = None,
) -> Reconciliation:
    """Find every study (queries only) and compare each with the target; fetch nothing."""
    find_everything(peer, journal, Span(since, until), window_limit)
    with DimseFinder(peer) as finder:
        verify_studies(finder, journal, target, _where(target), on_study)
    rec = journal.reconcile(target.held)
    rec.verified = True
    return rec


def _counting(receive: Receiver, on_instance: Callable[[int], None] | None) -> Receiver:
    if on_instance is None:
        return receive

    def counted(sop_uid: str, data: bytes) -> None:
        receive(sop_uid, data)
        on_instance(len(data))

    return counted


def _reopen_missing(journal: Journal, sink: Target) -> None:
    """Studies done earlier whose instances the target no longer all holds are fetched again."""
    if sink.held is None:
        return
    done = journal.done_studies()
    counts = sink.held([uid for uid, _ in done])
    for uid, remote in done:
        have = counts.get(uid, 0)
        if remote is not None and have < remote:
            journal.reopen(uid, f"the archive holds {have} of {remote} instances")
