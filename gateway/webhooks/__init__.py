"""Signed webhooks to merchant systems: a merchant's endpoints subscribed to event types, the
events written in the transaction of the change they announce (a points change: by
``POINTS_TAP``, which the ledger runs over every batch's entries), one delivery per event and
endpoint, and the worker on every node that delivers them signed, in order per member and
endpoint, retried with exponential backoff, then failed (listed and replayed through the admin
API). Owns the tables webhook_endpoints, webhook_events and webhook_deliveries. This is its
public face; docs/webhooks.md is its guide."""

from gateway.webhooks.deliver import Deliverer, Envelope, backoff, body_of
from gateway.webhooks.endpoints import (
    MAX_DESCRIPTION,
    MAX_ENDPOINTS,
    MAX_OVERLAP,
    Delivery,
    Endpoint,
    Webhooks,
)
from gateway.webhooks.signing import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    HEADER,
    SECRET_PREFIX,
    signature,
)
from gateway.webhooks.tap import EVENT_TYPES, POINTS_TAP, EventRecorder
from gateway.webhooks.urls import UrlRefused, address_allowed, check_url

#: The statements this package runs over the ledger's batches (the node passes them to its
#: ledger).
TAPS = (POINTS_TAP,)

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPES",
    "EVENT_TYPE_HEADER",
    "HEADER",
    "MAX_DESCRIPTION",
    "MAX_ENDPOINTS",
    "MAX_OVERLAP",
    "POINTS_TAP",
    "SECRET_PREFIX",
    "TAPS",
    "Deliverer",
    "Delivery",
    "Endpoint",
    "Envelope",
    "EventRecorder",
    "UrlRefused",
    "Webhooks",
    "address_allowed",
    "backoff",
    "body_of",
    "check_url",
    "signature",
]
