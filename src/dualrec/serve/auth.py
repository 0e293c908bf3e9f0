"""Who may call the service: API keys with scopes (``Authorization: Bearer KEY``) and a ``Host`` header check.

* **Keys** come from a file (``--api-key-file``) and/or ``$DUALREC_API_KEYS``, one ``KEY SCOPE[,SCOPE...]`` per line
  (in the variable, lines may also be separated by ``;``); ``#`` starts a comment. Only SHA-256 digests of the keys
  are kept, and a presented key is compared with every one of them by :func:`hmac.compare_digest`, so neither the
  time taken nor an error message says anything about a key. No key is ever logged.
* **Scopes**: ``recommend`` (recommendations and the catalog search), ``events:read``, ``events:write``, ``admin``
  (``/admin/reload``, ``/metrics``). No key: 401 with ``WWW-Authenticate: Bearer``; a key without the route's
  scope: 403 naming the scope.
* **Without keys** every route is open, and :func:`check_bind` refuses any address but loopback.
* **Host check**: a request whose ``Host`` is not in ``allowed_hosts`` gets 400 before anything else runs; the
  default is loopback names only, so a web page on another origin cannot reach the service through DNS rebinding.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dualrec.serve.errors import send_error

SCOPES = ("recommend", "events:read", "events:write", "admin")
KEYS_ENV = "DUALREC_API_KEYS"
MIN_KEY_LENGTH = 16


class AuthConfigError(ValueError):
    """An API key file or variable that cannot be used; the message names the source and line, never the key."""


@dataclass(frozen=True)
class ApiKeys:
    """SHA-256 digests of the configured keys, each with its scopes."""

    entries: tuple[tuple[bytes, frozenset[str]], ...] = ()

    @classmethod
    def parse(cls, text: str, source: str) -> "ApiKeys":
        entries = []
        for number, line in enumerate(text.replace(";", "\n").splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append(_parse_line(line, f"{source}, line {number}"))
        return cls(tuple(entries))

    @classmethod
    def load(cls, path: str | None, env_value: str | None) -> "ApiKeys":
        """Keys from the file at ``path`` and from the variable's value, together."""
        entries: tuple = ()
        if path:
            try:
                entries += cls.parse(Path(path).read_text(encoding="utf-8"), path).entries
            except (OSError, UnicodeDecodeError) as exc:
                raise AuthConfigError(f"{path}: cannot read the API key file ({exc.__class__.__name__})") from None
        if env_value:
            entries += cls.parse(env_value, f"${KEYS_ENV}").entries
        return cls(entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def scopes_for(self, key: str) -> frozenset[str] | None:
        """The key's scopes, or None for an unknown key; every configured key is compared, in constant time."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        found = None
        for known, scopes in self.entries:
            if hmac.compare_digest(digest, known):
                found = scopes
        return found


def _parse_line(line: str, where: str) -> tuple[bytes, frozenset[str]]:
    parts = line.split()
    if len(parts) != 2:
        raise AuthConfigError(f"{where}: expected `KEY SCOPE[,SCOPE...]` (two fields), got {len(parts)}")
    key, scope_list = parts
    if not key.isascii() or not key.isprintable():
        raise AuthConfigError(f"{where}: a key must be printable ASCII (it travels in an HTTP header)")
    if len(key) < MIN_KEY_LENGTH:
        raise AuthConfigError(f"{where}: key shorter than {MIN_KEY_LENGTH} characters; use a random one, e.g. "
                              "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    scopes = frozenset(s for s in scope_list.split(",") if s)
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise AuthConfigError(f"{where}: unknown scope(s) {unknown or ['(none)']}; known: {', '.join(SCOPES)}")
    return hashlib.sha256(key.encode()).digest(), scopes


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: ApiKeys, allowed_hosts: tuple[str, ...]) -> None:
    """Refuse to listen beyond loopback without keys, or with a Host check that every remote client would fail."""
    if is_loopback(host):
        return
    if not keys:
        raise AuthConfigError(f"--host {host} without API keys would let anyone on the network read and write "
                              f"events; give --api-key-file PATH or ${KEYS_ENV} (lines `KEY SCOPE[,SCOPE...]`)")
    if all(is_loopback(h) for h in allowed_hosts):
        raise AuthConfigError(f"--host {host} with --allowed-hosts {','.join(allowed_hosts)}: every client on the "
                              "network would get 400; add the name clients use (e.g. --allowed-hosts "
                              "recs.example.com) or '*'")


def host_name(header: bytes) -> str:
    """The name in a ``Host`` header without its port (``[::1]:8000`` -> ``::1``)."""
    value = header.decode("latin-1").strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostCheckMiddleware:
    """400 for a request whose ``Host`` header names no allowed host (``*`` allows any)."""

    def __init__(self, app, allowed_hosts: tuple[str, ...], on_reject=None):
        self.app, self.on_reject = app, on_reject
        self.allowed = None if "*" in allowed_hosts else {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.allowed is None:
            return await self.app(scope, receive, send)
        host = host_name(dict(scope.get("headers") or ()).get(b"host", b""))
        if host in self.allowed:
            return await self.app(scope, receive, send)
        if self.on_reject:
            self.on_reject("host")
        await send_error(send, 400, f"Host {host!r} is not served here; allowed: {', '.join(sorted(self.allowed))} "
                                    "(--allowed-hosts)")


BEARER = HTTPBearer(auto_error=False, description="An API key from `--api-key-file` or `$DUALREC_API_KEYS`.")
UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def require(scope: str):
    """A route dependency: the request's key must hold ``scope`` (any request passes when no keys are set)."""

    async def check_key(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(BEARER)) -> None:
        keys: ApiKeys = request.app.state.api_keys
        if not keys:
            return
        if credentials is None:
            raise HTTPException(401, "this route needs an API key: send `Authorization: Bearer KEY`",
                                headers=UNAUTHORIZED)
        scopes = keys.scopes_for(credentials.credentials)
        if scopes is None:
            raise HTTPException(401, "unknown API key", headers=UNAUTHORIZED)
        if scope not in scopes:
            raise HTTPException(403, f"this API key lacks the scope {scope!r} that this route needs")

    return Depends(check_key)
