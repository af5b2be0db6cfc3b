"""Purchases: the points a sale earns under the programme's rules, the unified purchase history
of every channel, returns (what they take back and give back) and the qualifying points tiers
are earned by. Owns the tables sales and sale_returns; a sale's history row and a return's
state ride on their ledger operations (``SALE_HISTORY``, ``RETURN_STATE``). This is its
public face."""

from gateway.purchases.bought import Bought, bought
from gateway.purchases.earning import Computed, Earning, compute, detail_fingerprint, sale_detail
from gateway.purchases.goods import Goods, GoodsFacts, GoodsLine
from gateway.purchases.history import history
from gateway.purchases.qualifying import qualifying_by_member, qualifying_points
from gateway.purchases.returns import RETURN_STATE, PlannedReturn, Returns, return_fingerprint
from gateway.purchases.rows import PurchaseRows
from gateway.purchases.sales import SALE_HISTORY, OfferClaim, SaleOffers, SaleRow, Sales

#: The row kinds this package writes in the ledger's transactions (the node passes them to
#: its ledger).
ATTACHMENTS = (SALE_HISTORY, RETURN_STATE)

__all__ = [
    "ATTACHMENTS",
    "RETURN_STATE",
    "SALE_HISTORY",
    "Bought",
    "Computed",
    "Earning",
    "Goods",
    "GoodsFacts",
    "GoodsLine",
    "OfferClaim",
    "PlannedReturn",
    "PurchaseRows",
    "Returns",
    "SaleOffers",
    "SaleRow",
    "Sales",
    "bought",
    "compute",
    "detail_fingerprint",
    "history",
    "qualifying_by_member",
    "qualifying_points",
    "return_fingerprint",
    "sale_detail",
]
