"""The ``nodes`` table of a shared PostgreSQL index: which nodes write the archive, under
which number, and what each last reported (issue 26, packs on S3).

A node's packs in the bucket are under ``<prefix>/<node name>/``. Another node reads them
by a pack id that carries the writer's **number** in bits 48..62 (``pack | number << 48``),
so every node must agree on one number per name: the number is drawn here once, under an
advisory lock, the smallest one free (1..32767, the 15 bits), and kept for good.

The other columns are the node's heartbeat (``duckpacs cluster status`` shows them): when it
was last seen, the sealed packs still waiting for upload, and its read cache's use.
"""

from __future__ import annotations

from typing import Any, Final

from duckpacs.errors import ArchiveIndexError

# pg_advisory_xact_lock key of node registration ("dpnd" in ASCII).
NODE_LOCK: Final = 0x64706E64
MAX_NUMBER: Final = 32767  # bits 48..62 of a pack id
NUMBER_SHIFT: Final = 48

DDL: Final = f"""CREATE TABLE IF NOT EXISTS nodes (
    number smallint PRIMARY KEY CHECK (number BETWEEN 1 AND {MAX_NUMBER}),
    name text COLLATE "C" NOT NULL UNIQUE,
    registered timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    pending_packs bigint, pending_bytes bigint, cache_bytes bigint, cache_limit bigint)"""

COLUMNS: Final = (
    "number", "name", "registered", "last_seen", "seen_seconds_ago",
    "pending_packs", "pending_bytes", "cache_bytes", "cache_limit", "instances",
)  # fmt: skip


def register(con: Any, name: str) -> int:
    """The number of node ``name``, drawn (the smallest free) on its first call."""
    with con.transaction():
        con.execute("SELECT pg_advisory_xact_lock(%s)", [NODE_LOCK])
        row = con.execute("SELECT number FROM nodes WHERE name = %s", [name]).fetchone()
        if row is None:
            row = con.execute(
                f"""INSERT INTO nodes (number, name)
                SELECT n, %s FROM generate_series(1, {MAX_NUMBER}) AS n
                WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE number = n)
                ORDER BY n LIMIT 1 RETURNING number""",
                [name],
            ).fetchone()
        if row is None:
            raise ArchiveIndexError(
                f"cannot register node {name!r}: all {MAX_NUMBER} node numbers are taken"
            )
        return int(row[0])


def heartbeat(con: Any, name: str, figures: tuple[int, int, int, int]) -> bool:
    """Record that node ``name`` is alive with these figures (pending packs and bytes, cache
    bytes and limit); False when it has no row (not registered)."""
    cur = con.execute(
        """UPDATE nodes SET last_seen = now(), pending_packs = %s, pending_bytes = %s,
               cache_bytes = %s, cache_limit = %s
        WHERE name = %s""",
        [*figures, name],
    )
    return bool(cur.rowcount)


def numbers(con: Any) -> dict[str, int]:
    """Node name -> number of every registered node."""
    rows = con.execute("SELECT name, number FROM nodes").fetchall()
    return {str(name): int(number) for name, number in rows}


def listing(con: Any) -> list[dict[str, Any]]:
    """Every registered node with its heartbeat and the instances it holds, then the nodes
    that hold instances without having registered (number None: they never ran with packs
    on S3). Ages are counted by PostgreSQL's clock, the one every heartbeat was written by."""
    rows = con.execute(
        """SELECT n.number, coalesce(n.name, c.node), n.registered, n.last_seen,
               extract(epoch FROM now() - n.last_seen)::double precision,
               n.pending_packs, n.pending_bytes, n.cache_bytes, n.cache_limit,
               coalesce(c.instances, 0)
        FROM nodes n
        FULL JOIN (SELECT node, count(*) AS instances FROM instances GROUP BY node) c
          ON c.node = n.name
        ORDER BY n.number NULLS LAST, 2"""
    ).fetchall()
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]
