"""The signed links of a reminder: the cart link (``/reorder/{token}``: member, product,
reminder, expiry) and the one-click unsubscribe (``/reorder/unsubscribe/{token}``: member,
channel, message). Each is a JWT (PyJWT, HS256: a maintained implementation of a signed,
expiring token rather than a hand-written HMAC format) under a key derived from the node's
secret for this use only (HMAC-SHA256(secret, "reorder-links")), so no link can be taken for
a session token or the other way round, and ``typ`` tells a cart link from an unsubscribe
link. An altered, forged or expired token is refused (``LinkRefused``, with the reason the
page shows)."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

#: Seconds an unsubscribe link works (a year: mail is read late; RFC 8058 asks that it work
#: "for a reasonable time").
UNSUBSCRIBE_TTL = 365 * 86400
_ALGORITHMS = ["HS256"]


class LinkRefused(ValueError):
    """The link is not one the gateway signed, was altered, or has expired."""

    def __init__(self, reason: Literal["invalid", "expired"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CartLink:
    merchant: str
    member: str
    sku: str
    reminder: int
    expires: int


@dataclass(frozen=True, slots=True)
class UnsubscribeLink:
    merchant: str
    member: str
    channel: Literal["email", "sms"]
    message: int


class LinkSigner:
    def __init__(self, secret: str, base_url: str) -> None:
        self._key = hmac.new(secret.encode(), b"reorder-links", hashlib.sha256).digest()
        self.base_url = base_url.rstrip("/")

    def __repr__(self) -> str:  # the key is a secret
        return f"LinkSigner({self.base_url})"

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm="HS256")

    def _read(self, token: str, typ: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._key, algorithms=_ALGORITHMS, options={"require": ["exp"]}
            )
        except jwt.ExpiredSignatureError:
            raise LinkRefused("expired") from None
        except jwt.PyJWTError:
            raise LinkRefused("invalid") from None
        if claims.get("typ") != typ:
            raise LinkRefused("invalid")
        return claims

    def cart(self, merchant: str, member: str, sku: str, reminder: int, ttl: float) -> str:
        """The URL of the cart link, valid ``ttl`` seconds."""
        exp = int(time.time() + ttl)
        token = self._sign(
            {"typ": "cart", "mer": merchant, "sub": member, "sku": sku, "rem": reminder, "exp": exp}
        )
        return f"{self.base_url}/reorder/{token}"

    def read_cart(self, token: str) -> CartLink:
        c = self._read(token, "cart")
        try:
            return CartLink(
                str(c["mer"]), str(c["sub"]), str(c["sku"]), int(c["rem"]), int(c["exp"])
            )
        except (KeyError, TypeError, ValueError):
            raise LinkRefused("invalid") from None

    def unsubscribe(self, merchant: str, member: str, channel: str, message: int) -> str:
        """The URL of the one-click unsubscribe link of a message."""
        exp = int(time.time() + UNSUBSCRIBE_TTL)
        token = self._sign(
            {
                "typ": "unsub",
                "mer": merchant,
                "sub": member,
                "chn": channel,
                "msg": message,
                "exp": exp,
            }
        )
        return f"{self.base_url}/reorder/unsubscribe/{token}"

    def read_unsubscribe(self, token: str) -> UnsubscribeLink:
        c = self._read(token, "unsub")
        channel = c.get("chn")
        if channel not in ("email", "sms"):
            raise LinkRefused("invalid")
        try:
            return UnsubscribeLink(str(c["mer"]), str(c["sub"]), channel, int(c["msg"]))
        except (KeyError, TypeError, ValueError):
            raise LinkRefused("invalid") from None


__all__ = ["UNSUBSCRIBE_TTL", "CartLink", "LinkRefused", "LinkSigner", "UnsubscribeLink"]
