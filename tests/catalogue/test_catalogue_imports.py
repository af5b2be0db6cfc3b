"""The product catalogue's bulk imports through the admin API: JSON lines and CSV, idempotent
re-imports and retries, the rejected-row report, bodies refused (not the format, too large)
changing nothing, progress read from another node while an import runs, and an import cut
off midway leaving the catalogue as it was."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp

from tests.catalogue.support import (
    CSV,
    JSONL,
    base,
    generated,
    get,
    jsonl,
    products_of,
    put_import,
    row,
)
from tests.conftest import REDIS_URL
from tests.loyalty_support import setup_db
from tests.support import running_node, settings_for

# ----------------------------------------------------------------------------- the formats


async def test_a_jsonl_import_creates_the_products_and_reports_them(http, rn, merchant, pg_dsn):
    body = jsonl(
        row("tea-1", category="tea", brand="Leafy", price=450),
        row("filter-9", price=1299, replenishable=True, cycle_days=30),
        row("mug-2", active=False),
    )
    status, report = await put_import(http, rn.url, merchant, "first", body)
    assert status == 200, report
    assert report["state"] == "done" and report["format"] == "jsonl"
    assert (report["rows_read"], report["created"], report["updated"]) == (3, 3, 0)
    assert (report["unchanged"], report["rejected"], report["rejections"]) == (0, 0, [])
    assert report["replayed"] is False and report["finished_at"] is not None
    status, tea = await get(http, f"{base(rn.url, merchant)}/products/tea-1")
    assert status == 200
    assert {k: tea[k] for k in ("name", "category", "brand", "price", "active")} == {
        "name": "Product tea-1",
        "category": "tea",
        "brand": "Leafy",
        "price": 450,
        "active": True,
    }
    _, filt = await get(http, f"{base(rn.url, merchant)}/products/filter-9")
    assert (filt["replenishable"], filt["cycle_days"], filt["category"]) == (True, 30, None)
    _, mug = await get(http, f"{base(rn.url, merchant)}/products/mug-2")
    assert mug["active"] is False
    assert (await get(http, f"{base(rn.url, merchant)}/products/nope"))[0] == 404
    status, again = await get(http, f"{base(rn.url, merchant)}/imports/first")
    assert status == 200 and again == {**report, "replayed": False}
    assert (await get(http, f"{base(rn.url, merchant)}/imports/never"))[0] == 404


async def test_a_csv_import_with_quotes_a_bom_and_crlf(http, rn, merchant, pg_dsn):
    body = (
        "\ufeffsku,price,name,category,replenishable,cycle_days,brand\r\n"
        'soap-1,350,"Soap, lavender",care,true,45,\r\n'
        "\r\n"
        'soap-2,400,"Soap ""extra""\nwith a line break",care,0,,"Brand X"\r\n'
        "brush-3,99,Brush,,FALSE,,\r\n"
    ).encode()
    status, report = await put_import(http, rn.url, merchant, "csv-1", body, CSV)
    assert status == 200, report
    assert (report["format"], report["rows_read"], report["created"], report["rejected"]) == (
        "csv",
        3,
        3,
        0,
    ), report
    got = {r["sku"]: r for r in await products_of(pg_dsn, merchant)}
    assert got["soap-1"]["name"] == "Soap, lavender" and got["soap-1"]["cycle_days"] == 45
    assert got["soap-1"]["brand"] is None and got["soap-1"]["replenishable"] is True
    assert got["soap-2"]["name"] == 'Soap "extra"\nwith a line break'
    assert got["soap-2"]["brand"] == "Brand X" and got["soap-2"]["replenishable"] is False
    assert got["brush-3"]["category"] is None and got["brush-3"]["price"] == 99


async def test_the_listing_pages_by_sku_and_filters_by_category(http, rn, merchant):
    assert (await put_import(http, rn.url, merchant, "gen", generated(25)))[0] == 200
    url = f"{base(rn.url, merchant)}/products"
    seen, after = [], None
    while True:
        q = f"?limit=10&after={after}" if after else "?limit=10"
        status, page = await get(http, url + q)
        assert status == 200 and len(page["products"]) <= 10
        seen += [p["sku"] for p in page["products"]]
        if (after := page["next"]) is None:
            break
    assert seen == [f"sku-{i:06d}" for i in range(25)]
    _, cat = await get(http, f"{url}?category=cat-3")
    assert [p["sku"] for p in cat["products"]] == ["sku-000003", "sku-000010", "sku-000017",
                                                   "sku-000024"]  # fmt: skip
    assert cat["next"] is None
    for bad in ("?limit=0", "?limit=1001", "?limit=x", "?after=a%20b", "?category=%00"):
        status, reply = await get(http, url + bad)
        assert (status, reply["error"]) == (400, "invalid_field"), bad


# ----------------------------------------------------------------------------- idempotence


async def test_reimports_count_unchanged_rows_and_retries_apply_nothing(http, rn, merchant, pg_dsn):
    body = generated(12)
    status, first = await put_import(http, rn.url, merchant, "a", body)
    assert (status, first["created"]) == (200, 12)
    before = await products_of(pg_dsn, merchant)
    # the same id and body: the recorded report, nothing applied again
    status, retry = await put_import(http, rn.url, merchant, "a", body)
    assert status == 200 and retry == {**first, "replayed": True}
    # another id, the same rows: all unchanged, nothing written (updated_at stays)
    status, second = await put_import(http, rn.url, merchant, "b", body)
    assert (second["rows_read"], second["unchanged"], second["created"], second["updated"]) == (
        12,
        12,
        0,
        0,
    )
    assert await products_of(pg_dsn, merchant) == before
    # one price changed: one update
    changed = body.replace(b'"sku-000004", "name": "Product sku-000004", "price": 1000',
                           b'"sku-000004", "name": "Product sku-000004", "price": 1111')  # fmt: skip
    status, third = await put_import(http, rn.url, merchant, "c", changed)
    assert (third["updated"], third["unchanged"]) == (1, 11), third
    # a finished import's id with another body: refused, nothing changed
    status, reply = await put_import(http, rn.url, merchant, "a", changed)
    assert (status, reply["error"]) == (409, "idempotency_conflict")
    status, reply = await put_import(http, rn.url, merchant, "a", b"sku,name,price\n", CSV)
    assert (status, reply["error"]) == (409, "idempotency_conflict")
    after = {r["sku"]: r["price"] for r in await products_of(pg_dsn, merchant)}
    assert len(after) == 12 and after["sku-000004"] == 1111
    assert sum(after.values()) == 11 * 1000 + 1111


# ----------------------------------------------------------------------------- rejections


async def test_rejected_rows_are_reported_with_their_lines_and_the_rest_goes_on(
    http, rn, merchant, pg_dsn
):
    lines = [
        b'{"sku": "ok-1", "name": "One", "price": 100}',
        b'{"sku": "p-neg", "name": "Bad price", "price": -1}',
        b'{"sku": "p-str", "name": "Bad price", "price": "12.50"}',
        b'{"name": "No sku", "price": 100}',
        b'{"sku": "rep", "name": "No cycle", "price": 100, "replenishable": true}',
        b'{"sku": "cyc", "name": "Cycle only", "price": 100, "cycle_days": 10}',
        b'{"sku": "extra", "name": "Unknown field", "price": 100, "colour": "red"}',
        b'{"sku": "utf", "name": "Caf\xe9", "price": 100}',
        b'{"sku": "long-name", "name": "' + b"x" * 201 + b'", "price": 100}',
        b'{"sku": "bad sku!", "name": "Bad sku", "price": 100}',
        b"not json at all",
        b'{"sku": "huge", "name": "' + b"y" * 9000 + b'", "price": 100}',
        b'{"sku": "ok-1", "name": "Twice", "price": 200}',
        b'{"sku": "ok-2", "name": "Two", "price": 200}',
    ]
    status, report = await put_import(http, rn.url, merchant, "rej", b"\n".join(lines))
    assert status == 200, report
    assert (report["rows_read"], report["created"], report["rejected"]) == (14, 2, 12)
    got = {(r["line"], r["sku"], r["error"]) for r in report["rejections"]}
    assert got == {
        (2, "p-neg", "invalid_field"),
        (3, "p-str", "invalid_field"),
        (4, None, "invalid_field"),
        (5, "rep", "invalid_field"),
        (6, "cyc", "invalid_field"),
        (7, "extra", "invalid_field"),
        (8, None, "malformed_row"),
        (9, "long-name", "invalid_field"),
        (10, "bad sku!", "invalid_field"),
        (11, None, "malformed_row"),
        (12, None, "row_too_long"),
        (13, "ok-1", "duplicate_sku"),
    }
    messages = {r["line"]: r["message"] for r in report["rejections"]}
    assert "price" in messages[2] and "cycle_days" in messages[5] and "colour" in messages[7]
    assert "UTF-8" in messages[8] and "line 1" in messages[13]
    prices = {r["sku"]: r["price"] for r in await products_of(pg_dsn, merchant)}
    assert prices == {"ok-1": 100, "ok-2": 200}  # the first row of a SKU counts


async def test_csv_rows_rejected_and_a_quote_left_open(http, rn, merchant, pg_dsn):
    body = (
        b"sku,name,price,replenishable\n"
        b"c-1,One,100,\n"
        b"c-2,Two,abc,\n"
        b"c-3,Three,100,maybe\n"
        b"c-4,Four\n"
        b"c-5,Caf\xe9,100,\n"
        b'c-6,"Six never closed,100,\n'
        b"c-7,Seven,100,\n"
    )
    status, report = await put_import(http, rn.url, merchant, "csvrej", body, CSV)
    assert status == 200, report
    got = {(r["line"], r["sku"], r["error"]) for r in report["rejections"]}
    assert got == {
        (3, "c-2", "invalid_field"),
        (4, "c-3", "invalid_field"),
        (5, "c-4", "malformed_row"),
        (6, None, "malformed_row"),
        (7, None, "malformed_row"),  # the open quote swallows the rest of the body
    }
    assert [r["sku"] for r in await products_of(pg_dsn, merchant)] == ["c-1"]


# ----------------------------------------------------------------------------- refused


async def test_a_body_not_in_its_format_is_refused_and_changes_nothing(http, rn, merchant, pg_dsn):
    assert (await put_import(http, rn.url, merchant, "seed", jsonl(row("keep"))))[0] == 200
    before = await products_of(pg_dsn, merchant)
    refused = [
        (b"sku,name,price\nx,X,1\n", JSONL, 400, "format_invalid"),  # CSV sent as JSON lines
        (b"[1, 2]\n" + jsonl(row("x")), JSONL, 400, "format_invalid"),
        (b"", JSONL, 400, "format_invalid"),
        (b"\n\n", JSONL, 400, "format_invalid"),
        (b"", CSV, 400, "format_invalid"),
        (b"sku,name,price,colour\nx,X,1,red\n", CSV, 400, "format_invalid"),
        (b"sku,name\nx,X\n", CSV, 400, "format_invalid"),
        (b"sku,name,price,name\nx,X,1,Y\n", CSV, 400, "format_invalid"),
        (b'"sku,name,price\nx,X,1\n', CSV, 400, "format_invalid"),
        (jsonl(row("x")), "application/json", 415, "format_invalid"),
        (jsonl(row("x")), "text/plain", 415, "format_invalid"),
        (jsonl(row("x")), "text/csv; charset=latin-1", 415, "format_invalid"),
    ]
    for i, (body, ctype, status, code) in enumerate(refused):
        got, reply = await put_import(http, rn.url, merchant, f"bad-{i}", body, ctype)
        assert (got, reply["error"]) == (status, code), (body[:30], ctype, reply)
        assert (await get(http, f"{base(rn.url, merchant)}/imports/bad-{i}"))[0] == 404
    assert await products_of(pg_dsn, merchant) == before


async def test_a_body_over_the_limit_is_refused_and_changes_no_product(
    http, pg_dsn, redis_prefix, merchant
):
    s = settings_for(pg_dsn, REDIS_URL, "cat-small")
    s = replace(s, server=replace(s.server, catalogue_max_bytes=460_000))
    body = generated(6000)  # ~ 500 kB: past the limit after the first batch (5,000 rows)
    assert len(body) > 460_000 > len(generated(5000))
    async with running_node(s, redis_prefix) as node:
        # declared in Content-Length: refused before a byte is read
        status, reply = await put_import(http, node.url, merchant, "big", body)
        assert (status, reply["error"]) == (413, "body_too_large")
        assert (await get(http, f"{base(node.url, merchant)}/imports/big"))[0] == 404

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: found as it streams
            for i in range(0, len(body), 16_384):
                yield body[i : i + 16_384]

        status, reply = await put_import(http, node.url, merchant, "big", chunked())
        assert (status, reply["error"]) == (413, "body_too_large"), reply
        status, report = await get(http, f"{base(node.url, merchant)}/imports/big")
        assert (report["state"], report["error"]) == ("failed", "body_too_large")
        assert report["rows_read"] >= 5000 and report["created"] == 0
        assert await products_of(pg_dsn, merchant) == []  # the first batch was rolled back
        # under the limit, the same id runs again from the start
        status, report = await put_import(http, node.url, merchant, "big", generated(100))
        assert (status, report["state"], report["created"]) == (200, "done", 100)


# ----------------------------------------------------------------------------- while it runs


async def test_progress_is_read_on_another_node_while_the_import_runs(
    http, rn, merchant, pg_dsn, redis_prefix
):
    body = generated(12_000)
    half = body.index(b"sku-007000")
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield body[:half]
        await release.wait()
        yield body[half:]

    url = base(rn.url, merchant)
    task = asyncio.create_task(put_import(http, rn.url, merchant, "slow", slow()))
    async with running_node(settings_for(pg_dsn, REDIS_URL, "cat-b"), redis_prefix) as other:
        seen = None
        for _ in range(200):
            status, seen = await get(http, f"{base(other.url, merchant)}/imports/slow")
            if status == 200 and seen["created"] >= 5000:
                break
            await asyncio.sleep(0.05)
        assert seen is not None and seen["state"] == "running", seen
        assert seen["created"] == 5000 and seen["finished_at"] is None
        assert 5000 <= seen["rows_read"] <= 7000  # the next batch may be read, not yet applied
        # its products commit together: none is visible yet, on either node
        assert (await get(http, f"{base(other.url, merchant)}/products/sku-000001"))[0] == 404
        release.set()
        status, report = await task
        assert (status, report["state"], report["created"]) == (200, "done", 12_000)
        status, seen = await get(http, f"{base(other.url, merchant)}/imports/slow")
        assert seen == report
    assert (await get(http, f"{url}/products/sku-011999"))[0] == 200


async def test_an_import_cut_off_midway_changes_nothing_and_runs_again(http, rn, merchant, pg_dsn):
    body = generated(8000)

    async def cut() -> AsyncIterator[bytes]:
        yield body[: len(body) * 3 // 4]
        raise ConnectionResetError("the client went away")

    with contextlib.suppress(aiohttp.ClientError, ConnectionResetError):
        await put_import(http, rn.url, merchant, "cut", cut())
    url = f"{base(rn.url, merchant)}/imports/cut"
    report = None
    for _ in range(100):
        status, report = await get(http, url)
        if status == 200 and report["state"] == "failed":
            break
        await asyncio.sleep(0.05)
    assert report is not None and report["state"] == "failed", report
    assert report["error"] == "interrupted"
    assert await products_of(pg_dsn, merchant) == []
    status, report = await put_import(http, rn.url, merchant, "cut", body)
    assert (status, report["state"], report["created"]) == (200, "done", 8000)


async def test_a_body_that_stalls_fails_the_import_and_frees_the_merchant(
    http, rn, merchant, pg_dsn
):
    rn.node.catalogue.imports.idle_seconds = 0.5
    body = generated(6000)
    never = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield body[: len(body) - 100]  # past the first batch
        await never.wait()

    task = asyncio.create_task(put_import(http, rn.url, merchant, "stall", stalls()))
    url = f"{base(rn.url, merchant)}/imports/stall"
    report = None
    for _ in range(100):
        status, report = await get(http, url)
        if status == 200 and report["state"] == "failed":
            break
        await asyncio.sleep(0.05)
    assert report is not None and (report["state"], report["error"]) == ("failed", "body_timeout")
    assert await products_of(pg_dsn, merchant) == []
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
        await task
    # the merchant's lock is free: the next import runs at once
    status, report = await put_import(http, rn.url, merchant, "after", generated(10))
    assert (status, report["created"]) == (200, 10)


async def test_an_import_left_running_by_a_node_gone_reads_failed(http, rn, merchant, pg_dsn):
    await setup_db(
        pg_dsn,
        """INSERT INTO catalogue_imports (merchant_id, import_id, format, state, rows_read)
           VALUES ($1, 'orphan', 'csv', 'running', 5000)""",
        merchant,
    )
    status, report = await get(http, f"{base(rn.url, merchant)}/imports/orphan")
    assert (status, report["state"], report["error"]) == (200, "failed", "interrupted")
    status, report = await put_import(http, rn.url, merchant, "orphan", jsonl(row("z")))
    assert (status, report["state"], report["format"]) == (200, "done", "jsonl")


async def test_imports_of_one_merchant_run_one_at_a_time(http, rn, merchant, pg_dsn):
    """Two imports at once of overlapping rows (and a retry of one of them beside it): they
    queue on the merchant's lock; every SKU is counted created once over them all."""
    one, two = generated(6000, price=1), generated(6000, price=2)
    results = await asyncio.gather(
        put_import(http, rn.url, merchant, "one", one),
        put_import(http, rn.url, merchant, "two", two),
        put_import(http, rn.url, merchant, "one", one),
    )
    assert [s for s, _ in results] == [200, 200, 200], results
    reports = [r for _, r in results]
    assert sorted(r["replayed"] for r in reports) == [False, False, True]
    fresh = [r for r in reports if not r["replayed"]]
    assert sum(r["created"] for r in fresh) == 6000
    assert sum(r["updated"] for r in fresh) == 6000
    prices = {r["price"] for r in await products_of(pg_dsn, merchant)}
    assert len(prices) == 1  # one import's prices, whole: the last to run


async def test_a_retry_id_is_per_merchant(http, rn, merchant, pg_dsn):
    from tests.loyalty_support import new_merchant

    other = await new_merchant(pg_dsn)
    assert (await put_import(http, rn.url, merchant, "same", jsonl(row("a"))))[0] == 200
    status, report = await put_import(http, rn.url, other, "same", jsonl(row("b")))
    assert (status, report["replayed"], report["created"]) == (200, False, 1)
    assert [r["sku"] for r in await products_of(pg_dsn, other)] == ["b"]
    assert [r["sku"] for r in await products_of(pg_dsn, merchant)] == ["a"]
