"""One identity across channels: normalisation of phone numbers, emails and card numbers, and
signed short-lived member passes (the QR code the app shows at the register).

Pure functions; the directory (``directory.py``) stores and finds identities.
"""

from __future__ import annotations

import re
import time
import unicodedata

import idna
import jwt
import phonenumbers

from gateway.errors import Refused
from protocol.codes import ErrorCode
from protocol.limits import ID_PATTERN

#: Seconds a member pass (QR) stays valid.
PASS_TTL_SECONDS = 300
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
_ID = re.compile(ID_PATTERN)


def invalid(message: str) -> Refused:
    return Refused(message, ErrorCode.IDENTITY_INVALID)


def normalise_phone(raw: str, region: str) -> str:
    """E.164 (``+14155550123``); numbers without a country code are read in ``region``."""
    try:
        number = phonenumbers.parse(raw.strip(), region or None)
    except phonenumbers.NumberParseException:
        raise invalid("the phone number cannot be read") from None
    if not phonenumbers.is_valid_number(number):
        raise invalid("the phone number is not a valid number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _canonical(raw: str) -> str:
    """Invisible format characters (zero-width space, joiners, soft hyphen, BOM) removed,
    then Unicode compatibility composition (NFKC): one written form per string, so ``é`` as
    one code point or as ``e`` and a combining accent, or full-width letters, are the same."""
    visible = "".join(ch for ch in raw if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", visible).strip()


def normalise_email(raw: str) -> str:
    """Canonical Unicode (``_canonical``), trimmed and lower-cased, the domain's ASCII
    (``xn--``) labels in their Unicode spelling; must look like ``local@domain.tld``."""
    email = _canonical(raw).lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise invalid("the email address is not valid")
    local, _, domain = email.rpartition("@")
    return f"{local}@{'.'.join(_unicode_label(label) for label in domain.split('.'))}"


def _unicode_label(label: str) -> str:
    """A domain label as Unicode: mail clients and web forms send an internationalised
    domain either way (``bücher.de`` or ``xn--bcher-kva.de``), and both are one mailbox. A
    label that is not valid IDNA is kept as written."""
    if not label.startswith("xn--"):
        return label
    try:
        return str(idna.decode(label))
    except idna.IDNAError:
        return label


def normalise_card(raw: str) -> str:
    card = _canonical(raw).upper()
    if not _ID.match(card):
        raise invalid("the card number is not valid")
    return card


def mint_pass(
    secret: str, merchant: str, member: str, ttl: float = PASS_TTL_SECONDS, now: float | None = None
) -> tuple[str, int]:
    """A signed pass for ``member``; returns the token and its expiry (ms since the epoch)."""
    exp = int((time.time() if now is None else now) + ttl)
    token = jwt.encode({"typ": "pass", "mer": merchant, "sub": member, "exp": exp}, secret)
    return token, exp * 1000


def verify_pass(secret: str, merchant: str, token: str) -> str:
    """The member a pass names, if it is genuine, unexpired and of this merchant."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise invalid("the pass has expired; show a fresh one") from None
    except jwt.PyJWTError:
        raise invalid("the pass is not genuine") from None
    member = claims.get("sub")
    if claims.get("typ") != "pass" or not isinstance(member, str):
        raise invalid("the pass is not genuine")
    if claims.get("mer") != merchant:
        # Another merchant's member: indistinguishable from an unknown member.
        raise Refused("no such member", ErrorCode.MEMBER_NOT_FOUND)
    return member
