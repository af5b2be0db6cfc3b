"""Tokens: where the client gets them, and when one expires."""

from __future__ import annotations

import base64
import binascii
import inspect
from collections.abc import Awaitable, Callable

import msgspec

TokenProvider = Callable[[], str | Awaitable[str]]
"""Returns a token (sync or async). The client calls it before every connection (hello) and
before every refresh, so it may mint a new token or fetch one from the back end each time."""


async def get_token(provider: TokenProvider) -> str:
    token = provider()
    if inspect.isawaitable(token):
        token = await token
    if not isinstance(token, str) or not token:
        raise TypeError(f"the token provider returned {type(token).__name__}, not a token")
    return token


class _Claims(msgspec.Struct):
    exp: float | None = None


_claims = msgspec.json.Decoder(_Claims)


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (seconds since the Unix epoch), read without checking the
    signature (the server checks it; the client only needs to know when to refresh), or
    ``None`` for a token that is not a JWT or has no ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    body = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        return _claims.decode(base64.urlsafe_b64decode(body)).exp
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        return None
