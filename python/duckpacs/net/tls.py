"""DICOM TLS settings (PS3.15 B.1 and B.9 secure transport connection profiles): what the
listener, the Rust SCUs and the pynetdicom SCUs need, checked once with one clear error.

- ``dimse.tls_port``, ``dimse.tls_cert``, ``dimse.tls_key``: a TLS listener beside the plain
  one; with ``dimse.tls_ca`` a caller must show a certificate that CA issued (mutual TLS).
- A peer with ``tls = true`` is dialed over TLS: its certificate must chain to
  ``dimse.tls_ca`` and name the host we dial; ours is shown when configured.
- A peer with ``tls_name`` or ``tls_fingerprint`` is admitted only over TLS, with a
  certificate carrying that Common Name or SHA-256 fingerprint.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from pathlib import Path
from typing import Any

from duckpacs.config import Peer, Settings
from duckpacs.errors import ConfigError

# (CA file, our certificate, our key, the server name its certificate must carry)
DialArgs = tuple[str, str | None, str | None, str]


def _readable(key: str, path: str) -> str:
    if not Path(path).is_file():
        raise ConfigError(f"{key} = {path!r}: no such file")
    return path


def listener_files(settings: Settings) -> tuple[str, str, str | None] | None:
    """(certificate, key, CA or None) for the TLS listener, or None when ``dimse.tls_port``
    is 0. Raises :class:`ConfigError` naming the missing or unreadable setting."""
    if not settings["dimse.tls_port"]:
        return None
    cert, key, ca = (settings[f"dimse.tls_{k}"] for k in ("cert", "key", "ca"))
    if not cert or not key:
        raise ConfigError("dimse.tls_port is set: dimse.tls_cert and dimse.tls_key are needed")
    return (
        _readable("dimse.tls_cert", cert),
        _readable("dimse.tls_key", key),
        _readable("dimse.tls_ca", ca) if ca else None,
    )


def _our_identity(settings: Settings) -> tuple[str | None, str | None]:
    cert, key = settings["dimse.tls_cert"], settings["dimse.tls_key"]
    if bool(cert) != bool(key):
        raise ConfigError("dimse.tls_cert and dimse.tls_key go together: set both or neither")
    return (cert or None, key or None)


def dial_args(settings: Settings, peer: Peer) -> DialArgs | None:
    """``(ca, certificate, key, server name)`` for the Rust SCUs (``_core.send_stored``,
    ``_core.get_study``) when ``peer`` is marked ``tls = true``, else None."""
    if not peer.tls:
        return None
    ca = settings["dimse.tls_ca"]
    if not ca:
        raise ConfigError(
            f"peer {peer.name} has tls = true: set dimse.tls_ca to the CA its certificate "
            "must chain to"
        )
    cert, key = _our_identity(settings)
    return (_readable("dimse.tls_ca", ca), cert, key, peer.host)


def client_context(settings: Settings, peer: Peer) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` (an SSL context and the server name to check) for a peer
    marked ``tls = true``, else None: the same checks as :func:`dial_args`."""
    args = dial_args(settings, peer)
    return None if args is None else pynetdicom_args(args)


def pynetdicom_args(args: DialArgs) -> tuple[ssl.SSLContext, str]:
    """:func:`dial_args`' answer as pynetdicom's ``tls_args``."""
    ca, cert, key, name = args
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    # BCP 195 (PS3.15 B.9): TLS 1.2 at least.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert and key:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"dimse.tls_cert {cert} with dimse.tls_key {key}: {e}") from e
    return context, name


def handshake_problem(
    host: str, port: int, tls_args: tuple[ssl.SSLContext, str], timeout: float = 5.0
) -> str | None:
    """Why a TLS handshake with ``host:port`` fails, or None: said after an association
    failed, since pynetdicom only says that it did. With TLS 1.3 a server's refusal of our
    certificate arrives after the handshake, so wait briefly for an alert too."""
    context, name = tls_args
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=name) as conn,
        ):
            conn.settimeout(min(timeout, 2.0))
            with contextlib.suppress(TimeoutError):
                conn.recv(1)
    except (ssl.SSLError, OSError) as e:
        return f"TLS handshake failed: {e}"
    return None


def identity_refusal(peer: Peer | None, tls: dict[str, Any] | None) -> str | None:
    """Why a caller claiming ``peer``'s AE title is refused on identity grounds, or None.

    A peer with ``tls_name``/``tls_fingerprint`` must come over TLS with a certificate that
    carries that Common Name or fingerprint; the CA check itself happened in the handshake.
    """
    if peer is None or not (peer.tls_name or peer.tls_fingerprint):
        return None
    if tls is None:
        return f"peer {peer.name} must call over DICOM TLS"
    name, fingerprint = tls.get("common_name"), tls.get("fingerprint")
    if fingerprint is None:
        return f"peer {peer.name} showed no certificate"
    if peer.tls_fingerprint and fingerprint != peer.tls_fingerprint:
        return f"peer {peer.name}: certificate fingerprint {fingerprint} is not the configured one"
    if peer.tls_name and name != peer.tls_name:
        return f"peer {peer.name}: certificate Common Name {name!r} is not {peer.tls_name!r}"
    return None
