"""Tiers: a member's standing in the merchant's tier ladder (the ladder itself is the
programme's; the member's tier is stored with its profile, ``gateway.members``). This is its
public face."""

from gateway.tiers.standing import Tiers

__all__ = ["Tiers"]
