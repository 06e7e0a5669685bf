"""The running server's local socket: command-line tools query the archive it holds open
(lookup, find, locate), errors cross it as the same classes, a wrong key is refused, and a
socket left by a killed server neither blocks the next start nor fools a tool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from duckpacs.archive import ipc, layout
from duckpacs.errors import QueryError

CT = Path(str(get_testdata_file("CT_small.dcm")))


@pytest.fixture
def service(archive_factory: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    archive = archive_factory()
    archive.store(CT.read_bytes())  # acknowledged, not yet committed to the index
    local = ipc.LocalService(archive, tmp_path / "data", b"secret")
    local.start()
    yield local
    local.stop()


def test_tools_see_what_the_server_acknowledged(service: ipc.LocalService) -> None:
    client = ipc.RemoteArchive(service.address, b"secret")
    uid = str(dcmread(CT).SOPInstanceUID)
    ref = client.lookup(uid)
    assert ref is not None and ref.sop_instance_uid == uid
    rows = client.find("IMAGE", {"SOPInstanceUID": uid}, ["Modality"])
    assert rows == [{"SOPInstanceUID": uid, "Modality": "CT"}]
    assert [r.sop_instance_uid for r in client.locate("STUDY", {})] == [uid]
    assert client.lookup("1.2.3.nobody") is None


def test_errors_cross_the_socket_and_a_wrong_key_is_refused(service: ipc.LocalService) -> None:
    client = ipc.RemoteArchive(service.address, b"secret")
    with pytest.raises(QueryError):
        client.find("IMAGE", {"NoSuchKeyword": "x"}, [])
    assert not ipc.RemoteArchive(service.address, b"wrong key").reachable()


def test_the_key_file_is_private_and_removed_at_stop(tmp_path: Path, archive_factory: Any) -> None:
    local = ipc.LocalService(archive_factory(), tmp_path / "data", b"k")
    key = tmp_path / "data" / layout.KEY_FILENAME
    assert key.read_bytes() == b"k" and key.stat().st_mode & 0o077 == 0
    local.stop()
    assert not key.exists()


def test_a_killed_servers_socket_is_replaced(tmp_path: Path, archive_factory: Any) -> None:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    stale = Path(ipc.socket_path(data))
    stale.write_bytes(b"")  # what SIGKILL leaves: the file, nobody listening
    assert not ipc.RemoteArchive(str(stale), b"k").reachable()
    local = ipc.LocalService(archive_factory(), data, b"k")
    local.start()
    try:
        assert ipc.RemoteArchive(local.address, b"k").reachable()
    finally:
        local.stop()
