"""The signature of a delivery, in Stripe's style: the header

    Loyalty-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

with one ``v1`` per secret that signs (two during a rotation's overlap: the new secret's first).
The standard library's ``hmac`` does it: a webhook library would bring its own header format
(Standard Webhooks' ``webhook-signature: v1,<base64>``), and the receivers' snippet in
docs/webhooks.md needs nothing but their own standard library either."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

HEADER = "Loyalty-Signature"
EVENT_ID_HEADER = "Loyalty-Event-Id"
EVENT_TYPE_HEADER = "Loyalty-Event-Type"
#: Every secret starts with it (so a leaked one is recognisable in a scan).
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secrets_: Sequence[str], timestamp: int, body: bytes) -> str:
    """The header's value for ``body`` sent at ``timestamp`` with each of ``secrets_``."""
    signed = str(timestamp).encode() + b"." + body
    parts = [f"t={timestamp}"]
    parts += ["v1=" + hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets_]
    return ",".join(parts)
