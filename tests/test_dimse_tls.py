"""DICOM over TLS (PS3.15 B.9): DCMTK's tools with ``+tls`` against the TLS listener with
mutual authentication, refusals of callers without a good certificate, the plain listener
beside it, certificates tied to configured peers, and duckpacs' own SCUs (echo, send,
migrate, C-MOVE sub-operations) to a peer marked ``tls = true``.

Certificates are made at test time by ``openssl`` (tests/tls_support.py). DCMTK runs with
TCP_NODELAY=1.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from duckpacs import config
from duckpacs.archive import Archive, part10
from duckpacs.errors import ConfigError
from duckpacs.net.scp import DimseListener
from tests.dimse_support import dcmtk_tool, make_settings
from tests.helpers import dcmtk_env, duckpacs_cmd, free_port
from tests.tls_support import Identity, Pki, fingerprint, make_pki

FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_extra(pki: Pki, identity: Identity | None = None, ca: bool = True) -> str:
    identity = identity or pki.server
    lines = [
        "tls_port = 2762",
        f'tls_cert = "{identity.cert}"',
        f'tls_key = "{identity.key}"',
    ]
    if ca:
        lines.append(f'tls_ca = "{pki.ca}"')
    return "\n".join(lines)


def modality_peer(**extra: Any) -> dict[str, dict[str, Any]]:
    return {"modality": {"ae_title": "MODALITY", "host": "127.0.0.1", "port": 1, **extra}}


class Node:
    """An archive with its plain and TLS listeners, in this process."""

    def __init__(self, folder: Path, settings: config.Settings) -> None:
        self.archive = Archive.open(folder)
        self.listener = DimseListener(settings, self.archive)
        _bind, self.port = self.listener.start("127.0.0.1", 0, 0)
        assert self.listener.tls_address is not None
        self.tls_port = self.listener.tls_address[1]

    def close(self) -> None:
        self.listener.stop(grace=1.0)
        self.archive.close()


@pytest.fixture
def node(tmp_path: Path, pki: Pki) -> Iterator[Any]:
    made: list[Node] = []

    def start(peers: dict[str, dict[str, Any]] | None = None, name: str = "a") -> Node:
        folder = tmp_path / name
        settings = make_settings(folder, peers=peers, extra=tls_extra(pki))
        made.append(Node(folder, settings))
        return made[-1]

    yield start
    for n in made:
        n.close()


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, env=dcmtk_env(), timeout=timeout, check=False
    )


def tls_args(identity: Identity | None, pki: Pki) -> list[str]:
    """DCMTK's TLS options: our key and certificate (or anonymous TLS), the trusted CA."""
    shown = ["+tls", str(identity.key), str(identity.cert)] if identity else ["+tla"]
    return [*shown, "+cf", str(pki.ca)]


def echoscu(
    port: int, *options: str, calling: str = "MODALITY"
) -> subprocess.CompletedProcess[str]:
    return run(dcmtk_tool("echoscu"), *options, "-aet", calling, "-aec", "DUCKPACS",
               "127.0.0.1", str(port))  # fmt: skip


def storescu(port: int, files: list[str], *options: str) -> subprocess.CompletedProcess[str]:
    return run(dcmtk_tool("storescu"), *options, "-aet", "MODALITY", "-aec", "DUCKPACS",
               "127.0.0.1", str(port), *files)  # fmt: skip


def sources() -> list[str]:
    return [str(get_testdata_file(name)) for name in FILES]


def dataset_sha(data: bytes) -> str:
    return hashlib.sha256(data[part10.split(data).dataset_offset :]).hexdigest()


def stored_uids(archive: Archive) -> set[str]:
    return {str(r["SOPInstanceUID"]) for r in archive.find("IMAGE", {}, ["SOPInstanceUID"])}


def test_dcmtk_stores_and_queries_over_mutual_tls(node: Any, pki: Pki) -> None:
    a = node(modality_peer())
    done = echoscu(a.tls_port, *tls_args(pki.client, pki))
    assert done.returncode == 0, done.stderr
    done = storescu(a.tls_port, sources(), *tls_args(pki.client, pki))
    assert done.returncode == 0, done.stderr
    want = {str(dcmread(f).SOPInstanceUID) for f in sources()}
    assert stored_uids(a.archive) == want
    ct = dcmread(sources()[0])
    done = run(dcmtk_tool("findscu"), *tls_args(pki.client, pki), "-S", "-aet", "MODALITY",
               "-aec", "DUCKPACS", "-k", "QueryRetrieveLevel=STUDY", "-k",
               f"StudyInstanceUID={ct.StudyInstanceUID}", "-k", "PatientName",
               "127.0.0.1", str(a.tls_port))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert str(ct.PatientName) in done.stderr + done.stdout


def client_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    return context


def test_retrieve_over_tls_gives_back_the_stored_bytes(node: Any, pki: Pki) -> None:
    # DCMTK 3.6.7's getscu has no TLS: the C-GET SCU here is pynetdicom's, over ssl.
    a = node(modality_peer())
    ct = sources()[0]
    assert storescu(a.tls_port, [ct], *tls_args(pki.client, pki)).returncode == 0
    ds = dcmread(ct)
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ds.file_meta.TransferSyntaxUID])
    received: list[bytes] = []

    def keep(event: Any) -> int:
        received.append(event.encoded_dataset(include_meta=False))
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1", a.tls_port, ae_title="DUCKPACS",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, keep)], tls_args=(client_context(pki), "127.0.0.1"),
    )  # fmt: skip
    assert assoc.is_established
    query = dcmread(ct, specific_tags=["StudyInstanceUID"])
    query.QueryRetrieveLevel = "STUDY"
    statuses = [
        int(s.Status) for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
    ]
    assoc.release()
    assert statuses[-1] == 0x0000
    # storescu may re-encode pydicom's odd files: compare with what the archive holds.
    ref = a.archive.locate("IMAGE", {"SOPInstanceUID": str(ds.SOPInstanceUID)})[0]
    stored, _ts = a.archive.read_dataset(ref)
    assert [hashlib.sha256(r).hexdigest() for r in received] == [hashlib.sha256(stored).hexdigest()]


@pytest.mark.parametrize("who", ["rogue CA", "no certificate", "plain TCP"])
def test_callers_without_a_valid_certificate_are_refused(node: Any, pki: Pki, who: str) -> None:
    a = node(modality_peer())
    options = {
        "rogue CA": tls_args(pki.rogue_client, pki),
        "no certificate": tls_args(None, pki),
        "plain TCP": [],
    }[who]
    done = storescu(a.tls_port, sources()[:1], *options)
    assert done.returncode != 0
    assert stored_uids(a.archive) == set()
    # The listener goes on serving good callers.
    assert echoscu(a.tls_port, *tls_args(pki.client, pki)).returncode == 0


def test_garbage_on_the_tls_port_is_closed_and_the_listener_goes_on(node: Any, pki: Pki) -> None:
    a = node(modality_peer())
    with socket.create_connection(("127.0.0.1", a.tls_port), timeout=10) as raw:
        raw.sendall(b"\x01\x00\x00\x00\x00\x10not a TLS record at all")
        # A TLS alert at most, then the end of the stream.
        got = b""
        while chunk := raw.recv(4096):
            got += chunk
        assert len(got) < 64
    assert echoscu(a.tls_port, *tls_args(pki.client, pki)).returncode == 0


def test_plain_listener_serves_beside_the_tls_one(node: Any, pki: Pki) -> None:
    a = node(modality_peer())
    assert echoscu(a.port).returncode == 0
    assert storescu(a.port, sources()[:1]).returncode == 0
    assert storescu(a.tls_port, sources()[1:2], *tls_args(pki.client, pki)).returncode == 0
    assert len(stored_uids(a.archive)) == 2
    # TLS spoken to the plain port is not DICOM: refused, and the port still works.
    assert echoscu(a.port, *tls_args(pki.client, pki)).returncode != 0
    assert echoscu(a.port).returncode == 0


@pytest.mark.parametrize("tie", ["tls_name", "tls_fingerprint"])
def test_a_peer_tied_to_its_certificate(node: Any, pki: Pki, tie: str) -> None:
    value = "MODALITY" if tie == "tls_name" else fingerprint(pki.client.cert)
    a = node(modality_peer(**{tie: value}))
    assert echoscu(a.tls_port, *tls_args(pki.client, pki)).returncode == 0
    # A certificate from the same CA, but not this peer's.
    assert echoscu(a.tls_port, *tls_args(pki.other_client, pki)).returncode != 0
    # The peer's AE title on the plain port: refused (it must come over TLS).
    assert echoscu(a.port).returncode != 0
    # Other callers on the plain port keep the unknown-peer rights (echo).
    assert echoscu(a.port, calling="SOMEONE").returncode == 0


def test_bad_tls_files_give_one_clear_error(tmp_path: Path, pki: Pki) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = {
        "cert": (Identity(garbage, pki.server.key), "certificate file"),
        "key": (Identity(pki.server.cert, pki.ca), "private key file"),
        "pair": (Identity(pki.server.cert, pki.client.key), "certificate"),
    }
    for name, (identity, words) in cases.items():
        folder = tmp_path / name
        settings = make_settings(folder, extra=tls_extra(pki, identity))
        archive = Archive.open(folder)
        listener = DimseListener(settings, archive)
        try:
            with pytest.raises(ConfigError, match=words):
                listener.start("127.0.0.1", 0, 0)
            assert listener.address is None or listener._server is None
        finally:
            listener.stop(0)
            archive.close()
    missing = make_settings(
        tmp_path / "missing", extra=tls_extra(pki, Identity(tmp_path / "no.pem", pki.server.key))
    )
    archive = Archive.open(tmp_path / "missing")
    try:
        with pytest.raises(ConfigError, match="dimse.tls_cert .*no such file"):
            DimseListener(missing, archive).start("127.0.0.1", 0, 0)
    finally:
        archive.close()


def test_serve_with_a_bad_key_stops_with_one_error_line(tmp_path: Path, pki: Pki) -> None:
    folder = tmp_path / "data"
    settings = make_settings(folder, extra=tls_extra(pki, Identity(pki.server.cert, pki.ca)))
    assert settings.config_file is not None
    done = subprocess.run(
        duckpacs_cmd("serve", "--config", str(settings.config_file),
                     "--http-port", str(free_port()), "--port", str(free_port())),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr
    assert "private key file" in errors[0] and str(pki.ca) in errors[0]


def caller_config(tmp_path: Path, pki: Pki, b: Node, identity: Identity | None) -> Path:
    """Archive A's configuration: peer ``site_b`` is node B's TLS port, ``tls = true``."""
    extra = f'tls_ca = "{pki.ca}"'
    if identity is not None:
        extra += f'\ntls_cert = "{identity.cert}"\ntls_key = "{identity.key}"'
    peers = {
        "site_b": {"ae_title": "DUCKPACS", "host": "127.0.0.1", "port": b.tls_port, "tls": True}
    }
    settings = make_settings(tmp_path / "caller", peers=peers, extra=extra)
    assert settings.config_file is not None
    return settings.config_file


def cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        duckpacs_cmd(*args, "--config", str(config_file)),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_duckpacs_echo_send_and_migrate_to_a_tls_peer(tmp_path: Path, node: Any, pki: Pki) -> None:
    # Node B knows archive A as the peer "caller" (our AE title DUCKPACS... both use it,
    # so B admits A's calls as its configured peer with every right).
    b = node({"caller": {"ae_title": "DUCKPACS", "host": "127.0.0.1", "port": 1}}, name="b")
    config_file = caller_config(tmp_path, pki, b, pki.client)
    done = cli(config_file, "echo", "site_b")
    assert done.returncode == 0, done.stderr
    assert "over TLS" in done.stdout
    done = cli(config_file, "import", *sources())
    assert done.returncode == 0, done.stderr
    done = cli(config_file, "send", "--to", "site_b")
    assert done.returncode == 0, done.stderr + done.stdout
    want = {str(dcmread(f).SOPInstanceUID) for f in sources()}
    assert stored_uids(b.archive) == want
    # migrate the other way round: C-FIND (pynetdicom) and C-GET (Rust) over TLS.
    fresh = caller_config(tmp_path / "fresh", pki, b, pki.client)
    done = cli(fresh, "migrate", "--from", "site_b")
    assert done.returncode == 0, done.stderr + done.stdout
    migrated = Archive.open(tmp_path / "fresh" / "caller")
    try:
        assert stored_uids(migrated) == want
    finally:
        migrated.close()


def test_tls_peer_without_our_certificate_or_ca(tmp_path: Path, node: Any, pki: Pki) -> None:
    b = node({"caller": {"ae_title": "DUCKPACS", "host": "127.0.0.1", "port": 1}}, name="b")
    # No certificate of ours: B requires one, the handshake fails, the error says so.
    done = cli(caller_config(tmp_path, pki, b, None), "echo", "site_b")
    assert done.returncode != 0
    assert "TLS handshake failed" in done.stderr and "certificate" in done.stderr
    # tls = true without dimse.tls_ca: a configuration error naming the setting.
    peers = {
        "site_b": {"ae_title": "DUCKPACS", "host": "127.0.0.1", "port": b.tls_port, "tls": True}
    }
    settings = make_settings(tmp_path / "noca", peers=peers)
    assert settings.config_file is not None
    done = cli(settings.config_file, "echo", "site_b")
    assert done.returncode != 0
    assert "dimse.tls_ca" in done.stderr


def test_c_move_to_a_tls_destination(tmp_path: Path, node: Any, pki: Pki) -> None:
    port = free_port()
    peers = {
        **modality_peer(),
        "viewer": {"ae_title": "VIEWER", "host": "127.0.0.1", "port": port, "tls": True},
    }
    a = node(peers)
    ct = sources()[0]
    assert storescu(a.port, [ct]).returncode == 0
    out = tmp_path / "moved"
    out.mkdir()
    scp = subprocess.Popen(
        [dcmtk_tool("storescp"), "+tls", str(pki.client.key), str(pki.client.cert),
         "+cf", str(pki.ca), "-aet", "VIEWER", "-od", str(out), str(port)],
        env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # storescp is listening once it accepts a plain TCP connection.
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "storescp did not start"
                time.sleep(0.1)
        done = run(dcmtk_tool("movescu"), "-S", "-aet", "MODALITY", "-aec", "DUCKPACS", "-aem",
                   "VIEWER", "-k", "QueryRetrieveLevel=STUDY", "-k",
                   f"StudyInstanceUID={dcmread(ct).StudyInstanceUID}",
                   "127.0.0.1", str(a.port))  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        scp.terminate()
        scp.wait(10)
    moved = [p for p in out.rglob("*") if p.is_file()]
    assert len(moved) == 1
    ref = a.archive.locate("IMAGE", {"SOPInstanceUID": str(dcmread(ct).SOPInstanceUID)})[0]
    stored, _ts = a.archive.read_dataset(ref)
    assert dataset_sha(moved[0].read_bytes()) == hashlib.sha256(stored).hexdigest()


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"tls": "maybe"}, "peers.x.tls = 'maybe' is invalid"),
        ({"tls_fingerprint": "abc"}, "tls_fingerprint = 'abc' is invalid"),
        ({"tls_name": 5}, "tls_name = 5 is invalid"),
    ],
)
def test_bad_peer_tls_keys_are_named(tmp_path: Path, spec: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        make_settings(tmp_path, peers={"x": {"ae_title": "X", "host": "h", "port": 1, **spec}})


def test_peer_fingerprint_is_normalised(tmp_path: Path) -> None:
    colons = ":".join(["AB"] * 32)
    settings = make_settings(
        tmp_path, peers={"x": {"ae_title": "X", "host": "h", "port": 1, "tls_fingerprint": colons}}
    )
    assert settings.peers["x"].tls_fingerprint == "ab" * 32
    assert settings.peers["x"].tls is False
