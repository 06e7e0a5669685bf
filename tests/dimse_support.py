"""DIMSE test support: settings written to a temporary config file, an in-process server.

Test modules import the fixtures they use from here (``settings_factory``, ``running_server``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from duckpacs import config
from duckpacs.archive import Archive

SCU_AE = "TESTSCU"
DEST_AE = "TESTDEST"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(
    data_dir: Path,
    peers: dict[str, dict[str, Any]] | None = None,
    extra: str = "",
) -> config.Settings:
    lines = [
        "[archive]",
        f'data_dir = "{data_dir}"',
        "[dimse]",
        'ae_title = "DUCKPACS"',
        "port = 11112",
        'bind = "127.0.0.1"',
        extra,
    ]
    for name, spec in (peers or {}).items():
        lines.append(f"[peers.{name}]")
        for key, value in spec.items():
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            lines.append(f"{key} = {shown}".replace("'", '"'))
    path = data_dir / "duckpacs.toml"
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return config.load(config_path=path, env={}, cwd=data_dir)


def default_peers(dest_port: int = 1) -> dict[str, dict[str, Any]]:
    return {
        "scu": {"ae_title": SCU_AE, "host": "127.0.0.1", "port": 1},
        "dest": {"ae_title": DEST_AE, "host": "127.0.0.1", "port": dest_port},
        "readonly": {
            "ae_title": "READONLY",
            "host": "127.0.0.1",
            "port": 1,
            "permissions": ["echo", "find"],
        },
    }


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., config.Settings]:
    def factory(**kwargs: Any) -> config.Settings:
        return make_settings(tmp_path / "data", **kwargs)

    return factory


@pytest.fixture
def running_server(
    tmp_path: Path,
) -> Iterator[Callable[..., tuple[Any, int]]]:
    """Start the DICOM listener (the Rust server, in this process) over a given Archive;
    yields a starter returning (listener, port)."""
    from duckpacs.net.scp import DimseListener

    servers: list[DimseListener] = []

    def start(archive: Archive, settings: config.Settings) -> tuple[DimseListener, int]:
        server = DimseListener(settings, archive)
        _host, port = server.start("127.0.0.1", 0)
        servers.append(server)
        return server, port

    yield start
    for server in servers:
        server.stop(grace=1.0)


@pytest.fixture
def archive_factory(tmp_path: Path) -> Iterator[Callable[..., Archive]]:
    """Opens real archives (Rust write path, store, DuckDB index) in the test's folder, the
    same data folder the settings use; closes them afterwards."""
    opened: list[Archive] = []

    def factory(on_conflict: str = "keep-first", name: str = "") -> Archive:
        archive = Archive.open(tmp_path / "data" / name, on_conflict=on_conflict)
        opened.append(archive)
        return archive

    yield factory
    for archive in opened:
        archive.close()


class SmallDisk:
    """A 4 MiB tmpfs mounted over the archive's store folder, to run it out of space."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.filler = store / "filler"

    @contextlib.contextmanager
    def full(self) -> Iterator[None]:
        """While inside: the filesystem is full but for a few KiB; then the space is back."""
        import errno

        with self.filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
        try:
            yield
        finally:
            self.filler.unlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """:class:`SmallDisk` under ``tmp_path/data/store`` (mounting needs root: skipped
    otherwise, with that reason)."""
    import subprocess

    store = tmp_path / "data" / "store"
    store.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a tmpfs mount, which needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(store)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(store)
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


def dcmtk_tool(name: str) -> str:
    """Path of DCMTK's ``name`` (storescu, getscu, ...), skipping the test when absent.

    pynetdicom installs console scripts with the same names (echoscu, storescu, findscu,
    getscu, movescu, storescp) into the virtual environment, which `make` puts first on
    PATH; the interop tests must drive DCMTK's, so the environment's bin folder is skipped.
    """
    venv_bin = (Path(sys.prefix) / "bin").resolve()
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    search = os.pathsep.join(d for d in dirs if Path(d).resolve() != venv_bin)
    found = shutil.which(name, path=search)
    if found is None:
        pytest.skip(f"DCMTK's {name} not installed (Debian package dcmtk)")
    return found
