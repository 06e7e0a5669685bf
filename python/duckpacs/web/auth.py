"""Who is calling: users with roles, salted slow password hashes, sessions and tokens.

- Users live in ``users.json`` in the data folder, each with an Argon2id hash (RFC 9106;
  salted, memory-hard) and roles: ``viewer`` (search and view), ``uploader`` (also STOW-RS)
  and ``admin`` (everything).
- The web UI logs in once and carries a signed session cookie (HttpOnly, SameSite=Strict).
- DICOMweb clients send HTTP Basic (RFC 7617) or a bearer token (RFC 6750) issued by
  ``POST /api/tokens``. Sessions and tokens are HMAC-SHA256 signed with a secret kept in the
  data folder, so they survive restarts; they name the user, whose roles are looked up on
  every request (removing a user revokes them).
- Sessions and tokens expire (``http.session_ttl``, ``http.token_ttl``) and carry the time
  they were issued; each user has a ``not_before`` time in the users file, moved to now by a
  password change or ``duckpacs user logout-all``, before which they no longer count. The
  server notices the users file changing, so the CLI's changes apply at once.
- Wrong passwords are counted per address and per user name; either locks out for a while
  (429 with Retry-After), and each lockout is reported to the audit log.
- Anonymous callers get every role only when the configuration allows it: ``loopback``
  (the default: 127.0.0.1 and ::1 only), ``any`` or ``off``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import Request

from duckpacs.errors import ConfigError
from duckpacs.web.errors import HttpError

# The users file, in the data folder; read by the web app, written by `duckpacs user`.
USERS_FILENAME = "users.json"
ROLES = ("viewer", "uploader", "admin")
PERMISSIONS = {
    "viewer": frozenset({"read"}),
    "uploader": frozenset({"read", "store"}),
    "admin": frozenset({"read", "store", "admin"}),
}
ANONYMOUS_MODES = ("loopback", "any", "off")
SESSION_COOKIE = "duckpacs_session"
SESSION_TTL = 12 * 3600
TOKEN_TTL = 30 * 24 * 3600
VERIFY_CACHE_TTL = 300.0
# How often the users file's modification time is looked at (seconds).
RELOAD_CHECK = 1.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Principal:
    """An authenticated (or anonymous) caller."""

    name: str
    roles: frozenset[str]
    method: str  # anonymous, basic, bearer, session

    def can(self, permission: str) -> bool:
        return any(permission in PERMISSIONS.get(role, frozenset()) for role in self.roles)


def require(request: Request, permission: str) -> None:
    """403 unless the caller (set by the auth middleware) holds ``permission``."""
    principal = request.scope.get("duckpacs.principal")
    if principal is None or not principal.can(permission):
        raise HttpError(403, f"this account may not {permission}")


def _roles(value: object) -> frozenset[str]:
    if not isinstance(value, list | tuple | set | frozenset) or not value:
        raise ValueError("roles must be a non-empty list of " + ", ".join(ROLES))
    roles = frozenset(str(r).lower() for r in value)
    if not roles <= set(ROLES):
        raise ValueError("roles must be drawn from " + ", ".join(ROLES))
    return roles


class UserStore:
    """Users and their Argon2id hashes in a JSON file (written atomically, mode 0600)."""

    def __init__(self, path: Path, hasher: PasswordHasher | None = None) -> None:
        self.path = path
        self._hasher = hasher or PasswordHasher()
        self._lock = threading.Lock()
        self._verified: dict[tuple[str, str, bytes], float] = {}
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()
        self._users = self._load()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _refresh(self) -> None:
        """Reload when another process (``duckpacs user``) changed the file; a file that
        cannot be read keeps the users known so far (the server goes on)."""
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            users = self._load()
        except ConfigError:
            return
        with self._lock:
            self._stamp, self._users = stamp, users
            self._verified.clear()

    def _load(self) -> dict[str, dict[str, object]]:
        if not self.path.exists():
            return {}
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            users = document["users"]
            for name, entry in users.items():
                _roles(entry["roles"])
                if not str(entry["hash"]).startswith("$argon2"):
                    raise ValueError(f"user {name}: not an argon2 hash")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{self.path}: invalid users file: {e}") from None
        return dict(users)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"users": self._users}, f, indent=2, sort_keys=True)
        os.replace(tmp, self.path)
        self._stamp = self._file_stamp()

    def names(self) -> list[str]:
        self._refresh()
        with self._lock:
            return sorted(self._users)

    def roles_of(self, name: str) -> frozenset[str] | None:
        self._refresh()
        with self._lock:
            entry = self._users.get(name)
        return None if entry is None else _roles(entry["roles"])

    def set_user(self, name: str, password: str, roles: list[str]) -> None:
        """Create or replace a user. Raises ValueError on a bad name, password or roles."""
        if not name or ":" in name or not name.isprintable() or len(name) > 64:
            raise ValueError("user names are 1-64 printable characters without ':'")
        if len(password) < 8:
            raise ValueError("passwords have at least 8 characters")
        entry: dict[str, object] = {
            "hash": self._hasher.hash(password),
            "roles": sorted(_roles(roles)),
            # A new password ends every session and token issued before it.
            "not_before": now_ms(),
        }
        with self._lock:
            self._users[name] = entry
            self._verified.clear()
            self._save()

    def not_before(self, name: str) -> int:
        """Sessions and tokens of ``name`` issued before this time (ms) are void."""
        self._refresh()
        with self._lock:
            entry = self._users.get(name) or {}
        value = entry.get("not_before", 0)
        return value if isinstance(value, int) else 0

    def revoke(self, name: str | None = None) -> list[str]:
        """End every session and token of ``name`` (every user's when None); the names."""
        with self._lock:
            names = [n for n in self._users if name is None or n == name]
            stamp = now_ms()
            for n in names:
                self._users[n]["not_before"] = stamp
            if names:
                self._save()
        return names

    def remove(self, name: str) -> bool:
        with self._lock:
            found = self._users.pop(name, None) is not None
            self._verified.clear()
            if found:
                self._save()
        return found

    def verify(self, name: str, password: str) -> frozenset[str] | None:
        """The user's roles when ``password`` is right, else None.

        Argon2 is slow on purpose; a successful check is remembered for a few minutes (keyed by
        a SHA-256 of the password, in memory only) so HTTP Basic clients stay fast.
        """
        self._refresh()
        with self._lock:
            entry = self._users.get(name)
        if entry is None:
            return None
        stored = str(entry["hash"])
        key = (name, stored, hashlib.sha256(password.encode()).digest())
        if self._verified.get(key, 0.0) > time.monotonic():
            return _roles(entry["roles"])
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        with self._lock:
            self._verified[key] = time.monotonic() + VERIFY_CACHE_TTL
        return _roles(entry["roles"])


class Signer:
    """HMAC-SHA256 signed, expiring tokens naming a user, for one purpose each."""

    def __init__(self, secret_path: Path) -> None:
        self._key = self._load_or_create(secret_path)

    @staticmethod
    def _load_or_create(path: Path) -> bytes:
        if path.exists():
            key = path.read_bytes()
            if len(key) >= 32:
                return key
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key

    def issue(self, name: str, purpose: str, ttl: int) -> str:
        issued = now_ms()
        claims = {"u": name, "p": purpose, "e": issued // 1000 + ttl, "i": issued}
        payload = json.dumps(claims).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._sign(body)}"

    def verify(self, token: str, purpose: str) -> tuple[str, int] | None:
        """The user named by a valid, unexpired token and when it was issued (ms)."""
        body, dot, signature = token.partition(".")
        given = signature.encode("utf-8", "replace")
        if not dot or not hmac.compare_digest(given, self._sign(body).encode()):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            expires, issued = int(payload.get("e", 0)), int(payload.get("i", 0))
        except (ValueError, TypeError, AttributeError, binascii.Error):
            return None
        if payload.get("p") != purpose or expires < time.time():
            return None
        name = payload.get("u")
        return (name, issued) if isinstance(name, str) else None

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Throttled(Exception):
    """Too many wrong passwords from one address or for one user: 429 with Retry-After."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after} s")
        self.retry_after = retry_after


# Called with (kind, key, seconds) when a lockout starts: kind "address" or "user".
LockoutHook = Callable[[str, str, int], None]


class Throttle:
    """Locks a key (``address:...`` or ``user:...``) out for ``lockout`` seconds after
    ``limit`` wrong passwords within ``window`` seconds: brute force against Basic or the
    login form, from one address or spread over many against one user."""

    def __init__(
        self,
        limit: int = 10,
        window: float = 300.0,
        lockout: float = 300.0,
        on_lockout: LockoutHook | None = None,
    ) -> None:
        self.limit, self.window, self.lockout = limit, window, lockout
        self.on_lockout = on_lockout
        self._failures: dict[str, list[float]] = {}
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                until = self._locked.get(key, 0.0)
                if until > now:
                    raise Throttled(int(until - now) + 1)
                self._locked.pop(key, None)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        started = []
        with self._lock:
            for key in keys:
                recent = [t for t in self._failures.get(key, []) if now - t < self.window]
                recent.append(now)
                if len(recent) >= self.limit:
                    self._locked[key] = now + self.lockout
                    started.append(key)
                    recent = []
                self._failures[key] = recent
            if len(self._failures) > 10000:  # bound the memory an attacker can make us use
                self._failures = {k: v for k, v in self._failures.items() if v}
            if len(self._locked) > 10000:
                self._locked = {k: t for k, t in self._locked.items() if t > now}
        for key in started:
            if self.on_lockout is not None:
                kind, _, value = key.partition(":")
                self.on_lockout(kind, value, int(self.lockout))


def _keys(client: str | None, name: str | None) -> tuple[str, ...]:
    address = f"address:{client or '-'}"
    return (address,) if name is None else (address, f"user:{name}")


class Authenticator:
    """Turns a request's headers, cookies and address into a :class:`Principal` (or None)."""

    def __init__(
        self,
        users: UserStore,
        signer: Signer,
        anonymous: str = "loopback",
        *,
        session_ttl: int = SESSION_TTL,
        token_ttl: int = TOKEN_TTL,
        on_lockout: LockoutHook | None = None,
    ) -> None:
        if anonymous not in ANONYMOUS_MODES:
            raise ConfigError(f"http.anonymous = {anonymous!r}: expected loopback, any or off")
        self.users = users
        self.signer = signer
        self.anonymous = anonymous
        self.session_ttl, self.token_ttl = session_ttl, token_ttl
        self.throttle = Throttle(on_lockout=on_lockout)

    def authenticate(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], client: str | None
    ) -> Principal | None:
        """Credentials win over anonymous access; bad credentials are never anonymous.

        Raises :class:`Throttled` while the client is locked out after repeated wrong
        passwords.
        """
        header = headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            return self._basic(value.strip(), client)
        if scheme.lower() == "bearer":
            return self._token(value.strip(), "bearer")
        if header:
            return None
        session = cookies.get(SESSION_COOKIE)
        if session:
            found = self._token(session, "session")
            if found is not None:
                return found
        if self.anonymous == "any" or (self.anonymous == "loopback" and is_loopback(client)):
            return Principal("anonymous", frozenset(ROLES), "anonymous")
        return None

    def _basic(self, value: str, client: str | None) -> Principal | None:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            self.throttle.check(*_keys(client, None))
            self.throttle.failed(*_keys(client, None))
            return None
        name, colon, password = decoded.partition(":")
        keys = _keys(client, name if colon else None)
        self.throttle.check(*keys)
        roles = self.users.verify(name, password) if colon else None
        if roles is None:
            self.throttle.failed(*keys)
            return None
        return Principal(name, roles, "basic")

    def _token(self, token: str, purpose: str) -> Principal | None:
        found = self.signer.verify(token, purpose)
        if found is None:
            return None
        name, issued = found
        roles = self.users.roles_of(name)
        if roles is None or issued < self.users.not_before(name):
            return None  # the user is gone, or logged out everywhere since
        return Principal(name, roles, purpose)

    def login(self, name: str, password: str, client: str | None = None) -> str | None:
        """A session cookie value for right credentials (raises :class:`Throttled`)."""
        keys = _keys(client, name)
        self.throttle.check(*keys)
        if self.users.verify(name, password) is None:
            self.throttle.failed(*keys)
            return None
        return self.signer.issue(name, "session", self.session_ttl)

    def issue_token(self, principal: Principal) -> str:
        return self.signer.issue(principal.name, "bearer", self.token_ttl)
