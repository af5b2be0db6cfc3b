"""Per-merchant credentials: signing keys for session tokens and admin API tokens.

The operator's own secrets (``GATEWAY_JWT_SECRET``, ``GATEWAY_ADMIN_TOKEN``) reach every
merchant. A merchant's back end that mints its own terminals' and members' tokens, or calls
the admin API, gets credentials that reach that merchant only, from a JSON file named by
``GATEWAY_MERCHANT_KEYS_FILE`` (in Kubernetes, a mounted Secret)::

    {
      "acme": {
        "signing_keys": {"acme-2026-11": "<at least 32 bytes>"},
        "admin_tokens": ["<at least 32 characters>"]
      }
    }

* A session token signed with a merchant key names it in its JWT header (``kid``); it is
  accepted only if its ``mer`` claim is that key's merchant (``auth.verify``). Two keys per
  merchant let a merchant rotate: sign with the new one, drop the old one once its tokens
  have expired.
* A merchant admin token reaches ``/admin/v1/merchants/<its merchant>/...`` and broadcasts to
  its merchant; any other merchant is answered as an unknown one.

Key ids and admin tokens are unique across merchants. The file is read when the node starts;
a bad file stops the start with the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from protocol.limits import ID_PATTERN

_ID = re.compile(ID_PATTERN)
#: Shortest signing key accepted (bytes of UTF-8): HS256 wants a key as long as its hash.
MIN_SECRET_BYTES = 32
#: Shortest merchant admin token accepted.
MIN_ADMIN_TOKEN = 32


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class MerchantKeys:
    #: key id -> (merchant, secret)
    signing: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    #: SHA-256 of an admin token -> merchant
    admin: dict[bytes, str] = field(default_factory=dict, repr=False)

    def signing_key(self, kid: str) -> tuple[str, str] | None:
        return self.signing.get(kid)

    def admin_merchant(self, token: str) -> str | None:
        """The merchant a merchant admin token reaches, or None. Looked up by the token's
        SHA-256: a lookup's timing tells nothing about the token itself."""
        return self.admin.get(_digest(token))

    @classmethod
    def parse(
        cls, raw: object, operator_admin_token: str = "", operator_secret: str = ""
    ) -> MerchantKeys:
        """Build from the file's JSON; ``ValueError`` says what is wrong."""
        if not isinstance(raw, dict):
            raise ValueError("merchant keys: the file must hold a JSON object of merchants")
        signing: dict[str, tuple[str, str]] = {}
        admin: dict[bytes, str] = {}
        for merchant, entry in raw.items():
            if not isinstance(merchant, str) or not _ID.match(merchant):
                raise ValueError(f"merchant keys: {merchant!r} is not a valid merchant id")
            if not isinstance(entry, dict) or set(entry) - {"signing_keys", "admin_tokens"}:
                raise ValueError(
                    f"merchant keys: {merchant}: expected only 'signing_keys' and 'admin_tokens'"
                )
            keys = entry.get("signing_keys", {})
            if not isinstance(keys, dict):
                raise ValueError(f"merchant keys: {merchant}: 'signing_keys' must be an object")
            for n, (kid, secret) in enumerate(keys.items(), 1):
                # A key is named by its place in the file, never by its id: an id swapped with
                # its secret would print the secret.
                key = f"signing key #{n}"
                if not _ID.match(kid):
                    raise ValueError(f"merchant keys: {merchant}: {key}: its id is not a valid id")
                if kid in signing:
                    raise ValueError(f"merchant keys: {merchant}: {key}: its id is used twice")
                if not isinstance(secret, str) or len(secret.encode()) < MIN_SECRET_BYTES:
                    raise ValueError(
                        f"merchant keys: {merchant}: {key} must be a string of at least "
                        f"{MIN_SECRET_BYTES} bytes"
                    )
                if operator_secret and secret == operator_secret:
                    # it would also sign kid-less tokens, which reach every merchant
                    raise ValueError(f"merchant keys: {merchant}: {key} equals GATEWAY_JWT_SECRET")
                if any(secret == other for _, other in signing.values()):
                    # any holder of the secret could sign with the other key's id and merchant
                    raise ValueError(
                        f"merchant keys: {merchant}: {key} reuses another key's secret"
                    )
                signing[kid] = (merchant, secret)
            tokens = entry.get("admin_tokens", [])
            if not isinstance(tokens, list):
                raise ValueError(f"merchant keys: {merchant}: 'admin_tokens' must be a list")
            for token in tokens:
                if not isinstance(token, str) or len(token) < MIN_ADMIN_TOKEN:
                    raise ValueError(
                        f"merchant keys: {merchant}: admin tokens must be strings of at least "
                        f"{MIN_ADMIN_TOKEN} characters"
                    )
                if token == operator_admin_token:
                    raise ValueError(
                        f"merchant keys: {merchant}: an admin token equals GATEWAY_ADMIN_TOKEN"
                    )
                digest = _digest(token)
                if digest in admin:
                    raise ValueError(f"merchant keys: {merchant}: an admin token is used twice")
                admin[digest] = merchant
        return cls(signing, admin)

    @classmethod
    def load(
        cls, path: str, operator_admin_token: str = "", operator_secret: str = ""
    ) -> MerchantKeys:
        if not path:
            return cls()
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"GATEWAY_MERCHANT_KEYS_FILE {path!r}: {exc}") from None
        return cls.parse(raw, operator_admin_token, operator_secret)


#: What the operator's admin token reaches (no merchant id matches ``ID_PATTERN`` with it).
ANY_MERCHANT = "*"


def admin_reach(authorization: str, operator_token: str, keys: MerchantKeys) -> str | None:
    """Who an ``Authorization`` header speaks for: ``ANY_MERCHANT`` for the operator's admin
    token, a merchant id for one of that merchant's admin tokens, None for anything else."""
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    given = given.strip()
    if operator_token and hmac.compare_digest(given.encode(), operator_token.encode()):
        return ANY_MERCHANT
    return keys.admin_merchant(given) if given else None
