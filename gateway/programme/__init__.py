"""The merchant's programme: its settings, earning rules, tier ladder, reward catalogue and
currency; read through a short cache, changed through ``ProgrammeConfig``. Owns the tables
merchants, programmes, earning_rules, tiers and rewards. This is its public face."""

from gateway.programme.catalogue import find_reward, list_rewards
from gateway.programme.config import ProgrammeConfig, create_merchant
from gateway.programme.currency import exponent, minor_per_unit
from gateway.programme.model import Programme, Reward, Rule, Tier, plain
from gateway.programme.programmes import CACHE_SECONDS, Programmes, expiry_days, load_programme

__all__ = [
    "CACHE_SECONDS",
    "Programme",
    "ProgrammeConfig",
    "Programmes",
    "Reward",
    "Rule",
    "Tier",
    "create_merchant",
    "expiry_days",
    "exponent",
    "find_reward",
    "list_rewards",
    "load_programme",
    "minor_per_unit",
    "plain",
]
