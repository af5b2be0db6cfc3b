from tests.loyalty.world import clients, http, merchant, rn

__all__ = ["clients", "http", "merchant", "rn"]
