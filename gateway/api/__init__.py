"""The authenticated admin HTTP API (``/admin/v1/merchants/{merchant}/...``) and ``POST
/admin/broadcast``: a thin transport over the domain services. ``openapi.json`` describes them
and every other route a node serves (``openapi.py`` builds it). This is its public face."""

from gateway.api.admin import AdminApi, AdminServices
from gateway.api.broadcast import Broadcasts
from gateway.api.reorder_links import ReorderLinks

__all__ = ["AdminApi", "AdminServices", "Broadcasts", "ReorderLinks"]
