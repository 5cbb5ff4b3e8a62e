"""Bearer API keys with scopes: `chat` for chat, models and search; `admin` for changes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from fastapi import Request

from serving.errors import APIError
from serving.settings import ApiKey, Scope


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name (empty when the API is open) and its scopes."""

    name: str
    scopes: frozenset[str]


OPEN = Principal(name="", scopes=frozenset({"chat", "admin"}))


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(keys: list[ApiKey], request: Request, scope: Scope) -> Principal:
    """The principal of `request`, if it may use `scope`; 401 or 403 otherwise."""
    if not keys:
        return OPEN
    token = _bearer_token(request)
    if token is None:
        raise APIError(
            401,
            "missing API key: send 'Authorization: Bearer <key>'",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    match = None
    for key in keys:  # compare with every key, in constant time each
        if secrets.compare_digest(key.key.get_secret_value().encode(), token.encode()):
            match = key
    if match is None:
        raise APIError(
            401, "invalid API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
        )
    scopes = frozenset(match.scopes) | ({"chat"} if "admin" in match.scopes else frozenset())
    if scope not in scopes:
        raise APIError(403, f"this API key lacks the {scope!r} scope", code="insufficient_scope")
    return Principal(name=match.name or f"key#{keys.index(match) + 1}", scopes=scopes)
