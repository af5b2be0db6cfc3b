"""The cart links' side: what the reorder page shows for a signed link (the product, the
incentive, where the shop's cart is), and the click it records. The shop's URL comes from the
loop's ``cart_url`` template (``loops.fill``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.catalogue import Catalogue
from gateway.reorder.links import LinkSigner
from gateway.reorder.loops import fill, get_loop, incentive_text
from gateway.store.db import translate_errors


@dataclass(frozen=True, slots=True)
class CartView:
    product: str
    qty: int
    incentive: str
    shop_url: str | None


class Carts:
    def __init__(self, pool: asyncpg.Pool[Any], catalogue: Catalogue, links: LinkSigner) -> None:
        self._pool = pool
        self._catalogue = catalogue
        self._links = links

    async def open(self, token: str, user_agent: str = "") -> CartView:
        """The page of a signed cart link, its click recorded; ``LinkRefused`` for a link the
        gateway did not sign, altered or expired."""
        link = self._links.read_cart(token)
        with translate_errors("reorder click"):
            r = await self._pool.fetchrow(
                """WITH click AS (
                       INSERT INTO reorder_clicks (merchant_id, reminder_id, member_id, sku,
                                                   user_agent)
                       SELECT merchant_id, id, member_id, sku, left($4, 200)
                         FROM reorder_reminders
                        WHERE id = $1 AND merchant_id = $2 AND member_id = $3
                       RETURNING reminder_id)
                   SELECT r.loop_id, COALESCE(p.units, 1) AS units
                     FROM reorder_reminders r
                     LEFT JOIN reorder_predictions p USING (merchant_id, member_id, sku)
                    WHERE r.id = $1 AND r.merchant_id = $2 AND r.member_id = $3
                      AND EXISTS (SELECT 1 FROM click)""",
                link.reminder,
                link.merchant,
                link.member,
                user_agent,
            )
        product = await self._catalogue.product(link.merchant, link.sku)
        name = product.name if product is not None else link.sku
        if r is None:  # its reminder is gone (the member was erased): still a page
            return CartView(name, 1, "", None)
        loop = await get_loop(self._pool, link.merchant, r["loop_id"])
        if loop is None:
            return CartView(name, r["units"], "", None)
        incentive = await incentive_text(self._pool, loop)
        url = None
        if loop.spec.cart_url is not None:
            url = fill(
                loop.spec.cart_url,
                sku=link.sku,
                qty=r["units"],
                member=link.member,
                reminder=link.reminder,
            )
        return CartView(name, r["units"], incentive, url)


__all__ = ["CartView", "Carts"]
