"""Targeted offers: an offer targets listed members and/or segments, within a validity window,
on channels (store, online), with per-member and total limits, and gives bonus points on a
SKU or a category, a fixed bonus, or a multiplier of the sale's base points. A member's
eligible offers are listed in the cashier and wallet views; a sale that presents an offer
applies it exactly once (a use reserved under the offer's row lock, keyed by the sale's op,
stamped applied in the sale's ledger transaction: ``OFFER_USE``). Owns the tables offers,
offer_members and offer_uses. This is its public face."""

from gateway.offers.claims import OFFER_USE, Claim, Use
from gateway.offers.model import KINDS, MAX_LISTED, MAX_MULTIPLIER, Channel, Kind, Offer, OfferSpec
from gateway.offers.rows import OfferRows
from gateway.offers.service import Offers

#: The row kinds this package writes in the ledger's transactions (the node passes them to
#: its ledger).
ATTACHMENTS = (OFFER_USE,)

__all__ = [
    "ATTACHMENTS",
    "KINDS",
    "MAX_LISTED",
    "MAX_MULTIPLIER",
    "OFFER_USE",
    "Channel",
    "Claim",
    "Kind",
    "Offer",
    "OfferRows",
    "OfferSpec",
    "Offers",
    "Use",
]
