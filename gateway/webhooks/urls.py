"""Where a webhook may be sent: an ``http`` or ``https`` URL whose host resolves to public
addresses only, unless the node allows private ones (``GATEWAY_WEBHOOKS_ALLOW_PRIVATE=1``, for
local development and tests).

The check is the standard library's ``ipaddress``: an address is refused unless it is
``is_global`` (which rules out loopback, private, link-local, unique-local, shared, reserved,
documentation and unspecified ranges) and not multicast; an IPv4 address mapped into IPv6 is
judged as the IPv4 address it maps. Host names resolve with ``loop.getaddrinfo`` and every
address they resolve to must pass. The same check runs again when a delivery connects
(``GuardedResolver``, the resolver of the delivery client), so a name that resolved to a public
address when the endpoint was saved and to a private one later (DNS rebinding) is refused then.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

MAX_URL_LENGTH = 2048


class UrlRefused(ValueError):
    """A URL a webhook may not be sent to; the message says why."""


def address_allowed(address: str) -> bool:
    """Whether ``address`` (an IP literal) is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def split_url(url: str) -> tuple[str, int]:
    """The host and port of ``url``; ``UrlRefused`` unless it is a plain http(s) URL."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"url: at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise UrlRefused("url: no whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"url: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("url: the scheme must be http or https")
    if not parts.hostname:
        raise UrlRefused("url: a host is required")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("url: no user or password in the URL (it would be stored and logged)")
    if parts.fragment:
        raise UrlRefused("url: no fragment")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: str, allow_private: bool) -> None:
    """Refuse (``UrlRefused``) a URL that is not http(s), or, unless ``allow_private``, whose
    host is or resolves to an address that is not public."""
    host, port = split_url(url)
    if allow_private:
        return
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise UrlRefused(f"url: the host {host!r} does not resolve ({exc})") from None
        addresses = [str(info[4][0]) for info in infos]
    refused = [a for a in addresses if not address_allowed(a)]
    if refused or not addresses:
        raise UrlRefused(
            f"url: the host {host!r} is or resolves to a loopback, private, link-local or "
            f"otherwise non-public address ({', '.join(refused)}); set "
            "GATEWAY_WEBHOOKS_ALLOW_PRIVATE=1 for local development"
        )


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver with the addresses the check refuses dropped: a delivery connects
    only to public addresses, whatever the name resolves to at that moment."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = [r for r in await self._inner.resolve(host, port, family) if _ok(r)]
        if not results:
            raise OSError(f"{host} resolves to no public address (refused)")
        return results

    async def close(self) -> None:
        await self._inner.close()


def _ok(result: Any) -> bool:
    return address_allowed(str(result["host"]))


def literal_refused(url: str) -> bool:
    """Whether ``url``'s host is an IP literal the check refuses (aiohttp connects to a
    literal without asking the resolver)."""
    literal = _literal(urlsplit(url).hostname or "")
    return literal is not None and not address_allowed(literal)
