"""The archive index: one DuckDB file, ``<data>/index.duckdb``, owned by one process.

DuckDB lets one process open a file read-write; that process (``duckpacs serve``) owns the
:class:`Index` and answers other processes over IPC, so every public method takes and returns
plain data. Calls are serialised by a lock, so one :class:`Index` can be shared by threads.

The index is a view of the store: it can always be rebuilt with ``duckpacs reindex``. When
the file is damaged, or missing while the store holds records, :meth:`Index.open` raises
:class:`~duckpacs.errors.ArchiveIndexError` saying so.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import duckdb

from duckpacs import logs
from duckpacs.errors import ArchiveIndexError, ArchiveLockedError, IndexUnusableError, QueryError
from duckpacs.index import output, schema
from duckpacs.index.output import Rows
from duckpacs.index.query import (
    Cond,
    compile_condition,
    compile_find,
    compile_locations,
    finish,
    scope_sql,
)

INDEX_FILENAME = "index.duckdb"
STORE_DIRNAME = "store"
REINDEX_HINT = "run `duckpacs reindex` to rebuild it from the store"
# WAL size at which a bulk load lets DuckDB checkpoint (see Index.bulk_load).
BULK_CHECKPOINT_THRESHOLD = "4GiB"

log = logs.get("index")

Location = tuple[str, str | None, str | None, int | None, int | None, int | None]


def index_path(path: str | Path) -> Path:
    """The index file for ``path``: an archive folder, or the ``.duckdb`` file itself."""
    p = Path(path)
    return p / INDEX_FILENAME if p.is_dir() or not p.suffix else p


def store_has_records(data_dir: Path) -> bool:
    """True when ``<data>/store`` holds any file (the index must then describe them)."""
    store = data_dir / STORE_DIRNAME
    return store.is_dir() and any(f.is_file() for f in store.rglob("*"))


_NO_ROWS: Final = {"added": 0, "replaced": 0, "unchanged": 0, "duplicates": 0, "rejected": 0}
_NAIVE_TIMESTAMPS: Final = frozenset({"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"})


def _cast(field: schema.Field, source_type: str) -> str:
    """The batch column ``field`` as its :data:`~duckpacs.index.schema.BATCH_SCHEMA` type
    (a cast to the type a column already has costs nothing)."""
    column = f'"{field.name}"'
    if field.type == "TIMESTAMPTZ" and source_type in _NAIVE_TIMESTAMPS:
        return f"timezone('UTC', {column}::TIMESTAMP) AS {column}"  # naive means UTC
    return f"CAST({column} AS {field.type}) AS {column}"


def _source_casts(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Column name -> the SELECT expression reading it from the registered batch
    ``_dp_source`` as its batch schema type."""
    try:
        source = con.sql("FROM _dp_source")
        types = dict(zip(source.columns, (str(t) for t in source.types), strict=True))
    except duckdb.Error as e:
        raise ArchiveIndexError(f"header batch: DuckDB cannot read it ({e})") from e
    missing = [f.name for f in schema.BATCH_SCHEMA if f.name not in types]
    if missing:
        raise ArchiveIndexError(f"header batch lacks columns {', '.join(missing)}")
    return {f.name: _cast(f, types[f.name]) for f in schema.BATCH_SCHEMA}


class Index:
    """The DuckDB index of one archive. Create it with :meth:`open`."""

    shared = False  # one process writes it (see IndexBackend.shared)

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> None:
        self._con = con
        self.path = path
        self.read_only = read_only
        self._lock = threading.RLock()
        for macro in schema.MACROS:
            con.execute(macro)
        rows = con.execute("SELECT coalesce(max(iid), 0) + 1 FROM instances").fetchall()
        self._next_iid = int(rows[0][0]) if rows else 1
        self._defer = False  # inside bulk_load(defer=True)
        self._view_casts = ""  # what the view _dp_batch casts (see _batch_view)

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, read_only: bool = False, *, check_store: bool = True) -> Index:
        """Open (or create) the index of an archive.

        Parameters
        ----------
        path : the archive folder (the file is ``<path>/index.duckdb``) or the file itself.
        read_only : open without write access (any number of read-only openers may coexist,
            but not beside the read-write owner: DuckDB's rule).
        check_store : refuse to create a new, empty index when the store beside it holds
            records (the index would silently miss them).

        Raises
        ------
        ArchiveIndexError : the file is damaged, from a newer duckpacs, or missing while the
            store holds records; the message says to run ``duckpacs reindex``.
        ArchiveLockedError : another process has the file open read-write.
        """
        file = index_path(path)
        exists = file.exists()
        if not exists:
            if check_store and store_has_records(file.parent):
                raise IndexUnusableError(
                    f"{file}: the index is missing but the store holds records; {REINDEX_HINT}"
                )
            if read_only:
                raise ArchiveIndexError(f"{file}: no index here yet (is this an archive?)")
            file.parent.mkdir(parents=True, exist_ok=True)
        con = cls._connect(file, read_only)
        try:
            cls._migrate(con, file, read_only, created=not exists)
            return cls(con, file, read_only)
        except duckdb.Error as e:  # a torn file can open and fail on its first read
            con.close()
            raise IndexUnusableError(f"{file}: the index is damaged ({e}); {REINDEX_HINT}") from e
        except BaseException:
            con.close()
            raise

    @staticmethod
    def _connect(file: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            # No file access from SQL: `Index.sql` may be reached from other processes, and
            # nothing here reads or writes files through DuckDB (batches arrive as Arrow).
            config: dict[str, str | bool | int | float | list[str]] = {
                "enable_external_access": False
            }
            return duckdb.connect(str(file), read_only=read_only, config=config)
        except duckdb.Error as e:
            text = str(e)
            if "lock" in text.lower():
                raise ArchiveLockedError(
                    f"{file}: the index is open in another process (the serving process owns "
                    "it; stop it or ask it)"
                ) from e
            raise IndexUnusableError(
                f"{file}: cannot open the index ({text}); {REINDEX_HINT}"
            ) from e

    @staticmethod
    def _migrate(
        con: duckdb.DuckDBPyConnection, file: Path, read_only: bool, created: bool
    ) -> None:
        try:
            tables = {
                r[0]
                for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
            }
            if "duckpacs_meta" not in tables:
                if tables or read_only:
                    raise IndexUnusableError(f"{file}: not a duckpacs index; {REINDEX_HINT}")
                _create(con)
                return
            row = con.execute(
                "SELECT value FROM duckpacs_meta WHERE key = 'schema_version'"
            ).fetchall()
        except duckdb.Error as e:
            raise IndexUnusableError(f"{file}: the index is damaged ({e}); {REINDEX_HINT}") from e
        version = int(row[0][0]) if row else 0
        if version > schema.SCHEMA_VERSION:
            raise ArchiveIndexError(
                f"{file}: index schema {version} is newer than this duckpacs "
                f"({schema.SCHEMA_VERSION}); upgrade duckpacs or {REINDEX_HINT}"
            )
        if version < schema.SCHEMA_VERSION:
            # Each version's steps in MIGRATIONS bring it to the next one.
            if read_only:
                raise ArchiveIndexError(
                    f"{file}: index schema {version} needs migrating; "
                    "open it read-write once (duckpacs serve)"
                )
            for old in range(version, schema.SCHEMA_VERSION):
                for step in MIGRATIONS.get(old, ()):
                    con.execute(step)
            _set_version(con)
            log.info("index schema migrated from version %d to %d", version, schema.SCHEMA_VERSION)

    def close(self) -> None:
        """Close the DuckDB connection (checkpointing the write-ahead log)."""
        with self._lock:
            self._con.close()

    def ping(self) -> None:
        """Nothing to reach: the file is in this process (see PgIndex.ping)."""

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------

    @contextmanager
    def bulk_load(self, *, defer: bool = False) -> Iterator[Index]:
        """Batches added inside are committed (durable in the write-ahead log) as usual, but
        the WAL is folded into the database file once at the end instead of after every
        commit that takes it past DuckDB's 16 MB default: a third of the time of a bulk load
        (import, reindex) went into those repeated checkpoints. A crash in between loses
        nothing; the next open replays the WAL.

        ``defer`` (for a load into an empty index, as reindex does) drops the ART indexes and
        leaves the series, study and patient tables alone while batches arrive, then builds
        both once at the end: cheaper than maintaining them batch by batch, whose cost grows
        with the table. Queries made during such a load see no level rows.
        """
        if self.read_only:
            raise ArchiveIndexError(f"{self.path}: the index is open read-only")
        with self._lock:
            row = self._con.execute("SELECT current_setting('checkpoint_threshold')").fetchall()
            previous = str(row[0][0]) if row else "16MiB"
            self._con.execute(f"SET checkpoint_threshold = '{BULK_CHECKPOINT_THRESHOLD}'")
            if defer:
                for statement in schema.DROP_INDEX_STATEMENTS:
                    self._con.execute(statement)
                self._defer = True
        try:
            yield self
        finally:
            with self._lock:
                if defer:
                    self._defer = False
                    with self._transaction():
                        _rebuild_levels(self._con)
                    for statement in schema.INDEX_STATEMENTS:
                        self._con.execute(statement)
                self._con.execute("CHECKPOINT")
                self._con.execute("SET checkpoint_threshold = ?", [previous])

    def add_batch(self, batch: Any, *, marks: Mapping[int, int] | None = None) -> dict[str, int]:
        """Append a header batch (:data:`~duckpacs.index.schema.BATCH_SCHEMA`) in bulk.

        Duplicates are resolved with set operations over the whole batch: within the batch the
        last row of a SOP Instance UID wins; a row whose SOP Instance UID and sha256 equal an
        indexed instance is skipped; any other row with an indexed SOP Instance UID replaces
        it. The level tables of every touched series, study and patient are recomputed.

        Parameters
        ----------
        batch : anything DuckDB scans as Arrow: the Rust ``HeaderBatch``, any object exporting
            the Arrow PyCapsule interface (``__arrow_c_stream__``), a ``pyarrow.Table`` or
            ``RecordBatch``. Columns are cast to :data:`~duckpacs.index.schema.BATCH_SCHEMA`
            (a naive timestamp is taken as UTC); other columns are ignored.

        Returns
        -------
        dict with ``added`` (new instances), ``replaced``, ``unchanged``, ``duplicates``
        (rows superseded by a later row of the batch) and ``rejected`` (no SOP Instance UID).

        ``marks`` (store pack -> offset) advance the index's record of how far into each pack
        it has applied the store's records, in the same transaction (a mark never moves
        back here; see :meth:`set_marks`).
        """
        if self.read_only:
            raise ArchiveIndexError(f"{self.path}: the index is open read-only")
        with self._lock:
            # Registered, and the view over it made, outside the transaction: unregistering
            # inside a failed one would fail too and hide the first error.
            self._con.register("_dp_source", batch)
            try:
                self._batch_view()
                with self._transaction():
                    if marks:
                        self._advance_marks(marks)
                    try:
                        rows, counts = self._append(self._next_iid - 1)
                    except duckdb.ConversionException as e:
                        raise ArchiveIndexError(
                            f"header batch does not fit its schema ({e})"
                        ) from e
            finally:
                self._con.unregister("_dp_source")
            self._next_iid += rows
        log.debug("indexed batch %s", counts)
        return counts

    def _batch_view(self) -> None:
        """Make ``_dp_batch`` the registered batch ``_dp_source`` cast to the batch schema,
        with ``pos``, each row's place in the batch from 1 (``row_number() OVER ()`` follows
        the order of the source: DuckDB's order preservation). The view is made again only
        when the casts change (they follow the source's types, the same for every batch of
        the Rust builder)."""
        casts = ", ".join(_source_casts(self._con).values())
        if casts != self._view_casts:
            self._con.execute(
                "CREATE OR REPLACE TEMP VIEW _dp_batch AS "
                f"SELECT row_number() OVER () AS pos, {casts} FROM _dp_source"
            )
            self._view_casts = casts

    def _append(self, offset: int) -> tuple[int, dict[str, int]]:
        """Index the batch ``_dp_batch``; row ``pos`` gets iid ``pos + offset``. Returns the
        number of rows and the counts of :meth:`add_batch`."""
        con = self._con
        # One pass over the batch: every row with what the dedupe and the level tables need,
        # then only the rows that may be new are kept.
        con.execute("""CREATE OR REPLACE TEMP TABLE _dp_new AS
            SELECT pos, sop_instance_uid, sha256, series_instance_uid, study_instance_uid,
                   patient_id, coalesce(sop_instance_uid, '') <> '' AS keyed,
                   row_number() OVER (PARTITION BY sop_instance_uid ORDER BY pos DESC) = 1 AS last
            FROM _dp_batch""")
        row = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE keyed), "
            "count(*) FILTER (WHERE keyed AND last) FROM _dp_new"
        ).fetchall()[0]
        total, with_uid, keyed = int(row[0]), int(row[1]), int(row[2])
        if not total:
            return 0, dict(_NO_ROWS)
        con.execute("DELETE FROM _dp_new WHERE NOT (keyed AND last)")
        # The indexed instances with these UIDs first (an IN over the ART index), then the
        # small joins: joining `instances` directly scanned all of it for every batch.
        con.execute("""CREATE OR REPLACE TEMP TABLE _dp_old AS
            SELECT iid, sop_instance_uid, sha256, series_instance_uid, study_instance_uid,
                   patient_id FROM instances
            WHERE sop_instance_uid IN (SELECT sop_instance_uid FROM _dp_new)""")
        con.execute("""DELETE FROM _dp_new USING _dp_old o
            WHERE o.sop_instance_uid = _dp_new.sop_instance_uid AND o.sha256 = _dp_new.sha256""")
        fresh = _count(con, "_dp_new")
        con.execute("""DELETE FROM _dp_old
            WHERE sop_instance_uid NOT IN (SELECT sop_instance_uid FROM _dp_new)""")
        replaced = _count(con, "_dp_old")
        con.execute("DELETE FROM attributes WHERE iid IN (SELECT iid FROM _dp_old)")
        con.execute("DELETE FROM instances WHERE iid IN (SELECT iid FROM _dp_old)")
        con.execute(f"""INSERT INTO instances (iid, {schema.column_list()})
            SELECT b.pos + {int(offset)}, {schema.typed_select("b")} FROM _dp_batch b
            WHERE b.pos IN (SELECT pos FROM _dp_new)""")
        self._insert_attributes(offset, every_row=fresh == total)
        con.execute("""CREATE OR REPLACE TEMP TABLE _dp_touched AS
            SELECT DISTINCT coalesce(series_instance_uid, '') AS series_instance_uid,
                   coalesce(study_instance_uid, '') AS study_instance_uid,
                   coalesce(patient_id, '') AS patient_id FROM (
              SELECT series_instance_uid, study_instance_uid, patient_id FROM _dp_new
              UNION ALL SELECT series_instance_uid, study_instance_uid, patient_id FROM _dp_old)""")
        if not self._defer:  # else built once when the bulk load ends
            _refresh_levels(con)
        return total, {
            "added": fresh - replaced,
            "replaced": replaced,
            "unchanged": keyed - fresh,
            "duplicates": with_uid - keyed,
            "rejected": total - with_uid,
        }

    def _insert_attributes(self, offset: int, *, every_row: bool) -> None:
        """Append the ``attrs`` of the kept rows of ``_dp_batch`` (all of them when
        ``every_row``), but the top-level key attributes: those are the typed columns of
        ``instances``."""
        kept = "" if every_row else "WHERE pos IN (SELECT pos FROM _dp_new)"
        fields = ", ".join(f'e."{f.name}"' for f in schema.ATTR_FIELDS)
        keys = ", ".join(str(tag) for tag in sorted(schema.KEYS_BY_TAG))
        # Sorted by tag within the batch, so the zone maps of a row group narrow on `tag`: a
        # whole-archive match on one attribute skips most row groups. Ties keep the order the
        # entries came in (`place`: instance, then list order), as a stable sort would.
        self._con.execute(f"""INSERT INTO attributes
            SELECT pos + {int(offset)}, {fields} FROM (
              SELECT pos, e, row_number() OVER () AS place FROM (
                SELECT pos, unnest(attrs) AS e FROM _dp_batch {kept}))
            WHERE NOT (e.tag IN ({keys}) AND e.parent = '')
            ORDER BY e.tag, place""")

    # -- store marks: the index as a view of the store's log ---------------------------------

    def marks(self) -> dict[int, int]:
        """Store pack -> offset below which every record has been applied to the index."""
        with self._lock:
            rows = self._con.execute("SELECT pack, indexed_to FROM store_marks").fetchall()
        return {int(p): int(o) for p, o in rows}

    def advance_marks(self, marks: Mapping[int, int]) -> None:
        """Move marks forward (never back) when a writer's records needed no new rows."""
        with self._lock, self._transaction():
            self._advance_marks(marks)

    def _advance_marks(self, marks: Mapping[int, int]) -> None:
        if not marks:  # DuckDB's executemany refuses an empty list
            return
        self._con.executemany(
            """INSERT INTO store_marks VALUES (?, ?) ON CONFLICT (pack)
            DO UPDATE SET indexed_to = greatest(indexed_to, excluded.indexed_to)""",
            [(int(p), int(o)) for p, o in marks.items()],
        )

    def set_marks(self, marks: Mapping[int, int]) -> None:
        """Replace every mark with ``marks`` (after a catch-up read the packs as they are:
        packs that no longer exist lose their mark, a pack cut shorter gets the lower one)."""
        with self._lock, self._transaction():
            self._con.execute("DELETE FROM store_marks")
            if marks:
                self._con.executemany(
                    "INSERT INTO store_marks VALUES (?, ?)",
                    [(int(p), int(o)) for p, o in marks.items()],
                )

    def instances_at(self, uids: Sequence[str]) -> dict[str, tuple[int, int, int, str, Any]]:
        """SOP Instance UID -> (pack, offset, length, sha256, received_at) of indexed ones."""
        if not uids:
            return {}
        rows = self._with_uids(
            uids,
            """SELECT sop_instance_uid, pack, "offset", length, sha256, received_at
            FROM instances WHERE sop_instance_uid IN (SELECT uid FROM _dp_uids)""",
        )
        return {str(r[0]): (int(r[1]), int(r[2]), int(r[3]), str(r[4]), r[5]) for r in rows}

    def _with_uids(self, uids: Sequence[str], sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` with ``uids`` as table ``_dp_uids(uid)`` (one list parameter)."""
        with self._lock:
            return self._con.execute(
                f"WITH _dp_uids AS (SELECT unnest(?::VARCHAR[]) AS uid) {sql}", [list(uids)]
            ).fetchall()

    def study_counts(self, study_uids: Sequence[str]) -> dict[str, int]:
        """Instances indexed per study (studies with none are absent)."""
        if not study_uids:
            return {}
        rows = self._with_uids(
            study_uids,
            "SELECT study_instance_uid, count(*) FROM instances "
            "WHERE study_instance_uid IN (SELECT uid FROM _dp_uids) GROUP BY 1",
        )
        return {str(u): int(n) for u, n in rows}

    def known_uids(self, sop_instance_uids: Sequence[str]) -> set[str]:
        """Which of these SOP Instance UIDs the index holds."""
        if not sop_instance_uids:
            return set()
        rows = self._with_uids(
            sop_instance_uids,
            "SELECT sop_instance_uid FROM instances WHERE sop_instance_uid "
            "IN (SELECT uid FROM _dp_uids)",
        )
        return {str(r[0]) for r in rows}

    def remove_locations(self, locations: Sequence[tuple[int, int, int]]) -> int:
        """Drop the instances indexed at these store locations (tombstoned records)."""
        if not locations:
            return 0
        with self._lock:
            rows = self._con.execute(
                """WITH _dp_locs AS (
                  SELECT unnest(?::UBIGINT[]) AS pack, unnest(?::UBIGINT[]) AS "offset")
                SELECT i.sop_instance_uid FROM instances i JOIN _dp_locs l
                ON i.pack = l.pack AND i."offset" = l."offset" """,
                [[int(loc[0]) for loc in locations], [int(loc[1]) for loc in locations]],
            ).fetchall()
        return self.remove([str(r[0]) for r in rows])

    def remove(self, sop_instance_uids: Sequence[str]) -> int:
        """Drop instances (after a deletion in the store); returns how many were indexed."""
        if not sop_instance_uids:
            return 0
        with self._lock, self._transaction():
            con = self._con
            con.execute(
                """CREATE OR REPLACE TEMP TABLE _dp_old AS
                SELECT iid, series_instance_uid, study_instance_uid, patient_id FROM instances
                WHERE sop_instance_uid IN (SELECT unnest(?::VARCHAR[]))""",
                [list(sop_instance_uids)],
            )
            con.execute("""CREATE OR REPLACE TEMP TABLE _dp_touched AS
                SELECT DISTINCT series_instance_uid, study_instance_uid,
                       coalesce(patient_id, '') AS patient_id FROM _dp_old""")
            con.execute("DELETE FROM attributes WHERE iid IN (SELECT iid FROM _dp_old)")
            con.execute("DELETE FROM instances WHERE iid IN (SELECT iid FROM _dp_old)")
            _refresh_levels(con)
            return _count(con, "_dp_old")

    def relocate(self, moved: Sequence[tuple[tuple[int, int, int], tuple[int, int, int]]]) -> int:
        """Point instances at their new store locations after ``Store.compact``.

        ``moved`` is the store's list of ``(old, new)`` ``(pack, offset, length)`` pairs;
        returns how many indexed instances were updated (tombstoned records are in no row).
        """
        if not moved:
            return 0
        columns = (
            [int(o[0]) for o, _ in moved],
            [int(o[1]) for o, _ in moved],
            [int(n[0]) for _, n in moved],
            [int(n[1]) for _, n in moved],
            [int(n[2]) for _, n in moved],
        )
        with self._lock, self._transaction():
            con = self._con
            con.execute(
                """CREATE OR REPLACE TEMP TABLE _dp_moved AS SELECT
                  unnest(?::UBIGINT[]) AS old_pack, unnest(?::UBIGINT[]) AS old_offset,
                  unnest(?::UBIGINT[]) AS new_pack, unnest(?::UBIGINT[]) AS new_offset,
                  unnest(?::UBIGINT[]) AS new_length""",
                list(columns),
            )
            before = _count(con, "instances")
            hits = con.execute(
                """SELECT count(*) FROM instances i JOIN _dp_moved m
                ON i.pack = m.old_pack AND i."offset" = m.old_offset"""
            ).fetchall()[0][0]
            con.execute(
                """UPDATE instances SET pack = m.new_pack, "offset" = m.new_offset,
                       length = m.new_length
                FROM _dp_moved m
                WHERE instances.pack = m.old_pack AND instances."offset" = m.old_offset"""
            )
            assert _count(con, "instances") == before
            con.execute("DROP TABLE _dp_moved")
            return int(hits)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self.read_only:
            raise ArchiveIndexError(f"{self.path}: the index is open read-only")
        self._con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    # -- reading -----------------------------------------------------------------------------

    def find(
        self,
        level: str,
        query: Mapping[str, Any],
        return_keys: Sequence[str] = (),
        *,
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
        combined_datetime: bool = False,
    ) -> list[dict[str, Any]]:
        """Match ``query`` at ``level`` with the rules of PS3.4 C.2.2.2.

        Parameters
        ----------
        level : ``patient``, ``study``, ``series`` or ``image`` (``instance`` too), any case.
        query : matching keys, keyword or ``ggggeeee`` -> value. A value is a DICOM query
            string (empty: universal, ``*``/``?``: wildcard, ``A-B``: range, ``a\\b``: list),
            a list of such strings (list matching), or for a sequence a list holding one dict
            of item keys (sequence matching, PS3.4 C.2.2.2.6).
        return_keys : further attributes to return (any attribute, private ones included, and
            the computed keys: NumberOfStudyRelatedInstances, ModalitiesInStudy, ...).
        fuzzy : case-insensitive person-name matching with an implied trailing ``*``.
        limit, offset : paging over results ordered by the level's unique key.
        combined_datetime : match date and time keys as one datetime range (C.2.2.2.5).

        Returns
        -------
        One dict per match: keyword (or ``ggggeeee``) -> value as DICOM text (multiple values
        joined by ``\\``), ``None`` when the attribute is absent, a list of item dicts for a
        sequence. The level's unique key is always present.
        """
        plan = compile_find(
            level, query, return_keys, fuzzy=fuzzy, combined_datetime=combined_datetime
        )
        if plan.scope is not None:
            bounds = self._bounds(plan.scope)
            if bounds is None:
                return []
            plan = compile_find(
                level,
                query,
                return_keys,
                fuzzy=fuzzy,
                combined_datetime=combined_datetime,
                iid_range=bounds,
            )
        sql, params = plan.sql, list(plan.params)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        if offset:
            sql += " OFFSET ?"
            params.append(int(offset))
        with self._lock:
            rows = self._con.execute(sql, params).fetchall()
            return finish(self._con, plan, rows)

    def count(self, level: str, query: Mapping[str, Any], *, fuzzy: bool = False) -> int:
        """Number of matches of ``query`` at ``level`` (same rules as :meth:`find`)."""
        plan = compile_find(level, query, (), fuzzy=fuzzy)
        if plan.scope is not None:
            bounds = self._bounds(plan.scope)
            if bounds is None:
                return 0
            plan = compile_find(level, query, (), fuzzy=fuzzy, iid_range=bounds)
        with self._lock:
            row = self._con.execute(f"SELECT count(*) FROM ({plan.sql})", plan.params).fetchall()
        return int(row[0][0]) if row else 0

    def locations(
        self, level: str, query: Mapping[str, Any], *, fuzzy: bool = False
    ) -> list[Location]:
        """Where the instances under every match are, for C-MOVE, C-GET and WADO.

        Returns
        -------
        ``(sop_instance_uid, sop_class_uid, transfer_syntax, pack, offset, length)`` per
        instance, ordered by series, instance number and UID.
        """
        sql, params, scope = compile_locations(level, query, fuzzy=fuzzy)
        if scope is not None:
            bounds = self._bounds(scope)
            if bounds is None:
                return []
            sql, params, _ = compile_locations(level, query, fuzzy=fuzzy, iid_range=bounds)
        with self._lock:
            rows = self._con.execute(sql, params).fetchall()
        return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def _bounds(self, scope: Cond) -> tuple[int, int] | None:
        """iid range of the instances meeting ``scope`` (None when there are none)."""
        sql, params = scope_sql(scope)
        with self._lock:
            rows = self._con.execute(sql, params).fetchall()
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0]), int(rows[0][1])

    def sql(self, text: str) -> Rows:
        """Run read-only SQL (SELECT statements only) over the documented tables and views;
        the result of the last statement."""
        with self._lock:
            relation = self._select(text)
            try:
                return Rows.of(relation)
            except duckdb.Error as e:
                raise QueryError(f"SQL: {e}") from e

    def export(self, text: str, path: str | Path, fmt: str) -> None:
        """Write the result of read-only SQL (as :meth:`sql`) to ``path`` as ``csv`` or
        ``parquet``, with DuckDB's writers, streaming (see :mod:`duckpacs.index.output`)."""
        with self._lock:
            output.write_file(self._select(text), Path(path), fmt)

    def _select(self, text: str) -> duckdb.DuckDBPyRelation:
        """The relation of the last statement of ``text``, once every one is a SELECT."""
        try:
            statements = self._con.extract_statements(text)
        except duckdb.Error as e:
            raise QueryError(f"SQL: {e}") from e
        if not statements:
            raise QueryError("SQL: empty statement")
        kinds = {s.type for s in statements}
        if kinds - {duckdb.StatementType.SELECT}:
            raise QueryError(
                "SQL: only SELECT statements are allowed (the index is a view "
                "of the store, changed by ingest only)"
            )
        try:
            relations = [self._con.sql(statement.query) for statement in statements]
        except duckdb.Error as e:
            raise QueryError(f"SQL: {e}") from e
        last = relations[-1]
        if last is None:  # pragma: no cover - a SELECT always has a relation
            raise QueryError("SQL: the statement returns no result")
        return last

    def stats(self) -> dict[str, int]:
        """Numbers of patients, studies, series, instances and attribute values."""
        names = ("patients", "studies", "series", "instances", "attributes")
        with self._lock:
            return {n: _count(self._con, n) for n in names}

    def table(self, name: str, order_by: str) -> Rows:
        """A whole table, sorted: for comparisons and exports."""
        if name not in ("patients", "studies", "series", "instances", "attributes"):
            raise QueryError(f"unknown table {name}")
        with self._lock:
            return Rows.of(self._con.sql(f"SELECT * FROM {name} ORDER BY {order_by}"))

    def connection(self) -> duckdb.DuckDBPyConnection:
        """The underlying connection (tests and benchmarks; do not share across processes)."""
        return self._con

    def uid_chunks(self, size: int = 100_000) -> Iterator[list[str]]:
        """Every indexed SOP Instance UID, in chunks, from a snapshot on a cursor of its own
        (runs beside writes)."""
        cursor = self._con.cursor()
        try:
            cursor.execute("SELECT sop_instance_uid FROM instances")
            while rows := cursor.fetchmany(size):
                yield [str(r[0]) for r in rows]
        finally:
            cursor.close()

    # -- routing and storage policy (duckpacs.routing, duckpacs.policy) ----------------------

    def newest_instance(self) -> tuple[int, str, int] | None:
        """``(iid, SOP Instance UID, received_at in µs since the epoch)`` of the instance
        indexed last, None when the index is empty."""
        with self._lock:
            rows = self._con.execute(
                "SELECT iid, sop_instance_uid, coalesce(epoch_us(received_at), 0) "
                "FROM instances ORDER BY iid DESC LIMIT 1"
            ).fetchall()
        return (int(rows[0][0]), str(rows[0][1]), int(rows[0][2])) if rows else None

    def instance_at(self, iid: int) -> str | None:
        """The SOP Instance UID of the row ``iid``, None when there is no such row."""
        with self._lock:
            rows = self._con.execute(
                "SELECT sop_instance_uid FROM instances WHERE iid = ?", [int(iid)]
            ).fetchall()
        return str(rows[0][0]) if rows else None

    def arrivals(self, after: int, limit: int) -> list[tuple[int, str, str, int]]:
        """``(iid, SOP Instance UID, Study Instance UID, received_at µs)`` of the first
        ``limit`` rows past ``iid`` ``after``, in iid order (the order they were indexed)."""
        with self._lock:
            rows = self._con.execute(
                "SELECT iid, sop_instance_uid, study_instance_uid, "
                "coalesce(epoch_us(received_at), 0) FROM instances "
                "WHERE iid > ? ORDER BY iid LIMIT ?",
                [int(after), int(limit)],
            ).fetchall()
        return [(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    def study_arrivals(self, study: str, after: int = 0) -> list[tuple[int, str]]:
        """``(iid, SOP Instance UID)`` of the study's rows past iid ``after``, in iid order."""
        with self._lock:
            rows = self._con.execute(
                "SELECT iid, sop_instance_uid FROM instances WHERE study_instance_uid = ? "
                "AND iid > ? ORDER BY iid",
                [study, int(after)],
            ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def matching_arrivals(
        self,
        query: Mapping[str, Any],
        calling_ae: Any,
        after: int,
        upto: int,
        *,
        received_since_us: int | None = None,
    ) -> list[tuple[str, str]]:
        """``(SOP Instance UID, Study Instance UID)`` of the rows ``after < iid <= upto``
        matching ``query`` (PS3.4 C.2.2.2, as :meth:`find` at image level) and ``calling_ae``
        (the AE title that sent them, same rules; None matches any). With
        ``received_since_us`` only rows received since then (any iid) are considered."""
        if received_since_us is None:
            bounds: tuple[int, int] | None = (int(after) + 1, int(upto))
            span, span_params = "i.iid > ? AND i.iid <= ?", [int(after), int(upto)]
        else:
            bounds = None
            span, span_params = "epoch_us(i.received_at) >= ?", [int(received_since_us)]
        cond = compile_condition("image", query, iid_range=bounds, calling_ae=calling_ae)
        sql = (
            "SELECT i.sop_instance_uid, i.study_instance_uid FROM instances i "
            f"WHERE {span} AND {cond.sql} ORDER BY i.iid"
        )
        with self._lock:
            rows = self._con.execute(sql, [*span_params, *cond.params]).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def instance_refs(self, sop_instance_uids: Sequence[str]) -> list[Location]:
        """Location rows (as :meth:`locations`) of these SOP Instance UIDs, the indexed ones."""
        if not sop_instance_uids:
            return []
        with self._lock:
            rows = self._con.execute(
                """SELECT sop_instance_uid, sop_class_uid, transfer_syntax, pack, "offset",
                length FROM instances WHERE sop_instance_uid IN (SELECT unnest(?::VARCHAR[]))""",
                [list(sop_instance_uids)],
            ).fetchall()
        return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def stored_bytes(self) -> int:
        """Bytes the indexed instances take in the store (their records, compressed)."""
        with self._lock:
            rows = self._con.execute("SELECT coalesce(sum(length), 0) FROM instances").fetchall()
        return int(rows[0][0]) if rows else 0

    def studies_oldest_first(
        self, limit: int, exclude: Sequence[str] = ()
    ) -> list[tuple[str, int, int, int]]:
        """``(Study Instance UID, last received µs, stored bytes, instances)`` of the studies
        whose newest instance arrived longest ago, but those in ``exclude``."""
        with self._lock:
            rows = self._con.execute(
                """SELECT study_instance_uid, coalesce(epoch_us(max(received_at)), 0),
                       sum(length), count(*)
                FROM instances
                WHERE study_instance_uid NOT IN (SELECT unnest(?::VARCHAR[]))
                GROUP BY study_instance_uid ORDER BY 2, 1 LIMIT ?""",
                [list(exclude), int(limit)],
            ).fetchall()
        return [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]

    def studies_dated_before(self, query: Mapping[str, Any], cutoff: Any) -> list[str]:
        """Studies matching ``query`` (study-level matching, as :meth:`find`) whose Study
        Date, or without one the day their first instance arrived, is before ``cutoff``
        (a ``datetime.date``)."""
        cond = compile_condition("study", query)
        sql = f"""SELECT s.study_instance_uid FROM studies s
            WHERE {cond.sql} AND coalesce(s.study_date, (
              SELECT min(i.received_at) FROM instances i
              WHERE i.study_instance_uid = s.study_instance_uid)::DATE) < ?
            ORDER BY 1"""
        with self._lock:
            rows = self._con.execute(sql, [*cond.params, cutoff]).fetchall()
        return [str(r[0]) for r in rows]

    def reader(self) -> IndexReader:
        """A second cursor for the write path's duplicate lookups: they run beside a commit
        (DuckDB's MVCC) instead of queueing behind it."""
        return IndexReader(self._con.cursor())


class IndexReader:
    """Point lookups by SOP Instance UID on a cursor of their own (see :meth:`Index.reader`)."""

    _ONE = (
        'SELECT sop_instance_uid, pack, "offset", length, sha256 FROM instances '
        "WHERE sop_instance_uid = ?"
    )

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor
        self._lock = threading.Lock()

    def locate_uids(self, uids: Sequence[str]) -> dict[str, tuple[int, int, int, str]]:
        """UID -> (pack, offset, length, sha256) of the indexed instances among ``uids``."""
        with self._lock:
            if len(uids) == 1:  # each C-STORE: the ART index answers in well under 1 ms
                rows = self._cursor.execute(self._ONE, [uids[0]]).fetchall()
            else:
                rows = self._cursor.execute(
                    'SELECT sop_instance_uid, pack, "offset", length, sha256 FROM instances '
                    "WHERE sop_instance_uid IN (SELECT unnest(?::VARCHAR[]))",
                    [list(uids)],
                ).fetchall()
        return {str(r[0]): (int(r[1]), int(r[2]), int(r[3]), str(r[4] or "")) for r in rows}

    def close(self) -> None:
        with self._lock:
            self._cursor.close()


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    return int(row[0][0]) if row else 0


def _agg(columns: Sequence[str], order: str) -> str:
    return ", ".join(f"arg_max({c}, {order}) AS {c}" for c in columns)


def _rebuild_levels(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute every series, study and patient row (the end of a deferred bulk load)."""
    con.execute("""CREATE OR REPLACE TEMP TABLE _dp_touched AS
        SELECT DISTINCT series_instance_uid, study_instance_uid,
               coalesce(patient_id, '') AS patient_id FROM instances""")
    _refresh_levels(con)


def _refresh_levels(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute the series, studies and patients rows touched (``_dp_touched``)."""
    series_cols = [c for c in schema.level_columns("series") if c != "series_instance_uid"]
    study_cols = schema.level_columns("study")
    patient_cols = schema.level_columns("patient")
    con.execute(
        "DELETE FROM series WHERE series_instance_uid IN "
        "(SELECT series_instance_uid FROM _dp_touched)"
    )
    con.execute(f"""INSERT INTO series (series_instance_uid, study_instance_uid,
          {", ".join(series_cols)}, number_of_series_related_instances, rep_iid)
        SELECT series_instance_uid, arg_max(study_instance_uid, iid), {_agg(series_cols, "iid")},
          count(*), max(iid)
        FROM instances WHERE series_instance_uid IN (SELECT series_instance_uid FROM _dp_touched)
        GROUP BY series_instance_uid""")
    other = [c for c in study_cols if c != "study_instance_uid"]
    con.execute(
        "DELETE FROM studies WHERE study_instance_uid IN "
        "(SELECT study_instance_uid FROM _dp_touched)"
    )
    con.execute(f"""INSERT INTO studies (study_instance_uid, {", ".join(other)},
          study_datetime, modalities_in_study, sop_classes_in_study,
          number_of_study_related_series, number_of_study_related_instances, rep_iid)
        SELECT study_instance_uid, {_agg(other, "iid")},
          arg_max(study_date, iid) + coalesce(arg_max(study_time, iid), TIME '00:00:00'),
          list_sort(list_distinct(list(modality))), list_sort(list_distinct(list(sop_class_uid))),
          count(DISTINCT series_instance_uid), count(*), max(iid)
        FROM instances WHERE study_instance_uid IN (SELECT study_instance_uid FROM _dp_touched)
        GROUP BY study_instance_uid""")
    other = [c for c in patient_cols if c != "patient_id"]
    con.execute("DELETE FROM patients WHERE patient_id IN (SELECT patient_id FROM _dp_touched)")
    con.execute(f"""INSERT INTO patients (patient_id, {", ".join(other)},
          number_of_patient_related_studies, number_of_patient_related_series,
          number_of_patient_related_instances, rep_iid)
        SELECT coalesce(patient_id, ''), {_agg(other, "rep_iid")}, count(*),
          sum(number_of_study_related_series), sum(number_of_study_related_instances),
          max(rep_iid)
        FROM studies WHERE coalesce(patient_id, '') IN (SELECT patient_id FROM _dp_touched)
        GROUP BY coalesce(patient_id, '')""")


# Documented views for `duckpacs sql` (see duckpacs.cli.sql_cmd).
VIEWS = (
    """CREATE OR REPLACE VIEW elements AS
       SELECT i.sop_instance_uid, i.series_instance_uid, i.study_instance_uid, a.parent,
              printf('%08X', a.tag) AS tag, d.keyword, a.vr, a.creator, a.vm_index, a.value,
              a.num
       FROM attributes a JOIN instances i USING (iid)
       LEFT JOIN dicom_dictionary d ON d.tag = a.tag""",
)

# schema version -> statements bringing it to the next version.
MIGRATIONS: dict[int, tuple[str, ...]] = {1: schema.INDEX_STATEMENTS, 2: (schema.MARKS_DDL,)}


def _create(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("BEGIN TRANSACTION")
    for statement in schema.create_statements():
        con.execute(statement)
    con.execute(
        "CREATE TABLE IF NOT EXISTS dicom_dictionary "
        "(tag UINTEGER, keyword VARCHAR, vr VARCHAR, name VARCHAR)"
    )
    con.execute(
        "INSERT INTO dicom_dictionary SELECT unnest(?::UINTEGER[]), unnest(?::VARCHAR[]), "
        "unnest(?::VARCHAR[]), unnest(?::VARCHAR[])",
        _dictionary_columns(),
    )
    for view in VIEWS:
        con.execute(view)
    _set_version(con)
    con.execute("COMMIT")


def _dictionary_columns() -> list[list[Any]]:
    """Tag, keyword, VR and name of every standard attribute (PS3.6), from pydicom's data
    dictionary: imported here, when an index is created, not by every process that opens one."""
    from pydicom.datadict import DicomDictionary

    rows = [
        (int(tag), entry[4], entry[0], entry[2])
        for tag, entry in DicomDictionary.items()
        if entry[4] and int(tag) <= 0xFFFFFFFF
    ]
    return [list(column) for column in zip(*rows, strict=True)]


def _set_version(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "INSERT OR REPLACE INTO duckpacs_meta VALUES ('schema_version', ?)",
        [str(schema.SCHEMA_VERSION)],
    )
