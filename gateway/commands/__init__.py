"""The websocket commands of the points ledger and the loyalty programme: each a handler over
the domain services, registered on the sessions' router with the order it keeps among its
session's commands. This is its public face."""

from __future__ import annotations

from gateway.commands.loyalty import Loyalty
from gateway.commands.points import Points, op_id, origin, outcome_frame
from gateway.commands.wallet import Wallet
from gateway.sessions import Order, Router
from protocol import loyalty as ly
from protocol import messages as m
from protocol import wallet as wl


def register(router: Router, points: Points, loyalty: Loyalty, wallet: Wallet) -> None:
    """Every command with an ``op`` is sequenced (it reaches the ledger in read order); those
    that read what earlier commands wrote (a return its sale, a void its code, an outcome its
    operation) run after them (see ``gateway.sessions.ordering``)."""
    router.add(m.GetBalance, points.balance)
    router.add(m.GetOutcome, points.outcome, Order.AFTER_WRITES)
    router.add(m.Reserve, points.hold, Order.SEQUENCED)
    router.add(m.Commit, points.hold, Order.SEQUENCED)
    router.add(m.Release, points.hold, Order.SEQUENCED)
    router.add(m.Sale, loyalty.sale, Order.SEQUENCED)
    router.add(ly.Enrol, loyalty.enrol)
    router.add(ly.Lookup, loyalty.lookup)
    router.add(ly.IssuePass, loyalty.issue_pass)
    router.add(ly.GetHistory, loyalty.history)
    router.add(ly.RedeemReward, loyalty.redeem, Order.SEQUENCED)
    router.add(ly.UseCode, loyalty.use_code, Order.SEQUENCED)
    router.add(ly.VoidCode, loyalty.void_code, Order.AFTER_WRITES)
    router.add(ly.Return, loyalty.return_, Order.AFTER_WRITES)
    router.add(ly.CashierView, loyalty.cashier_view)
    router.add(wl.GetWallet, wallet.wallet)
    router.add(wl.GetCodes, wallet.codes)
    router.add(wl.UpdateProfile, wallet.update_profile)
    router.add(wl.VerifyContact, wallet.verify_contact)
    router.add(wl.ConfirmContact, wallet.confirm_contact)


__all__ = ["Loyalty", "Points", "Wallet", "op_id", "origin", "outcome_frame", "register"]
