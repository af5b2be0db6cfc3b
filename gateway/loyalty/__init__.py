"""The loyalty programme: identity, earning rules, tiers, rewards, returns, history."""
