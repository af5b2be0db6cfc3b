"""Rewards: points turned into single-use codes, codes used once at a register, voided codes
refunded through the ledger, and codes granted without spending points (a birthday coupon),
issued in the transaction of the ledger operation that grants them (``GRANTED_CODE``). Owns
the table reward_codes (the catalogue is the programme's). This is its public face."""

from gateway.rewards.codes import CodeRows, Rewards, code_of, new_code, reward_options
from gateway.rewards.grants import GRANTED_CODE, GrantedCode, granted_code

#: The row kinds this package writes in the ledger's transactions (the node passes them to
#: its ledger).
ATTACHMENTS = (GRANTED_CODE,)

__all__ = [
    "ATTACHMENTS",
    "GRANTED_CODE",
    "CodeRows",
    "GrantedCode",
    "Rewards",
    "code_of",
    "granted_code",
    "new_code",
    "reward_options",
]
