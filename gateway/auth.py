"""Session credentials: signed tokens (JWT, HS256) scoped to a POS terminal or one member.

POS token claims: ``typ="pos"``, ``mer`` merchant, ``sto`` store, ``ter`` terminal, optional
``chn`` channel ("pos" or "web" for a web shop's server integration). App/web token claims:
``typ="app"``, ``mer`` merchant, ``sub`` member, optional ``chn`` ("app" or "web").
Both carry ``exp``. Tokens are minted by ``python -m gateway token ...`` or by the operator's
own token service, never by a merchant: one secret signs every merchant's tokens and ``mer`` is
taken as signed, so whoever holds the secret can act as any merchant. (Per-merchant signing
keys, selected by ``kid`` and bound to ``mer``, are not built; until then a merchant's back end
asks the operator for tokens.)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal

import jwt

from gateway.errors import AuthError
from protocol.codes import ErrorCode
from protocol.limits import ID_PATTERN

_ID = re.compile(ID_PATTERN)
_ALGORITHMS = ["HS256"]


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Literal["pos", "app"]
    merchant: str
    channel: str
    store: str | None = None
    terminal: str | None = None
    member: str | None = None
    #: When the session must stop acting on this token (its ``exp`` plus the leeway; seconds
    #: since the epoch): the heartbeat closes a session past it with 3501.
    expires: float = float("inf")

    def same_scope(self, other: Principal) -> bool:
        """Whether ``other`` reaches exactly what this does (a refresh may only extend it)."""
        return (self.kind, self.merchant, self.channel, self.store, self.terminal, self.member) == (
            other.kind,
            other.merchant,
            other.channel,
            other.store,
            other.terminal,
            other.member,
        )


def mint(secret: str, claims: dict[str, object], ttl_seconds: float = 3600.0) -> str:
    body = dict(claims)
    body.setdefault("exp", int(time.time() + ttl_seconds))
    return jwt.encode(body, secret, algorithm="HS256")


def mint_pos(
    secret: str, merchant: str, store: str, terminal: str, ttl: float = 3600.0, channel: str = "pos"
) -> str:
    return mint(
        secret, {"typ": "pos", "mer": merchant, "sto": store, "ter": terminal, "chn": channel}, ttl
    )


def mint_app(
    secret: str, merchant: str, member: str, ttl: float = 3600.0, channel: str = "app"
) -> str:
    return mint(secret, {"typ": "app", "mer": merchant, "sub": member, "chn": channel}, ttl)


def _claim(claims: dict[str, object], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not _ID.match(value):
        raise AuthError(f"token claim {name!r} is missing or invalid")
    return value


def verify(secret: str, token: str, leeway: float = 5.0) -> Principal:
    """Check signature, expiry and scope claims; raise ``AuthError`` with the right code."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=_ALGORITHMS, leeway=leeway, options={"require": ["exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired", ErrorCode.TOKEN_EXPIRED) from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"token rejected: {exc.__class__.__name__}") from None
    typ = claims.get("typ")
    merchant = _claim(claims, "mer")
    expires = float(claims["exp"]) + leeway
    if typ == "pos":
        channel = claims.get("chn", "pos")
        if channel not in ("pos", "web"):
            raise AuthError("token claim 'chn' is invalid")
        return Principal(
            "pos",
            merchant,
            str(channel),
            store=_claim(claims, "sto"),
            terminal=_claim(claims, "ter"),
            expires=expires,
        )
    if typ == "app":
        channel = claims.get("chn", "app")
        if channel not in ("app", "web"):
            raise AuthError("token claim 'chn' is invalid")
        return Principal(
            "app", merchant, str(channel), member=_claim(claims, "sub"), expires=expires
        )
    raise AuthError("token claim 'typ' must be 'pos' or 'app'")
