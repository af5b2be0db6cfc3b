"""The admin HTTP API (``/admin/v1/merchants/{merchant}/...``), described in ``openapi.json``."""

from gateway.api.admin import setup_api

__all__ = ["setup_api"]
