"""Senders of verification codes and messages: ``Smtp`` (aiosmtplib, to any SMTP server),
``HttpSms`` (a generic JSON-over-HTTP SMS provider: ``POST`` ``{"to": ..., "text": ...}`` with
a bearer token), and ``CodeSenders``, which picks the one for the address's kind. A failure to
hand a code over is ``StoreUnavailable``: retryable, and the caller's code is still pending.
A message (``send_mail``, ``send_text``) that is not handed over raises ``Undelivered``,
which says whether trying again may work (an SMTP 4xx reply, a refused connection, an HTTP
5xx or 429) or not (an SMTP 5xx reply, another HTTP 4xx)."""

from __future__ import annotations

from collections.abc import Mapping
from email.message import EmailMessage
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import aiosmtplib

from gateway.errors import StoreUnavailable, Undelivered

Contact = Literal["email", "phone"]

#: Seconds a send may take.
SEND_TIMEOUT = 10.0


def _smtp_failure(exc: Exception) -> Undelivered:
    """An SMTP reply of 5xx is permanent (RFC 5321 4.2.1), 4xx and no reply are not."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        permanent = bool(codes) and all(500 <= c < 600 for c in codes)
        return Undelivered(f"the recipient was refused: {codes}", permanent)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return Undelivered(f"the SMTP server answered {exc.code}", 500 <= exc.code < 600)
    return Undelivered(f"the mail could not be sent: {type(exc).__name__}", False)


def code_text(code: str) -> str:
    return f"Your verification code is {code}. It is valid for 10 minutes."


class Smtp:
    """``smtp://host:port`` (plain, then STARTTLS if the server offers it) or
    ``smtps://host:port`` (TLS from the start); user and password in the URL if needed."""

    def __init__(self, url: str, sender: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("GATEWAY_SMTP_URL must be smtp://host:port or smtps://host:port")
        self._host = parts.hostname
        self._tls = parts.scheme == "smtps"
        self._port = parts.port or (465 if self._tls else 25)
        self._user = parts.username
        self._password = parts.password
        self._sender = sender

    def __repr__(self) -> str:  # the URL may hold a password
        return f"Smtp({self._host}:{self._port})"

    def _message(
        self, to: str, subject: str, headers: Mapping[str, str] | None = None
    ) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self._sender
        msg["To"] = to
        msg["Subject"] = subject
        for name, value in (headers or {}).items():
            msg[name] = value
        return msg

    async def _hand_over(self, msg: EmailMessage) -> None:
        await aiosmtplib.send(
            msg,
            hostname=self._host,
            port=self._port,
            use_tls=self._tls,
            start_tls=None if not self._tls else False,
            username=self._user,
            password=self._password,
            timeout=SEND_TIMEOUT,
        )

    async def send(self, to: str, subject: str, text: str) -> None:
        msg = self._message(to, subject)
        msg.set_content(text)
        try:
            await self._hand_over(msg)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"the mail could not be sent: {type(exc).__name__}") from exc

    async def send_mail(
        self,
        to: str,
        subject: str,
        text: str,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A message with a text part and, if given, an HTML alternative, and ``headers``
        (``Message-ID``, ``List-Unsubscribe``, ...); ``Undelivered`` if it is not handed over."""
        msg = self._message(to, subject, headers)
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
        try:
            await self._hand_over(msg)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise _smtp_failure(exc) from exc


class HttpSms:
    def __init__(self, url: str, token: str = "") -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("GATEWAY_SMS_URL must be an http(s) URL")
        self._url = url
        self._token = token

    def __repr__(self) -> str:  # the token is a secret
        return f"HttpSms({urlsplit(self._url).netloc})"

    async def send(self, to: str, text: str) -> None:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(self._url, json={"to": to, "text": text}, headers=headers) as resp,
            ):
                if resp.status >= 300:
                    raise StoreUnavailable(f"the SMS provider answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StoreUnavailable(f"the SMS could not be sent: {type(exc).__name__}") from exc

    async def send_text(self, to: str, text: str, key: str) -> None:
        """One SMS, with ``key`` as its ``Idempotency-Key`` (a provider that honours it sends
        a repeat once); ``Undelivered`` if it is not handed over: permanent on a 4xx answer
        other than 408 and 429."""
        headers = {"Idempotency-Key": key}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(self._url, json={"to": to, "text": text}, headers=headers) as resp,
            ):
                if resp.status >= 300:
                    permanent = 400 <= resp.status < 500 and resp.status not in (408, 429)
                    raise Undelivered(f"the SMS provider answered {resp.status}", permanent)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Undelivered(f"the SMS could not be sent: {type(exc).__name__}", False) from exc


class CodeSenders:
    """Verification codes: by email through ``smtp``, by SMS through ``sms``; an address of a
    kind with no sender is refused (``unavailable``)."""

    def __init__(self, smtp: Smtp | None, sms: HttpSms | None) -> None:
        self._smtp = smtp
        self._sms = sms

    async def send_code(self, merchant: str, contact: Contact, to: str, code: str) -> None:
        if contact == "email":
            if self._smtp is None:
                raise StoreUnavailable("no mail sender is configured (GATEWAY_SMTP_URL)")
            await self._smtp.send(to, "Your verification code", code_text(code))
        else:
            if self._sms is None:
                raise StoreUnavailable("no SMS sender is configured (GATEWAY_SMS_URL)")
            await self._sms.send(to, code_text(code))
