"""The loyalty gateway server: sessions, fan-out, the ledger and the loyalty domain."""
