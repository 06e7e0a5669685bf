"""Migration from a legacy PACS: every study found, fetched, and proven instance by instance.

The modules, in the order a run uses them:

- :mod:`.peer`: the peer (:class:`RemotePeer`), C-FIND over DIMSE, and when to suspect that
  an answer was cut at the peer's limit;
- :mod:`.scope`: one query's keys, and how to split it (dates, hours, Patient ID);
- :mod:`.plan`: Study Date windows, then the enumeration of studies no window matches;
- :mod:`.retrieve`: C-GET per study, C-MOVE to our own AE title when C-GET does not do;
- :mod:`.targets`: the archive (staged, imported like ``duckpacs import``) or a folder;
- :mod:`.reconcile`: the SOP Instance UIDs the peer lists against what the target holds;
- :mod:`.journal`, :mod:`.report`: progress on disk, so a run resumes; the final report;
- :mod:`.run`: :func:`migrate` and :func:`verify`.
"""

from duckpacs.ingest.migrate.journal import Journal, dated, open_journal
from duckpacs.ingest.migrate.peer import (
    DimseFinder,
    Finder,
    QueryRefused,
    RemoteInstance,
    RemotePatient,
    RemotePeer,
    RemoteStudy,
)
from duckpacs.ingest.migrate.plan import Span, enumerate_rest, plan_windows
from duckpacs.ingest.migrate.reconcile import Listing, list_instances
from duckpacs.ingest.migrate.report import NotDone, Reconciliation
from duckpacs.ingest.migrate.retrieve import MoveListener, get_study, move_study
from duckpacs.ingest.migrate.run import MoveDestination, find_everything, migrate, verify
from duckpacs.ingest.migrate.scope import Answer, Limits, Scope
from duckpacs.ingest.migrate.targets import (
    MIGRATE_DIR,
    ArchiveTarget,
    FolderTarget,
    Receiver,
    Target,
    folder_receiver,
    journal_path,
    open_archive,
)

__all__ = [
    "MIGRATE_DIR",
    "Answer",
    "ArchiveTarget",
    "DimseFinder",
    "Finder",
    "FolderTarget",
    "Journal",
    "Limits",
    "Listing",
    "MoveDestination",
    "MoveListener",
    "NotDone",
    "QueryRefused",
    "Receiver",
    "Reconciliation",
    "RemoteInstance",
    "RemotePatient",
    "RemotePeer",
    "RemoteStudy",
    "Scope",
    "Span",
    "Target",
    "dated",
    "enumerate_rest",
    "find_everything",
    "folder_receiver",
    "get_study",
    "journal_path",
    "list_instances",
    "migrate",
    "move_study",
    "open_archive",
    "open_journal",
    "plan_windows",
    "verify",
]
