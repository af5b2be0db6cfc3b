"""The shopper's wallet page (``/wallet``) and the cashier console (``/console``): static pages
the node serves with their compiled scripts (``static/``, built from ``clients/web`` by
``make pages``; nothing is built at run time). A page gets its token from the app or back end
that embeds it, never from its URL, and talks to ``/ws`` like any other client."""

from gateway.web.pages import Pages

__all__ = ["Pages"]
