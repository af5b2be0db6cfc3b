"""The asyncio client of the loyalty gateway (protocol v1), for POS vendors and app back ends."""
