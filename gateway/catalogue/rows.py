"""An import's body, read as a stream: its lines (bounded in size, digested as they pass), and
the rows they hold, in JSON lines or CSV with a header row, each validated into a
``ProductRow`` or rejected with its line number and a stable reason; or the body refused as a
whole (``BodyRefused``).

The line splitter is written here rather than taken from aiohttp's ``readline``: that one
raises on a line past its buffer and loses its place in the stream, where an import must
reject the one long line and go on with the next; and this package is below the transports
(it takes chunks of bytes from any source, the bench's and the tests' too).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from protocol.limits import ID_PATTERN, MAX_MINOR_UNITS, Id

Format = Literal["jsonl", "csv"]
#: Why a row was rejected: a field out of its bounds, unknown or missing (``invalid_field``);
#: a line that is not a row at all (not JSON, not UTF-8, a CSV line with the wrong number of
#: fields: ``malformed_row``); a line past ``MAX_ROW_BYTES`` (``row_too_long``); a SKU given
#: by an earlier row of the same import (``duplicate_sku``: the first one counts).
Reason = Literal["invalid_field", "malformed_row", "row_too_long", "duplicate_sku"]

#: The longest line (one row; a CSV row with a quoted line break spans several) read.
MAX_ROW_BYTES = 8192
#: Days a replenishable product may last.
MAX_CYCLE_DAYS = 3650
_BOM = b"\xef\xbb\xbf"

#: Why a whole body is refused: not the format its Content-Type declares, over the size
#: limit, or stalled (no data for ``idle`` seconds). Codes of the admin API's bodies, as ``not_found`` and ``unauthorized``: no websocket
#: command gets them, so they are not in ``protocol.codes`` (whose every code some command
#: may get); openapi.json lists them on the route.
BodyError = Literal["format_invalid", "body_too_large", "body_timeout"]


class BodyRefused(Exception):
    """The body is refused as a whole (nothing of it was applied)."""

    def __init__(self, code: BodyError, message: str) -> None:
        super().__init__(message)
        self.code: BodyError = code
        self.message = message


Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern="^[^\\x00]*$")]


class ProductRow(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One product of an import: a JSON object per line, or a CSV row under a header naming
    these fields (``sku``, ``name`` and ``price`` are required; a field left empty in CSV takes
    its default)."""

    sku: Id
    """The SKU the registers send in a sale line (charset and length of an id)."""
    name: Name
    price: Annotated[int, msgspec.Meta(ge=0, le=MAX_MINOR_UNITS)]
    """Price in minor units of the programme's currency."""
    category: Id | None = None
    """Its category (the earning rules' ``category``), for a sale line that names none."""
    brand: Name | None = None
    replenishable: bool = False
    """Bought again when used up (the reorder loop); takes ``cycle_days``."""
    cycle_days: Annotated[int, msgspec.Meta(ge=1, le=MAX_CYCLE_DAYS)] | None = None
    """Days one unit lasts: required when ``replenishable``, refused otherwise."""
    active: bool = True

    def __post_init__(self) -> None:
        if self.replenishable and self.cycle_days is None:
            raise ValueError("a replenishable product takes `cycle_days`")
        if not self.replenishable and self.cycle_days is not None:
            raise ValueError("`cycle_days` is for a replenishable product only")


FIELDS = tuple(ProductRow.__struct_fields__)
_ROW = msgspec.json.Decoder(ProductRow)
_ANY = msgspec.json.Decoder()
REQUIRED = ("sku", "name", "price")


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    sku: str | None
    error: Reason
    message: str


class Body:
    """The chunks of a request body, as lines; refuses past ``max_bytes`` (``body_too_large``)
    or a chunk ``idle`` seconds late (``body_timeout``), and digests what it read (with the format, so the same bytes as another format differ)."""

    def __init__(
        self, chunks: AsyncIterator[bytes], max_bytes: int, fmt: Format, idle: float = 60.0
    ) -> None:
        self._chunks = chunks
        self.max_bytes = max_bytes
        #: Seconds a chunk may take to come (a client that stalls would hold its import's
        #: transaction, and its merchant's lock, for as long).
        self.idle = idle
        self.size = 0
        self._hash = hashlib.blake2b(fmt.encode() + b"\n", digest_size=16)

    def digest(self) -> bytes:
        return self._hash.digest()

    async def _next_chunk(self) -> bytes:
        try:
            async with asyncio.timeout(self.idle):
                chunk = await anext(self._chunks, b"")
        except TimeoutError:
            raise BodyRefused("body_timeout", f"no data for {self.idle:g} s") from None
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise BodyRefused(
                "body_too_large",
                f"the body is over {self.max_bytes} bytes (GATEWAY_CATALOGUE_MAX_BYTES)",
            )
        self._hash.update(chunk)
        return chunk

    async def drain(self) -> None:
        """Read (and digest) the rest."""
        while await self._next_chunk():
            pass

    async def lines(self) -> AsyncIterator[tuple[int, bytes | None]]:
        """Each line (numbered from 1, without its line ending), or None for a line longer
        than ``MAX_ROW_BYTES`` (skipped to its end)."""
        buf = b""
        number = 0
        too_long = False
        while chunk := await self._next_chunk():
            buf += chunk
            start = 0
            while (end := buf.find(b"\n", start)) >= 0:
                number += 1
                if too_long or end - start > MAX_ROW_BYTES:
                    yield number, None
                else:
                    yield number, buf[start:end].removesuffix(b"\r")
                too_long = False
                start = end + 1
            buf = buf[start:]
            if len(buf) > MAX_ROW_BYTES:
                too_long, buf = True, b""
        if too_long:
            yield number + 1, None
        elif buf.strip():
            yield number + 1, buf.removesuffix(b"\r")


#: A row read: its first line number, and the row or why it was rejected.
Parsed = tuple[int, ProductRow | Rejection]


def _sku_of(data: Any) -> str | None:
    sku = data.get("sku") if isinstance(data, dict) else None
    return sku[:64] if isinstance(sku, str) and sku else None


def _invalid(number: int, data: Any, exc: Exception) -> Rejection:
    return Rejection(number, _sku_of(data), "invalid_field", str(exc))


def _format_invalid(message: str) -> BodyRefused:
    return BodyRefused("format_invalid", message)


async def jsonl_rows(body: Body) -> AsyncIterator[Parsed]:
    """The rows of JSON lines (blank lines skipped). The first row must be a JSON object:
    else the body is not JSON lines at all (``format_invalid``, raised before any row)."""
    first = True
    async for number, line in body.lines():
        if number == 1 and line is not None:
            line = line.removeprefix(_BOM)
        if line is None:
            if first:
                raise _format_invalid(f"line 1 is over {MAX_ROW_BYTES} bytes: not JSON lines")
            yield number, Rejection(number, None, "row_too_long", f"over {MAX_ROW_BYTES} bytes")
            continue
        if not line.strip():
            continue
        try:
            yield number, _ROW.decode(line)
        except msgspec.ValidationError as exc:
            try:
                data = _ANY.decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError):
                data = None
            if first and not isinstance(data, dict):
                raise _format_invalid(f"line {number} is not a JSON object") from None
            yield number, _invalid(number, data, exc)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            if first:
                raise _format_invalid(f"line {number} is not JSON: {exc}") from None
            reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else f"not JSON: {exc}"
            yield number, Rejection(number, None, "malformed_row", reason)
        first = False
    if first:
        raise _format_invalid("the body holds no rows")


def _header(record: str) -> list[str]:
    try:
        names = [n.strip() for n in next(csv.reader([record], strict=True))]
    except (csv.Error, StopIteration):
        raise _format_invalid("the first line is not a CSV header") from None
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        raise _format_invalid(f"unknown columns {unknown}; the columns are {list(FIELDS)}")
    if len(set(names)) != len(names):
        raise _format_invalid("a column is named twice")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise _format_invalid(f"the header lacks the columns {missing}")
    return names


async def _records(body: Body) -> AsyncIterator[tuple[int, str | None, str]]:
    """The CSV records: first line number, the text (None when past ``MAX_ROW_BYTES`` or not
    UTF-8), and why not. A quoted field may hold a line break: a line that leaves a quote
    open (an odd number of ``"``, RFC 4180 doubling quotes within one) takes the next."""
    pending: list[bytes] = []
    start = 0
    size = 0
    async for number, line in body.lines():
        if number == 1 and line is not None:
            line = line.removeprefix(_BOM)
        if line is None or size + len(line or b"") > MAX_ROW_BYTES:
            yield (start if pending else number), None, f"over {MAX_ROW_BYTES} bytes"
            pending, size = [], 0
            continue
        if not pending:
            if not line.strip():
                continue
            start = number
        pending.append(line)
        size += len(line) + 1
        joined = b"\n".join(pending)
        if joined.count(b'"') % 2:
            continue
        pending, size = [], 0
        try:
            yield start, joined.decode("utf-8"), ""
        except UnicodeDecodeError:
            yield start, None, "not UTF-8"
    if pending:
        yield start, None, "a quoted field is not closed"


async def csv_rows(body: Body) -> AsyncIterator[Parsed]:
    """The rows of CSV under a header row naming ``ProductRow``'s fields (its columns in any
    order; an empty cell takes the field's default). A first line that is no such header: the
    body is refused (``format_invalid``, before any row)."""
    names: list[str] | None = None
    async for number, record, why in _records(body):
        if names is None:
            if record is None:
                raise _format_invalid(f"the first line is not a CSV header ({why})")
            names = _header(record)
            continue
        if record is None:
            reason: Reason = "row_too_long" if why.startswith("over") else "malformed_row"
            yield number, Rejection(number, None, reason, why)
            continue
        try:
            cells = next(csv.reader([record], strict=True))
        except csv.Error as exc:
            yield number, Rejection(number, None, "malformed_row", f"not CSV: {exc}")
            continue
        data = {n: v for n, v in zip(names, cells, strict=False) if v != ""}
        if len(cells) != len(names):
            got = f"{len(cells)} fields, the header has {len(names)}"
            yield number, Rejection(number, _sku_of(data), "malformed_row", got)
            continue
        try:
            yield number, msgspec.convert(data, ProductRow, strict=False)
        except msgspec.ValidationError as exc:
            yield number, _invalid(number, data, exc)
    if names is None:
        raise _format_invalid("the body holds no CSV header")


def rows(fmt: Format, body: Body) -> AsyncIterator[Parsed]:
    return jsonl_rows(body) if fmt == "jsonl" else csv_rows(body)


__all__ = [
    "FIELDS",
    "ID_PATTERN",
    "MAX_CYCLE_DAYS",
    "MAX_ROW_BYTES",
    "Body",
    "BodyError",
    "BodyRefused",
    "Format",
    "Parsed",
    "ProductRow",
    "Reason",
    "Rejection",
    "rows",
]
