"""Rewards: points turned into single-use codes, codes used once at a register, voided codes
refunded through the ledger. Owns the table reward_codes (the catalogue is the programme's).
This is its public face."""

from gateway.rewards.codes import CodeRows, Rewards, code_of, new_code, reward_options

__all__ = ["CodeRows", "Rewards", "code_of", "new_code", "reward_options"]
