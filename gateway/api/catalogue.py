"""Admin routes of the product catalogue (``gateway.catalogue``), under the admin API's prefix
and behind its authentication (``admin.auth_middleware``; another merchant's token, or an
unknown merchant, answers 404 ``not_found`` as on every admin route):

- ``PUT .../catalogue/imports/{import_id}``: a bulk import, the body JSON lines
  (``application/x-ndjson`` or ``application/jsonl``) or CSV (``text/csv``, a header row),
  read as a stream; answers the final report.
- ``GET .../catalogue/imports/{import_id}``: an import's report, while it runs too.
- ``GET .../catalogue/products`` (keyset pages by SKU, ``category`` filter), ``GET`` and
  ``DELETE .../catalogue/products/{sku}``.

``DOCS`` is how openapi.json describes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import aiohttp
import msgspec
from aiohttp import web

from gateway.api.answers import json_answer as _json
from gateway.api.answers import refusal as _error
from gateway.api.routedoc import INVALID, NOT_FOUND, Route
from gateway.catalogue import (
    MAX_ROW_BYTES,
    REJECTIONS_KEPT,
    BodyError,
    BodyRefused,
    Catalogue,
    Format,
    ImportReport,
    Product,
    ProductRow,
    Reason,
)
from protocol.limits import ID_PATTERN

ROUTES: list[tuple[str, str, str]] = [
    ("PUT", "/catalogue/imports/{import_id}", "put_import"),
    ("GET", "/catalogue/imports/{import_id}", "get_import"),
    ("GET", "/catalogue/products", "list_products"),
    ("GET", "/catalogue/products/{sku}", "get_product"),
    ("DELETE", "/catalogue/products/{sku}", "delete_product"),
]
"""Every route: method, path under the admin prefix, and the ``CatalogueApi`` method."""

#: The media types an import takes, and the format each is read as.
MEDIA: dict[str, Format] = {
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/json-lines": "jsonl",
    "text/csv": "csv",
}
#: The status of each refusal of a whole body.
_BODY_STATUS: dict[BodyError, int] = {
    "format_invalid": 400,
    "body_too_large": 413,
    "body_timeout": 408,
}
#: Read from the body at a time.
CHUNK_BYTES = 65_536
PAGE_DEFAULT = 100
PAGE_MAX = 1000


class _Out(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


class RejectionOut(_Out, frozen=True):
    line: int
    """The row's line in the body (from 1; a CSV header is line 1)."""
    sku: str | None
    """Its SKU, when it could be read."""
    error: Reason
    message: str


class ImportOut(_Out, frozen=True):
    """An import's report. ``rows_read`` = ``created`` + ``updated`` + ``unchanged`` +
    ``rejected``; while ``running`` the counts are those of the batches read so far (its
    products commit together, when it is ``done``); a ``failed`` import changed no product."""

    merchant: str
    import_id: str
    format: Literal["jsonl", "csv"]
    state: Literal["running", "done", "failed"]
    rows_read: int
    created: int
    updated: int
    unchanged: int
    rejected: int
    rejections: list[RejectionOut]
    """The first 1,000 rejected rows (all of them while ``rejected`` is at most 1,000); kept
    when the import ends (empty while it runs)."""
    error: str | None
    """Why a ``failed`` import stopped: ``body_too_large``, ``body_timeout``, ``unavailable``,
    ``interrupted`` (the body was cut off, or the node running it stopped)."""
    message: str | None
    started_at: str
    finished_at: str | None
    replayed: bool
    """This answer is a retry's: the import was done already, with this body; nothing was
    applied again."""


class ProductOut(_Out, frozen=True):
    sku: str
    name: str
    category: str | None
    brand: str | None
    price: int
    replenishable: bool
    cycle_days: int | None
    active: bool
    updated_at: str


class ProductsOut(_Out, frozen=True):
    products: list[ProductOut]
    next: str | None
    """The ``after`` of the next page; null on the last."""


class ProductDeleted(_Out, frozen=True):
    deleted: str


def import_out(r: ImportReport) -> ImportOut:
    return ImportOut(
        merchant=r.merchant,
        import_id=r.import_id,
        format=r.format,
        state=r.state,
        rows_read=r.rows_read,
        created=r.created,
        updated=r.updated,
        unchanged=r.unchanged,
        rejected=r.rejected,
        rejections=[
            RejectionOut(line=j.line, sku=j.sku, error=j.error, message=j.message)
            for j in r.rejections
        ],
        error=r.error,
        message=r.message,
        started_at=r.started_at.isoformat(),
        finished_at=None if r.finished_at is None else r.finished_at.isoformat(),
        replayed=r.replayed,
    )


def product_out(p: Product) -> ProductOut:
    return ProductOut(
        sku=p.sku,
        name=p.name,
        category=p.category,
        brand=p.brand,
        price=p.price,
        replenishable=p.replenishable,
        cycle_days=p.cycle_days,
        active=p.active,
        updated_at=p.updated_at.isoformat(),
    )


_ID = __import__("re").compile(ID_PATTERN)


class CatalogueApi:
    """The routes over ``catalogue``; ``merchant`` is the admin API's check of the path's
    merchant (it raises when the merchant does not exist)."""

    def __init__(
        self, catalogue: Catalogue, merchant: Callable[[web.Request], Awaitable[str]]
    ) -> None:
        self._catalogue = catalogue
        self._merchant = merchant

    def setup(self, app: web.Application, prefix: str) -> None:
        for method, path, name in ROUTES:
            app.router.add_route(method, prefix + path, getattr(self, name))

    async def put_import(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        fmt = MEDIA.get(request.content_type)
        if fmt is None or (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
            return _error(
                415, "format_invalid", f"Content-Type must be one of {list(MEDIA)}, in UTF-8"
            )
        limit = self._catalogue.max_bytes
        if request.content_length is not None and request.content_length > limit:
            return _error(413, "body_too_large", f"the body is over {limit} bytes")

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in request.content.iter_chunked(CHUNK_BYTES):
                yield chunk

        try:
            report = await self._catalogue.run_import(
                merchant, request.match_info["import_id"], fmt, chunks()
            )
        except BodyRefused as exc:
            return _error(_BODY_STATUS[exc.code], exc.code, exc.message)
        except (ConnectionError, aiohttp.ClientPayloadError):
            # the client is gone (or sent less than it declared): the import failed
            # (``interrupted``), and this answer most likely reaches nobody
            return _error(400, "format_invalid", "the body was cut off")
        return _json(import_out(report))

    async def get_import(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        report = await self._catalogue.import_report(merchant, request.match_info["import_id"])
        if report is None:
            return _error(404, "not_found", "no such import")
        return _json(import_out(report))

    async def list_products(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        q = request.query
        after, category = q.get("after"), q.get("category")
        for name, value in (("after", after), ("category", category)):
            if value is not None and not _ID.match(value):
                return _error(400, "invalid_field", f"{name} is a SKU or category id")
        try:
            limit = int(q.get("limit", str(PAGE_DEFAULT)))
        except ValueError:
            limit = 0
        if not 1 <= limit <= PAGE_MAX:
            return _error(400, "invalid_field", f"limit must be within [1, {PAGE_MAX}]")
        products, nxt = await self._catalogue.products(merchant, after, limit, category)
        return _json(ProductsOut(products=[product_out(p) for p in products], next=nxt))

    async def get_product(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        product = await self._catalogue.product(merchant, request.match_info["sku"])
        if product is None:
            return _error(404, "not_found", "no such product")
        return _json(product_out(product))

    async def delete_product(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        sku = request.match_info["sku"]
        if not await self._catalogue.delete(merchant, sku):
            return _error(404, "not_found", "no such product")
        return _json(ProductDeleted(deleted=sku))


_ROW = {"$ref": "#/components/schemas/ProductRow"}
_CSV = {
    "type": "string",
    "description": "CSV (RFC 4180, UTF-8): a header row naming columns of ProductRow (sku, "
    "name and price required, in any order), then one product a row; an empty cell takes the "
    "field's default; true/false or 1/0 for the booleans.",
}
_ID_QUERY = {"type": "string", "pattern": ID_PATTERN}

DOCS: dict[tuple[str, str], Route] = {
    ("PUT", "/catalogue/imports/{import_id}"): Route(
        "Import products in bulk: JSON lines (one ProductRow a line) or CSV with a header "
        "row, read as a stream and upserted (a product whose fields are unchanged is counted "
        "`unchanged`, not written), all in one transaction; answers the final report. A "
        f"rejected row (its line and reason, the first {REJECTIONS_KEPT} kept; a line past "
        f"{MAX_ROW_BYTES} bytes; a SKU an earlier row gave) does not stop the rest. The import "
        "id is the client's: a retry of a done import with the same body answers its report "
        "(`replayed`) and applies nothing; another body is 409 idempotency_conflict; a failed "
        "one runs again. 400 format_invalid: the body is not the format it declares (changes "
        "nothing); 413 body_too_large: over GATEWAY_CATALOGUE_MAX_BYTES (the import fails, no "
        "product changes); 408 body_timeout: no data for 60 s (the import fails, no product "
        "changes); 415 format_invalid: another Content-Type. Imports of one merchant run one "
        "at a time (docs/loyalty.md, Product catalogue)",
        ProductRow,
        ImportOut,
        {
            400: ("format_invalid",),
            408: ("body_timeout",),
            409: ("idempotency_conflict",),
            413: ("body_too_large",),
            415: ("format_invalid",),
        },
        media={
            "application/x-ndjson": {"schema": _ROW},
            "application/jsonl": {"schema": _ROW},
            "application/json-lines": {"schema": _ROW},
            "text/csv": {"schema": _CSV},
        },
    ),
    ("GET", "/catalogue/imports/{import_id}"): Route(
        "An import's report, on any node, while it runs (the counts of the batches read so "
        "far) and after; 404 not_found when there is none",
        None,
        ImportOut,
    ),
    ("GET", "/catalogue/products"): Route(
        "List products in SKU order, keyset pages (`after` = the previous page's `next`), "
        "of one `category` if given",
        None,
        ProductsOut,
        {400: (INVALID,)},
        query=(
            ("after", _ID_QUERY),
            ("category", _ID_QUERY),
            (
                "limit",
                {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT},
            ),
        ),
    ),
    ("GET", "/catalogue/products/{sku}"): Route(
        "Read a product (404 not_found when the catalogue has no such SKU)", None, ProductOut
    ),
    ("DELETE", "/catalogue/products/{sku}"): Route(
        "Remove a product from the catalogue (a sale line of its SKU then earns by its own "
        "category only; to keep it but mark it discontinued, import it with active false); "
        "404 not_found when there is none",
        None,
        ProductDeleted,
        {404: (NOT_FOUND,)},
    ),
}

__all__ = [
    "DOCS",
    "MEDIA",
    "ROUTES",
    "CatalogueApi",
    "ImportOut",
    "ProductDeleted",
    "ProductOut",
    "ProductsOut",
    "RejectionOut",
]
