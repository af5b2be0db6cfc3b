"""Points expiry by inactivity: a job on every node, one runner at a time, each expiry a
ledger operation. Owns no table. This is its public face."""

from gateway.expiry.job import EXPIRY_BATCH, EXPIRY_CHUNK, EXPIRY_LOCK, PointsExpiry, run_expiry

__all__ = ["EXPIRY_BATCH", "EXPIRY_CHUNK", "EXPIRY_LOCK", "PointsExpiry", "run_expiry"]
