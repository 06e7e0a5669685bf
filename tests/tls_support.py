"""Certificates for the DICOM TLS tests, made at test time with the ``openssl`` command:
a test CA, a server certificate for 127.0.0.1/localhost, client certificates issued by the
CA, and a rogue CA with a client certificate of its own (which must be refused).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

# Leaf certificates serve both ends: a node's certificate is shown when it listens and when
# it dials a peer that asks for one (PS3.15 B.9 mutual authentication).
LEAF_EXTENSIONS = """basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
"""


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Identity
    client: Identity
    other_client: Identity
    # A third-party archive (Orthanc) as a TLS peer.
    peer: Identity
    rogue_ca: Path
    rogue_client: Identity


def _openssl(*args: str | Path) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))}: {done.stderr}")


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", key, "-out", cert, "-subj", f"/CN={name}")  # fmt: skip
    return cert, key


def _leaf(folder: Path, name: str, common_name: str, ca: tuple[Path, Path]) -> Identity:
    cert, key, csr = folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr"
    ext = folder / "leaf.ext"
    ext.write_text(LEAF_EXTENSIONS)
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", f"/O=duckpacs tests/CN={common_name}")  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-days", "2", "-out", cert, "-extfile", ext)  # fmt: skip
    return Identity(cert, key)


def make_pki(folder: Path) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca(folder, "test-ca")
    rogue = _ca(folder, "rogue-ca")
    return Pki(
        ca=ca[0],
        server=_leaf(folder, "server", "duckpacs.test", ca),
        client=_leaf(folder, "client", "MODALITY", ca),
        other_client=_leaf(folder, "other", "SOMEONE-ELSE", ca),
        peer=_leaf(folder, "peer", "ORTHANC", ca),
        rogue_ca=rogue[0],
        rogue_client=_leaf(folder, "rogue", "MODALITY", rogue),
    )


def fingerprint(cert: Path) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex (what duckpacs compares)."""
    done = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip().split("=", 1)[1].replace(":", "").lower()
