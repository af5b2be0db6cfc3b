"""Session credentials: signed tokens (JWT, HS256) scoped to a POS terminal or one member.

POS token claims: ``typ="pos"``, ``mer`` merchant, ``sto`` store, ``ter`` terminal, optional
``chn`` channel ("pos" or "web" for a web shop's server integration). App/web token claims:
``typ="app"``, ``mer`` merchant, ``sub`` member, optional ``chn`` ("app" or "web").
Both carry ``exp``.

Two kinds of signer:

* the operator (``python -m gateway token ...`` or the operator's own token service), with
  ``GATEWAY_JWT_SECRET`` and no ``kid`` header: its ``mer`` is taken as signed, so that
  secret reaches every merchant and stays with the operator;
* a merchant's own back end, with one of its keys from ``GATEWAY_MERCHANT_KEYS_FILE``
  (``gateway/merchant_keys.py``), named by the JWT header's ``kid``: the token is refused
  unless its ``mer`` is that key's merchant, so a merchant's key reaches that merchant only.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal

import jwt

from gateway.errors import AuthError
from gateway.merchant_keys import MerchantKeys
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


def mint(
    secret: str, claims: dict[str, object], ttl_seconds: float = 3600.0, kid: str | None = None
) -> str:
    """Sign ``claims``; ``kid`` names a merchant key (None: the operator's secret)."""
    body = dict(claims)
    body.setdefault("exp", int(time.time() + ttl_seconds))
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(body, secret, algorithm="HS256", headers=headers)


def mint_pos(
    secret: str,
    merchant: str,
    store: str,
    terminal: str,
    ttl: float = 3600.0,
    channel: str = "pos",
    kid: str | None = None,
) -> str:
    claims: dict[str, object] = {
        "typ": "pos",
        "mer": merchant,
        "sto": store,
        "ter": terminal,
        "chn": channel,
    }
    return mint(secret, claims, ttl, kid)


def mint_app(
    secret: str,
    merchant: str,
    member: str,
    ttl: float = 3600.0,
    channel: str = "app",
    kid: str | None = None,
) -> str:
    return mint(secret, {"typ": "app", "mer": merchant, "sub": member, "chn": channel}, ttl, kid)


def _claim(claims: dict[str, object], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not _ID.match(value):
        raise AuthError(f"token claim {name!r} is missing or invalid")
    return value


def verify(
    secret: str, token: str, leeway: float = 5.0, keys: MerchantKeys | None = None
) -> Principal:
    """Check signature, expiry and scope claims; raise ``AuthError`` with the right code.
    A token naming a merchant key (``kid``) must be of that key's merchant."""
    bound: str | None = None
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is not None:
            found = keys.signing_key(kid) if keys is not None and isinstance(kid, str) else None
            if found is None:
                raise AuthError("token signed by an unknown key")
            bound, secret = found
        claims = jwt.decode(
            token, secret, algorithms=_ALGORITHMS, leeway=leeway, options={"require": ["exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired", ErrorCode.TOKEN_EXPIRED) from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"token rejected: {exc.__class__.__name__}") from None
    typ = claims.get("typ")
    merchant = _claim(claims, "mer")
    if bound is not None and merchant != bound:
        raise AuthError("token claim 'mer' is not its signing key's merchant")
    try:
        expires = float(claims["exp"]) + leeway
    except OverflowError:  # a signed exp of 10**400: PyJWT compares ints, float() cannot
        raise AuthError("token claim 'exp' is out of range") from None
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
