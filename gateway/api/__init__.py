"""The authenticated admin HTTP API (``/admin/v1/merchants/{merchant}/...``, described in
``openapi.json``) and ``POST /admin/broadcast``: a thin transport over the domain services.
This is its public face."""

from gateway.api.admin import AdminApi, AdminServices
from gateway.api.broadcast import Broadcasts

__all__ = ["AdminApi", "AdminServices", "Broadcasts"]
