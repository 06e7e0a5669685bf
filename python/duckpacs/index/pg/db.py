"""The archive index in PostgreSQL (``[index] backend = "postgres"``, issue 26).

The same interface as the embedded :class:`duckpacs.index.Index`
(:class:`duckpacs.index.base.IndexBackend`), the same tables and the same query compiler
(its SQL rewritten by :mod:`duckpacs.index.query.dialect`), shared by every node of an
archive.

Ingest: the header batch (Arrow, from the Rust core) is read by an in-memory DuckDB
connection of this process, which applies the very conversions of the embedded index (the
``dp_date``/``dp_time`` macros, the casts, last-row-wins within the batch), and the rows go
to PostgreSQL with psycopg's ``COPY`` into temporary tables, then one ``INSERT ... ON
CONFLICT (sop_instance_uid) DO NOTHING``. No Arrow library is needed in Python, so the
embedded path stays pyarrow-free, and DA/TM text is converted exactly as the embedded index
converts it.

Several writers: every write transaction first takes one advisory lock (writers queue; at
about 100 ms per batch of 512 instances that is far from the limit of a node, see
docs/CLUSTER-EVALUATION.md). Inside it the iids are drawn from the sequence ``dp_iid``, so
iid order is commit order, which routing's arrival cursor relies on, and the level tables
are recomputed from committed rows only. The unique index on SOP Instance UID is the last
guard: an instance two nodes receive is stored once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import duckdb

from duckpacs import logs
from duckpacs.errors import ArchiveIndexError, QueryError
from duckpacs.index import schema
from duckpacs.index.db import Location, _source_casts
from duckpacs.index.output import Rows
from duckpacs.index.pg import nodes as pg_nodes
from duckpacs.index.pg import schema as pg_schema
from duckpacs.index.pg.connect import Connection, PgConfig, psycopg_module
from duckpacs.index.query import compile_condition, compile_find, compile_locations
from duckpacs.index.query.dialect import to_postgres
from duckpacs.index.query.results import finish
from duckpacs.index.query.sql import LOCATION_COLUMNS

log = logs.get("index")

# pg_advisory_xact_lock key of the write lock ("dpix" in ASCII).
WRITE_LOCK = 0x64706978
_NO_ROWS = {"added": 0, "replaced": 0, "unchanged": 0, "duplicates": 0, "rejected": 0}


# A pack id with bit 63 set names no store any node can read: another node's record, for a
# duplicate check that must neither read nor tombstone a record of this node's store there.
FOREIGN: Final = 1 << 63


class _Compat:
    """The slice of a DuckDB connection :func:`~duckpacs.index.query.results.finish` uses
    (``execute(sql, params).fetchall()``), on PostgreSQL."""

    def __init__(self, con: Any) -> None:
        self._con = con

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._con.execute(*to_postgres(sql, params))


class PgIndex:
    """The PostgreSQL index of one archive, as seen from one node. Create it with
    :meth:`open`."""

    shared = True  # several nodes write it: each arrival's duplicate check asks it

    def __init__(self, config: PgConfig, read_only: bool) -> None:
        self.config = config
        self.read_only = read_only
        self.path = Path(config.dsn.split("?")[0])  # for messages, as Index.path
        self._db = Connection(config, read_only=read_only)
        self._lock = threading.RLock()
        self._local: duckdb.DuckDBPyConnection | None = None  # batch conversion (writers)
        self._view_casts = ""
        self._sql_db: Connection | None = None  # see _user_sql
        self._number: int | None = None  # see node_number
        # Other nodes' instances (see read_remote): off until the archive asks for them.
        self._on_node: Callable[[int, str], None] | None = None
        self._numbers: dict[str, int] = {}
        self._named: set[int] = set()
        self._numbers_lock = threading.Lock()

    @classmethod
    def open(cls, config: PgConfig, read_only: bool = False) -> PgIndex:
        """Connect (creating the tables on first use by a writer)."""
        index = cls(config, read_only)
        try:
            if not read_only:
                index._create()
            index._check_version()
        except BaseException:
            index.close()
            raise
        return index

    def _check_version(self) -> None:
        psycopg = psycopg_module()
        try:
            rows = self._pg("SELECT value FROM duckpacs_meta WHERE key = 'pg_schema_version'")
        except ArchiveIndexError as e:
            if isinstance(e.__cause__, psycopg.errors.UndefinedTable):
                raise ArchiveIndexError(
                    f"{self.path}: no duckpacs index in this database yet (duckpacs serve "
                    "creates it)"
                ) from e
            raise
        version = int(rows[0][0]) if rows else 0
        if version > pg_schema.SCHEMA_VERSION:
            raise ArchiveIndexError(
                f"{self.path}: index schema {version} is newer than this duckpacs "
                f"({pg_schema.SCHEMA_VERSION}); upgrade duckpacs"
            )

    def _create(self) -> None:
        def create(con: Any) -> None:
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
                for statement in pg_schema.create_statements():
                    con.execute(statement)
                con.execute(
                    "INSERT INTO duckpacs_meta VALUES ('pg_schema_version', %s) "
                    "ON CONFLICT (key) DO NOTHING",
                    [str(pg_schema.SCHEMA_VERSION)],
                )
                row = con.execute("SELECT count(*) FROM dicom_dictionary").fetchone()
                if not row[0]:
                    _fill_dictionary(con)

        self._db.run(create)

    def close(self) -> None:
        self._db.close()
        if self._sql_db is not None:
            self._sql_db.close()
        if self._local is not None:
            self._local.close()
            self._local = None

    def ping(self) -> None:
        """Raise :class:`~duckpacs.errors.IndexUnavailableError` unless PostgreSQL answers."""
        self._pg("SELECT 1")

    def __enter__(self) -> PgIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- small helpers -------------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of DuckDB-dialect ``sql`` (rewritten for PostgreSQL)."""
        text, values = to_postgres(sql, params)
        return self._db.run(lambda c: c.execute(text, values).fetchall())

    def _pg(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of PostgreSQL ``sql`` (psycopg placeholders)."""
        return self._db.run(lambda c: c.execute(sql, list(params)).fetchall())

    def _writable(self) -> None:
        if self.read_only:
            raise ArchiveIndexError(f"{self.path}: the index is open read-only")

    # -- writing -------------------------------------------------------------------------------

    @contextmanager
    def bulk_load(self, *, defer: bool = False) -> Iterator[PgIndex]:
        """Batches inside are committed one by one as usual (PostgreSQL has no write-ahead
        log to fold; ``defer`` is accepted for the interface and changes nothing)."""
        self._writable()
        yield self

    def _converter(self) -> duckdb.DuckDBPyConnection:
        if self._local is None:
            con = duckdb.connect(":memory:", config={"enable_external_access": False})
            for macro in schema.MACROS:
                con.execute(macro)
            self._local = con
        return self._local

    def add_batch(self, batch: Any, *, marks: Mapping[int, int] | None = None) -> dict[str, int]:
        """As :meth:`duckpacs.index.Index.add_batch`: the last row of a UID within the
        batch wins; a row equal in UID and sha256 to an indexed one is left; another row
        under an indexed UID replaces it. ``marks`` advance this node's store marks in the
        same transaction."""
        self._writable()
        with self._lock:
            instances, attributes, counts = self._convert(batch)
            if not instances and not marks:
                return counts
            return self._db.run(lambda con: self._write(con, instances, attributes, counts, marks))

    def _convert(
        self, batch: Any
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], dict[str, int]]:
        """The batch's kept rows as typed instance rows (``pos`` first) and attribute rows
        (``pos`` first), with the counts the batch alone decides."""
        con = self._converter()
        con.register("_dp_source", batch)
        try:
            casts = ", ".join(_source_casts(con).values())
            if casts != self._view_casts:
                con.execute(
                    "CREATE OR REPLACE TEMP VIEW _dp_batch AS "
                    f"SELECT row_number() OVER () AS pos, {casts} FROM _dp_source"
                )
                self._view_casts = casts
            con.execute("""CREATE OR REPLACE TEMP TABLE _dp_new AS
                SELECT pos, coalesce(sop_instance_uid, '') <> '' AS keyed,
                       row_number() OVER (PARTITION BY sop_instance_uid ORDER BY pos DESC) = 1
                         AS last
                FROM _dp_batch""")
            total, with_uid, keyed = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE keyed), "
                "count(*) FILTER (WHERE keyed AND last) FROM _dp_new"
            ).fetchall()[0]
            kept = "pos IN (SELECT pos FROM _dp_new WHERE keyed AND last)"
            try:
                instances = con.execute(
                    f"SELECT b.pos, {schema.typed_select('b')} FROM _dp_batch b WHERE b.{kept} "
                    "ORDER BY b.pos"
                ).fetchall()
            except duckdb.ConversionException as e:
                raise ArchiveIndexError(f"header batch does not fit its schema ({e})") from e
            fields = ", ".join(f'e."{f.name}"' for f in schema.ATTR_FIELDS)
            keys = ", ".join(str(tag) for tag in sorted(schema.KEYS_BY_TAG))
            attributes = con.execute(f"""SELECT pos, {fields} FROM (
                  SELECT pos, unnest(attrs) AS e FROM _dp_batch WHERE {kept})
                WHERE NOT (e.tag IN ({keys}) AND e.parent = '')""").fetchall()
        finally:
            con.unregister("_dp_source")
        counts = dict(_NO_ROWS)
        counts["duplicates"] = int(with_uid) - int(keyed)
        counts["rejected"] = int(total) - int(with_uid)
        counts["unchanged"] = int(keyed)  # less what turns out new, below
        return instances, attributes, counts

    def _write(
        self,
        con: Any,
        instances: list[tuple[Any, ...]],
        attributes: list[tuple[Any, ...]],
        counts: dict[str, int],
        marks: Mapping[int, int] | None,
    ) -> dict[str, int]:
        with con.transaction():
            # The timeout guards against a stalled server, not against a large batch
            # (catch-up and reindex write 50,000 instances at once): 2 ms more per instance.
            budget = int(self.config.statement_timeout_s * 1000) + 2 * len(instances)
            con.execute("SELECT set_config('statement_timeout', %s, true)", [str(budget)])
            con.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
            if marks:
                self._advance_marks(con, marks)
            if instances:
                fresh, replaced = self._append(con, instances, attributes)
                counts["added"] = fresh - replaced
                counts["replaced"] = replaced
                counts["unchanged"] -= fresh
        log.debug("indexed batch %s", counts)
        return counts

    def _append(
        self, con: Any, instances: list[tuple[Any, ...]], attributes: list[tuple[Any, ...]]
    ) -> tuple[int, int]:
        """Rows of one batch into the tables (inside the write transaction); returns the
        rows inserted and how many of them replaced an indexed instance."""
        columns = schema.column_list()
        _stage(con)
        with con.cursor().copy(f"COPY _dp_stage (pos, {columns}) FROM STDIN") as copy:
            for row in instances:
                copy.write_row(row)
        # Temporary tables have no statistics until analysed: without them the planner
        # joined them to `instances` by scanning it (550 ms a commit at a million).
        con.execute("ANALYZE _dp_stage")
        con.execute("""DELETE FROM _dp_stage s USING instances i
            WHERE i.sop_instance_uid = s.sop_instance_uid AND i.sha256 = s.sha256""")
        con.execute("""INSERT INTO _dp_old SELECT iid, series_instance_uid, study_instance_uid,
              patient_id FROM instances
            WHERE sop_instance_uid IN (SELECT sop_instance_uid FROM _dp_stage)""")
        replaced = int(con.execute("SELECT count(*) FROM _dp_old").fetchone()[0])
        if replaced:
            con.execute("ANALYZE _dp_old")
            con.execute("DELETE FROM attributes WHERE iid IN (SELECT iid FROM _dp_old)")
            con.execute("DELETE FROM instances WHERE iid IN (SELECT iid FROM _dp_old)")
        # iids in batch order, drawn under the write lock: iid order is commit order.
        con.execute("""UPDATE _dp_stage s SET iid = n.iid FROM (
              SELECT pos, nextval('dp_iid') AS iid FROM (SELECT pos FROM _dp_stage ORDER BY pos) q
            ) n WHERE s.pos = n.pos""")
        fresh = con.execute(
            f"""INSERT INTO instances (iid, node, {columns})
            SELECT iid, %s, {columns} FROM _dp_stage ORDER BY pos
            ON CONFLICT (sop_instance_uid) DO NOTHING""",
            [self.config.node],
        ).rowcount
        # A row another writer stored first (the unique key) keeps that writer's version.
        con.execute("""DELETE FROM _dp_stage s
            WHERE NOT EXISTS (SELECT 1 FROM instances i WHERE i.iid = s.iid)""")
        fields = ", ".join(f'"{f.name}"' for f in schema.ATTR_FIELDS)
        with con.cursor().copy(f"COPY _dp_stage_attrs (pos, {fields}) FROM STDIN") as copy:
            for row in attributes:
                copy.write_row(row)
        con.execute(f"""INSERT INTO attributes (iid, {fields})
            SELECT s.iid, {", ".join(f'a."{f.name}"' for f in schema.ATTR_FIELDS)}
            FROM _dp_stage_attrs a JOIN _dp_stage s USING (pos)""")
        con.execute("""INSERT INTO _dp_touched
            SELECT DISTINCT coalesce(series_instance_uid, ''), coalesce(study_instance_uid, ''),
                   coalesce(patient_id, '') FROM (
              SELECT series_instance_uid, study_instance_uid, patient_id FROM _dp_stage
              UNION ALL SELECT series_instance_uid, study_instance_uid, patient_id FROM _dp_old
            ) t""")
        con.execute("ANALYZE _dp_touched")
        _refresh_levels(con)
        return int(fresh), replaced

    def clear(self) -> None:
        """Remove this node's rows and marks (``duckpacs reindex`` then refills them from
        this node's store). Other nodes' instances stay: on a shared index a reindex of one
        node must not make the others' instances unfindable. Alone, it is one TRUNCATE."""
        self._writable()
        node = self.config.node

        def clear(con: Any) -> None:
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
                others = con.execute(
                    "SELECT EXISTS (SELECT 1 FROM instances WHERE node <> %s)"
                    " OR EXISTS (SELECT 1 FROM store_marks WHERE node <> %s)",
                    [node, node],
                ).fetchone()[0]
                if not others:
                    con.execute(
                        "TRUNCATE instances, attributes, series, studies, patients, store_marks"
                    )
                    return
                _drop_instances(con, "node = %s", [node])
                con.execute("DELETE FROM store_marks WHERE node = %s", [node])

        self._db.run(clear)

    # -- store marks (this node's) -------------------------------------------------------------

    def marks(self) -> dict[int, int]:
        """This node's store marks: pack -> offset below which every record is indexed."""
        rows = self._pg(
            "SELECT pack, indexed_to FROM store_marks WHERE node = %s", [self.config.node]
        )
        return {int(p): int(o) for p, o in rows}

    def advance_marks(self, marks: Mapping[int, int]) -> None:
        """Move this node's marks forward (never back)."""
        self._writable()

        def advance(con: Any) -> None:
            with con.transaction():
                self._advance_marks(con, marks)

        self._db.run(advance)

    def _advance_marks(self, con: Any, marks: Mapping[int, int]) -> None:
        if not marks:
            return
        with con.cursor() as cur:
            cur.executemany(
                """INSERT INTO store_marks VALUES (%s, %s, %s) ON CONFLICT (node, pack)
                DO UPDATE SET indexed_to = greatest(store_marks.indexed_to, excluded.indexed_to)""",
                [(self.config.node, int(p), int(o)) for p, o in marks.items()],
            )

    def set_marks(self, marks: Mapping[int, int]) -> None:
        """Replace this node's marks with ``marks`` (other nodes' marks are theirs)."""
        self._writable()

        def replace(con: Any) -> None:
            with con.transaction():
                con.execute("DELETE FROM store_marks WHERE node = %s", [self.config.node])
                if marks:
                    with con.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO store_marks VALUES (%s, %s, %s)",
                            [(self.config.node, int(p), int(o)) for p, o in marks.items()],
                        )

        self._db.run(replace)

    # -- nodes (packs on S3: see duckpacs.index.pg.nodes) --------------------------------------

    def node_number(self) -> int:
        """This node's number (bits 48..62 of its pack ids as other nodes read them),
        registered on the first call; race-safe between nodes."""
        if self._number is None:
            self._writable()
            self._number = self._db.run(lambda con: pg_nodes.register(con, self.config.node))
        return self._number

    def heartbeat(
        self, pending_packs: int, pending_bytes: int, cache_bytes: int, cache_limit: int
    ) -> None:
        """Record that this node is alive: its uploads pending and its read cache's use."""
        self._writable()
        figures = (int(pending_packs), int(pending_bytes), int(cache_bytes), int(cache_limit))
        name = self.config.node
        if not self._db.run(lambda con: pg_nodes.heartbeat(con, name, figures)):
            self._number = None  # its row is gone (or never was): register again
            self.node_number()
            self._db.run(lambda con: pg_nodes.heartbeat(con, name, figures))

    def nodes(self) -> list[dict[str, Any]]:
        """The nodes of the archive (:func:`duckpacs.index.pg.nodes.listing`); none on an
        index no node of this version has written yet (no ``nodes`` table)."""
        psycopg = psycopg_module()
        try:
            return self._db.run(pg_nodes.listing)
        except ArchiveIndexError as e:
            if isinstance(e.__cause__, psycopg.errors.UndefinedTable):
                return []
            raise

    # -- lookups by UID and location -----------------------------------------------------------

    def instances_at(self, uids: Sequence[str]) -> dict[str, tuple[int, int, int, str, Any]]:
        """SOP Instance UID -> (pack, offset, length, sha256, received_at) of indexed ones."""
        if not uids:
            return {}
        rows = self._pg(
            'SELECT sop_instance_uid, pack, "offset", length, sha256, received_at '
            "FROM instances WHERE sop_instance_uid = ANY(%s)",
            [list(uids)],
        )
        return {str(r[0]): (int(r[1]), int(r[2]), int(r[3]), str(r[4]), r[5]) for r in rows}

    def study_counts(self, study_uids: Sequence[str]) -> dict[str, int]:
        if not study_uids:
            return {}
        rows = self._pg(
            "SELECT study_instance_uid, count(*) FROM instances "
            "WHERE study_instance_uid = ANY(%s) GROUP BY 1",
            [list(study_uids)],
        )
        return {str(u): int(n) for u, n in rows}

    def known_uids(self, sop_instance_uids: Sequence[str]) -> set[str]:
        if not sop_instance_uids:
            return set()
        rows = self._pg(
            "SELECT sop_instance_uid FROM instances WHERE sop_instance_uid = ANY(%s)",
            [list(sop_instance_uids)],
        )
        return {str(r[0]) for r in rows}

    def remove_locations(self, locations: Sequence[tuple[int, int, int]]) -> int:
        """Drop the instances indexed at these store locations (tombstoned records)."""
        if not locations:
            return 0
        rows = self._pg(
            """SELECT i.sop_instance_uid FROM instances i
            JOIN unnest(%s::bigint[], %s::bigint[]) AS l(pack, "offset")
            ON i.pack = l.pack AND i."offset" = l."offset" WHERE i.node = %s""",
            [
                [int(loc[0]) for loc in locations],
                [int(loc[1]) for loc in locations],
                self.config.node,
            ],
        )
        return self.remove([str(r[0]) for r in rows])

    def remove(self, sop_instance_uids: Sequence[str]) -> int:
        """Drop instances (after a deletion in the store); returns how many were indexed."""
        if not sop_instance_uids:
            return 0
        self._writable()

        def remove(con: Any) -> int:
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
                return _drop_instances(con, "sop_instance_uid = ANY(%s)", [list(sop_instance_uids)])

        return self._db.run(remove)

    def relocate(self, moved: Sequence[tuple[tuple[int, int, int], tuple[int, int, int]]]) -> int:
        """Point instances at their new store locations after ``Store.compact``."""
        if not moved:
            return 0
        self._writable()
        columns = [
            [int(o[0]) for o, _ in moved],
            [int(o[1]) for o, _ in moved],
            [int(n[0]) for _, n in moved],
            [int(n[1]) for _, n in moved],
            [int(n[2]) for _, n in moved],
        ]

        def relocate(con: Any) -> int:
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
                cur = con.execute(
                    """UPDATE instances SET pack = m.new_pack, "offset" = m.new_offset,
                           length = m.new_length
                    FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
                                %s::bigint[])
                      AS m(old_pack, old_offset, new_pack, new_offset, new_length)
                    WHERE instances.pack = m.old_pack AND instances."offset" = m.old_offset
                      AND instances.node = %s""",
                    [*columns, self.config.node],
                )
                return int(cur.rowcount)

        return self._db.run(relocate)

    # -- reading -------------------------------------------------------------------------------

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
        """As :meth:`duckpacs.index.Index.find` (PS3.4 C.2.2.2)."""
        # No iid range first (the embedded index's scope step): DuckDB prunes row groups
        # by it, while PostgreSQL's planner turned a study's range into a scan of most of
        # `attributes` (250 ms at a million instances instead of a few).
        plan = compile_find(
            level, query, return_keys, fuzzy=fuzzy, combined_datetime=combined_datetime
        )
        sql, params = plan.sql, list(plan.params)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        if offset:
            sql += " OFFSET ?"
            params.append(int(offset))

        def run(con: Any) -> list[dict[str, Any]]:
            rows = con.execute(*to_postgres(sql, params)).fetchall()
            return finish(_Compat(con), plan, rows)  # type: ignore[arg-type]

        return self._db.run(run)

    def count(self, level: str, query: Mapping[str, Any], *, fuzzy: bool = False) -> int:
        plan = compile_find(level, query, (), fuzzy=fuzzy)  # no scope step (see find)
        rows = self._rows(f"SELECT count(*) FROM ({plan.sql})", plan.params)
        return int(rows[0][0]) if rows else 0

    def locations(
        self, level: str, query: Mapping[str, Any], *, fuzzy: bool = False
    ) -> list[Location]:
        sql, params, _scope = compile_locations(level, query, fuzzy=fuzzy)  # see find
        rows = self._rows(sql.replace(LOCATION_COLUMNS, LOCATION_COLUMNS + ", i.node", 1), params)
        return self._own([(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows], [r[6] for r in rows])

    def _own(self, found: list[Location], nodes: Sequence[str]) -> list[Location]:
        """``found``, all in this node's store. A location is a (pack, offset) of the store of
        the node that wrote it: read from another node's store it could be another instance
        of the same length, so an instance held by another node is refused, never read
        (unless :meth:`read_remote` was called: then it is a location in that node's packs)."""
        if self._on_node is not None:
            mine = self.config.node
            return [
                ref if node == mine else self._remote(ref, node)
                for ref, node in zip(found, nodes, strict=True)
            ]
        for ref, node in zip(found, nodes, strict=True):
            if node != self.config.node:
                raise ArchiveIndexError(
                    f"instance {ref[0]} is held in the store of node {node!r}, not this node's "
                    f"({self.config.node!r}): retrieve it from that node"
                )
        return found

    def read_remote(self, on_node: Callable[[int, str], None]) -> None:
        """From now on return another node's instance at its **remote** location, the pack id
        ``pack | number << 48`` with that node's number (``nodes`` table), instead of
        refusing it; ``on_node(number, name)`` is called before the first location of each
        such node is returned (the archive names the node to its store there, which then
        reads that node's packs from ``<prefix>/<name>/`` in the bucket). For
        ``[store] backend = "s3"`` only: without it another node's packs are out of reach."""
        self._on_node = on_node

    def _remote(self, ref: Location, node: str) -> Location:
        if ref[3] is None:
            return ref  # no place in any store: nothing to read, here or there
        pack = int(ref[3])
        if pack >> pg_nodes.NUMBER_SHIFT:
            raise ArchiveIndexError(
                f"instance {ref[0]}: pack {pack} of node {node!r} does not fit in 48 bits"
            )
        remote = self.remote_pack(pack, node, self._number_of(node, ref[0]))
        return (ref[0], ref[1], ref[2], remote, ref[4], ref[5])

    @property
    def reads_remote(self) -> bool:
        """Whether :meth:`read_remote` was called (this node reads the bucket)."""
        return self._on_node is not None

    def remote_pack(self, pack: int, node: str, number: int) -> int:
        """``pack`` of node ``node`` (number ``number``) as this node's store reads it from
        the bucket, the node named through ``on_node`` first (once)."""
        with self._numbers_lock:
            if number not in self._named and self._on_node is not None:
                self._on_node(number, node)
                self._named.add(number)
        return pack | number << pg_nodes.NUMBER_SHIFT

    def _number_of(self, node: str, uid: str) -> int:
        """Node ``node``'s number, read again from the table when not known yet."""
        with self._numbers_lock:
            number = self._numbers.get(node)
            if number is None:
                self._numbers = self._registered()
                number = self._numbers.get(node)
            if number is None:
                raise ArchiveIndexError(
                    f"instance {uid} is held in the store of node {node!r}, which has no "
                    'number in the nodes table (it never ran with [store] backend = "s3"): '
                    "retrieve it from that node"
                )
            return number

    def _registered(self) -> dict[str, int]:
        psycopg = psycopg_module()
        try:
            return self._db.run(pg_nodes.numbers)
        except ArchiveIndexError as e:
            if isinstance(e.__cause__, psycopg.errors.UndefinedTable):
                return {}  # an index from before the nodes table: nobody registered
            raise

    def sql(self, text: str) -> Rows:
        """Run one PostgreSQL statement in a read-only transaction and return its result.
        (The dialect is PostgreSQL's, not DuckDB's: see ``duckpacs sql --help``.)"""

        def run(con: Any) -> Rows:
            with _user_statement(con):
                # A prepared statement is one statement (the extended protocol): nothing
                # can end the read-only transaction and write after it.
                cur = con.execute(text, prepare=True)
                if cur.description is None:
                    raise QueryError("SQL: the statement returns no result")
                rows = [tuple(r) for r in cur.fetchall()]
                names = [d.name for d in cur.description]
                types = [_type_name(con, d.type_code) for d in cur.description]
                return Rows(names, types, rows)

        return self._user_sql().run(run)

    def _user_sql(self) -> Connection:
        """The connection typed SQL runs on: read-only by default, apart from the writes."""
        if self._sql_db is None:
            self._sql_db = Connection(self.config, read_only=True)
        return self._sql_db

    def export(self, text: str, path: str | Path, fmt: str) -> None:
        """Write the result of read-only SQL (as :meth:`sql`) to ``path``: ``csv`` by
        PostgreSQL's own ``COPY (query) TO STDOUT`` (streamed, in a read-only transaction),
        ``parquet`` by DuckDB's writer reading that CSV. Nothing is left at ``path`` when
        the query fails."""
        from duckpacs.index.output import FILE_FORMATS

        if fmt not in FILE_FORMATS:
            raise ValueError(f"unknown file format {fmt!r}")
        target = Path(path)
        part = target.with_name(target.name + ".part")
        query = text.strip().rstrip(";")

        def run(con: Any) -> None:
            with _user_statement(con):
                copy_sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)"
                with part.open("wb") as out, con.cursor().copy(copy_sql) as copy:
                    for block in copy:
                        out.write(block)

        try:
            self._user_sql().run(run)
            if fmt == "csv":
                part.replace(target)
                return
            writer = duckdb.connect(":memory:")
            try:
                writer.read_csv(str(part)).write_parquet(str(target))
            finally:
                writer.close()
        finally:
            part.unlink(missing_ok=True)

    def stats(self) -> dict[str, int]:
        names = ("patients", "studies", "series", "instances", "attributes")
        return {n: int(self._pg(f"SELECT count(*) FROM {n}")[0][0]) for n in names}

    def table(self, name: str, order_by: str) -> Rows:
        if name not in ("patients", "studies", "series", "instances", "attributes"):
            raise QueryError(f"unknown table {name}")
        return self.sql(f"SELECT * FROM {name} ORDER BY {order_by}")

    def uid_chunks(self, size: int = 100_000) -> Iterator[list[str]]:
        """Every indexed SOP Instance UID, in chunks (one query per chunk, by UID order)."""
        last = ""
        while True:
            rows = self._pg(
                "SELECT sop_instance_uid FROM instances WHERE sop_instance_uid > %s "
                "ORDER BY sop_instance_uid LIMIT %s",
                [last, size],
            )
            if not rows:
                return
            chunk = [str(r[0]) for r in rows]
            yield chunk
            last = chunk[-1]

    # -- routing and storage policy ------------------------------------------------------------

    def newest_instance(self) -> tuple[int, str, int] | None:
        rows = self._pg(
            "SELECT iid, sop_instance_uid, coalesce(" + _EPOCH_US.format("received_at") + ", 0) "
            "FROM instances ORDER BY iid DESC LIMIT 1"
        )
        return (int(rows[0][0]), str(rows[0][1]), int(rows[0][2])) if rows else None

    def instance_at(self, iid: int) -> str | None:
        rows = self._pg("SELECT sop_instance_uid FROM instances WHERE iid = %s", [int(iid)])
        return str(rows[0][0]) if rows else None

    def arrivals(self, after: int, limit: int) -> list[tuple[int, str, str, int]]:
        rows = self._pg(
            "SELECT iid, sop_instance_uid, study_instance_uid, coalesce("
            + _EPOCH_US.format("received_at")
            + ", 0) FROM instances WHERE iid > %s ORDER BY iid LIMIT %s",
            [int(after), int(limit)],
        )
        return [(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    def study_arrivals(self, study: str, after: int = 0) -> list[tuple[int, str]]:
        rows = self._pg(
            "SELECT iid, sop_instance_uid FROM instances WHERE study_instance_uid = %s "
            "AND iid > %s ORDER BY iid",
            [study, int(after)],
        )
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
        if received_since_us is None:
            bounds: tuple[int, int] | None = (int(after) + 1, int(upto))
            span, span_params = "i.iid > ? AND i.iid <= ?", [int(after), int(upto)]
        else:
            bounds = None
            span = _EPOCH_US.format("i.received_at") + " >= ?"
            span_params = [int(received_since_us)]
        cond = compile_condition("image", query, iid_range=bounds, calling_ae=calling_ae)
        sql = (
            "SELECT i.sop_instance_uid, i.study_instance_uid FROM instances i "
            f"WHERE {span} AND {cond.sql} ORDER BY i.iid"
        )
        return [(str(r[0]), str(r[1])) for r in self._rows(sql, [*span_params, *cond.params])]

    def instance_refs(self, sop_instance_uids: Sequence[str]) -> list[Location]:
        if not sop_instance_uids:
            return []
        rows = self._pg(
            'SELECT sop_instance_uid, sop_class_uid, transfer_syntax, pack, "offset", length, '
            "node FROM instances WHERE sop_instance_uid = ANY(%s)",
            [list(sop_instance_uids)],
        )
        return self._own([(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows], [r[6] for r in rows])

    def stored_bytes(self) -> int:
        rows = self._pg("SELECT coalesce(sum(length), 0)::bigint FROM instances")
        return int(rows[0][0]) if rows else 0

    def studies_oldest_first(
        self, limit: int, exclude: Sequence[str] = ()
    ) -> list[tuple[str, int, int, int]]:
        rows = self._pg(
            "SELECT study_instance_uid, coalesce("
            + _EPOCH_US.format("max(received_at)")
            + """, 0), sum(length)::bigint, count(*)
            FROM instances WHERE NOT (study_instance_uid = ANY(%s))
            GROUP BY study_instance_uid ORDER BY 2, 1 LIMIT %s""",
            [list(exclude), int(limit)],
        )
        return [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]

    def studies_dated_before(self, query: Mapping[str, Any], cutoff: Any) -> list[str]:
        cond = compile_condition("study", query)
        sql = f"""SELECT s.study_instance_uid FROM studies s
            WHERE {cond.sql} AND coalesce(s.study_date, (
              SELECT min(i.received_at) FROM instances i
              WHERE i.study_instance_uid = s.study_instance_uid)::DATE) < ?
            ORDER BY 1"""
        return [str(r[0]) for r in self._rows(sql, [*cond.params, cutoff])]

    def reader(self) -> PgReader:
        """A connection of its own for the write path's duplicate lookups."""
        return PgReader(self.config, self)


_READ_ONLY = (
    "SQL: only reading statements are allowed (the index is a view of the store, changed by "
    "ingest only)"
)


@contextmanager
def _user_statement(con: Any) -> Iterator[None]:
    """A read-only transaction for the user's SQL (``sql``, ``export``). The database's
    refusals become a :class:`QueryError` of one line; a lost or unreachable server stays a
    driver error, which the connection turns into ``IndexUnavailableError``."""
    psycopg = psycopg_module()
    try:
        with con.transaction():
            con.execute("SET TRANSACTION READ ONLY")
            yield
    except psycopg.errors.ReadOnlySqlTransaction as e:
        raise QueryError(_READ_ONLY) from e
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise
    except psycopg.Error as e:
        raise QueryError(f"SQL: {str(e).strip().splitlines()[0]}") from e


_EPOCH_US = "(extract(epoch FROM {0}) * 1000000)::bigint"


class PgReader:
    """Point lookups by SOP Instance UID on a connection of their own."""

    def __init__(self, config: PgConfig, owner: PgIndex) -> None:
        self._db = Connection(config, read_only=True)
        self.config = config
        self._owner = owner  # names other nodes to the store when it reads the bucket

    def locate_uids(self, uids: Sequence[str]) -> dict[str, tuple[int, int, int, str]]:
        """The write path's duplicate check: (pack, offset, length, SHA-256) of each indexed
        UID. Another node's instance comes at its remote location when this node reads the
        bucket, else marked :data:`FOREIGN`: the writer compares a new copy with it (reading
        it) and, under ``on_conflict = replace``, tombstones it, and a plain pack id of
        another node's store would name a record of *this* node's store."""
        rows = self._db.run(
            lambda c: c.execute(
                'SELECT i.sop_instance_uid, i.pack, i."offset", i.length, i.sha256, i.node, '
                "n.number FROM instances i LEFT JOIN nodes n ON n.name = i.node "
                "WHERE i.sop_instance_uid = ANY(%s)",
                [list(uids)],
            ).fetchall()
        )
        mine = self.config.node
        return {
            str(r[0]): (
                int(r[1]) if r[5] == mine else self._foreign_pack(int(r[1]), str(r[5]), r[6]),
                int(r[2]),
                int(r[3]),
                str(r[4] or ""),
            )
            for r in rows
        }

    def _foreign_pack(self, pack: int, node: str, number: int | None) -> int:
        if not self._owner.reads_remote or number is None:
            return pack | FOREIGN  # no bucket here, or a node that never registered
        return self._owner.remote_pack(pack, node, number)

    def close(self) -> None:
        self._db.close()


def _stage(con: Any) -> None:
    """The session's temporary tables of one write (emptied at every commit)."""
    instance_ddl = pg_schema.pg_types(
        ", ".join(f"{k.column} {k.sql_type}" for k in schema.KEY_ATTRIBUTES)
        + ", "
        + ", ".join(f'"{f.name}" {f.type}' for f in schema.LOCATION_FIELDS)
    )
    attr_ddl = pg_schema.pg_types(", ".join(f'"{f.name}" {f.type}' for f in schema.ATTR_FIELDS))
    for statement in (
        f"CREATE TEMP TABLE IF NOT EXISTS _dp_stage (pos bigint, iid bigint, {instance_ddl}) "
        "ON COMMIT DELETE ROWS",
        f"CREATE TEMP TABLE IF NOT EXISTS _dp_stage_attrs (pos bigint, {attr_ddl}) "
        "ON COMMIT DELETE ROWS",
        """CREATE TEMP TABLE IF NOT EXISTS _dp_old (iid bigint, series_instance_uid text,
            study_instance_uid text, patient_id text) ON COMMIT DELETE ROWS""",
        """CREATE TEMP TABLE IF NOT EXISTS _dp_touched (series_instance_uid text,
            study_instance_uid text, patient_id text) ON COMMIT DELETE ROWS""",
    ):
        con.execute(statement)


def _drop_instances(con: Any, where: str, params: Sequence[Any]) -> int:
    """Delete the instances matching ``where`` (inside the caller's locked transaction) with
    their attributes, recompute the level rows they touched; returns how many went."""
    _stage(con)
    con.execute(
        f"""INSERT INTO _dp_old SELECT iid, series_instance_uid, study_instance_uid,
          patient_id FROM instances WHERE {where}""",
        list(params),
    )
    con.execute("""INSERT INTO _dp_touched SELECT DISTINCT series_instance_uid,
          study_instance_uid, coalesce(patient_id, '') FROM _dp_old""")
    con.execute("ANALYZE _dp_old")
    con.execute("ANALYZE _dp_touched")
    con.execute("DELETE FROM attributes WHERE iid IN (SELECT iid FROM _dp_old)")
    con.execute("DELETE FROM instances WHERE iid IN (SELECT iid FROM _dp_old)")
    _refresh_levels(con)
    return int(con.execute("SELECT count(*) FROM _dp_old").fetchone()[0])


def _refresh_levels(con: Any) -> None:
    for statement in pg_schema.refresh_levels_sql():
        con.execute(statement)


def _fill_dictionary(con: Any) -> None:
    from duckpacs.index.db import _dictionary_columns

    tags, keywords, vrs, names = _dictionary_columns()
    with con.cursor().copy("COPY dicom_dictionary (tag, keyword, vr, name) FROM STDIN") as copy:
        for row in zip(tags, keywords, vrs, names, strict=True):
            copy.write_row(row)


_TYPE_NAMES: dict[int, str] = {}


def _type_name(con: Any, oid: int) -> str:
    """A PostgreSQL type name for an oid (what ``Rows.types`` holds), cached."""
    if oid not in _TYPE_NAMES:
        row = con.execute("SELECT format_type(%s, NULL)", [oid]).fetchone()
        _TYPE_NAMES[oid] = str(row[0]) if row else str(oid)
    return _TYPE_NAMES[oid]
