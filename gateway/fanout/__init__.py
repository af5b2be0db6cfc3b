"""Cross-node fan-out of balance changes through Redis pub/sub, one channel per member."""
