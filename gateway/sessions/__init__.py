"""Websocket sessions: authentication, command dispatch, outbound queues, limits."""
