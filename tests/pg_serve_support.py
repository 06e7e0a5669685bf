"""`duckpacs serve` on a PostgreSQL index, for the fault and crash tests: the archive's
configuration file names the temporary cluster's database, the password in a file."""

from __future__ import annotations

from pathlib import Path

from tests.pg_support import Cluster


def configure_archive(data: Path, cluster: Cluster, node: str = "") -> str:
    """Write ``<data>/duckpacs.toml`` for a PostgreSQL index in a new database of
    ``cluster`` (DIMSE open to any caller, as the crash tests' archives are); returns the
    connection string."""
    data.mkdir(parents=True, exist_ok=True)
    dsn = cluster.database()
    secret = data.parent / f"{data.name}-pgpass"
    secret.write_text(cluster.PASSWORD + "\n")
    lines = [
        "[dimse]",
        "accept_any = true",
        "[index]",
        'backend = "postgres"',
        f'dsn = "{dsn}"',
        f'password_file = "{secret}"',
        "timeout = 3",
    ]
    if node:
        lines.append(f'node = "{node}"')
    (data / "duckpacs.toml").write_text("\n".join(lines) + "\n")
    return dsn
