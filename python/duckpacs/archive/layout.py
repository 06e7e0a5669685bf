"""The data folder: where everything of one archive lives, and who writes which packs.

The one owner of the folder's layout, and the only module that opens the Rust store
(``duckpacs._core.Store``)::

    DATA/
      duckpacs.toml           configuration (duckpacs init)
      store/packs/*.dpk       the store: the source of truth (docs/STORAGE-FORMAT.md)
      store/spool/            large C-STOREs on their way into the store (never acknowledged)
      index.duckdb            the index, a view of the store (docs/INDEX.md)
      import-journal.sqlite   inputs already imported (duckpacs import)
      queue.sqlite, .lock     the forwarding queue (duckpacs.routing) and its deliverer's lock
      policy.sqlite           protected studies (duckpacs.policy)
      migrate/                journals of migrations, per peer
      users.json, audit.log   web users and the audit log
      backup.json             the last completed `duckpacs backup` (duckpacs.backup.status)
      index.sock, index.key   the running server's local socket for command-line tools

Store writer ids: each process that appends to the store does so under its own id (an
exclusive lock per id), so two processes never append to the same pack.
"""

from __future__ import annotations

from pathlib import Path

from duckpacs import _core, store_config

STORE_DIRNAME = "store"
KEY_FILENAME = "index.key"
IMPORT_JOURNAL = "import-journal.sqlite"
QUEUE_DB = "queue.sqlite"
QUEUE_LOCK = "queue.lock"
POLICY_DB = "policy.sqlite"

# Store writer ids (at most one process holds each).
SERVE_WRITER = 1  # `duckpacs serve`: DIMSE and STOW-RS
DENSIFY_WRITER = 0xFFFD  # the packs densifying writes (serve, compact; fixed in the store)
IMPORT_WRITER = 0xFFFE  # import, import-scans, migrate
MAINTENANCE_WRITER = 0xFFFF  # compact


def store_dir(data_dir: Path) -> Path:
    return Path(data_dir) / STORE_DIRNAME


def open_store(data_dir: Path, writer_id: int | None = None, **options: object) -> _core.Store:
    """The archive's store: read-only, or appending under ``writer_id`` (see above).

    With ``[store] backend = "s3"`` configured (:mod:`duckpacs.store_config`) the store is
    given the bucket: where its sealed packs are uploaded and other nodes' packs read."""
    s3 = store_config.configured()
    if s3 is not None:
        options.setdefault("remote", s3.binding())
        # Written dense at once: densifying would rewrite packs after their upload, and the
        # densifier's open output pack would wait for an upload while readers follow the
        # index to it.
        options.setdefault("arrival", "dense")
    return _core.Store(store_dir(data_dir), writer_id=writer_id, **options)  # type: ignore[arg-type]
