"""Every setting, read from the environment in one place, with documented defaults.

One frozen object per concern; ``Settings.from_env`` builds them all and the rest of the code
receives them as arguments. Secrets are kept out of ``repr``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gateway.merchant_keys import MerchantKeys

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/loyalty"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEV_JWT_SECRET = "dev-only-secret-change-me-not-for-production"
DEV_ADMIN_TOKEN = "dev-admin-token"


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be within [{lo}, {hi}], got {value}")
    return value


#: Shortest operator secret and admin token accepted (the development defaults excepted): the
#: length of a random 256-bit key, as merchant keys require (``gateway/merchant_keys.py``).
MIN_SECRET_BYTES = 32


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost, or nothing (every interface)


def _check_secrets(host: str, jwt_secret: str, admin_token: str) -> None:
    """Each of the operator's secrets reaches every merchant: one that is set must be long, and
    the published development defaults serve only on the loopback interface (``make run``, the
    tests, the bench); a node listening anywhere else refuses to start with them."""
    for name, value, dev in (
        ("GATEWAY_JWT_SECRET", jwt_secret, DEV_JWT_SECRET),
        ("GATEWAY_ADMIN_TOKEN", admin_token, DEV_ADMIN_TOKEN),
    ):
        if value == dev:
            if not _loopback(host):
                raise ValueError(
                    f"{name} is unset: its development default is refused on {host} "
                    "(not a loopback address); set it to a random value of 32 bytes or more"
                )
        elif len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"{name} must be at least {MIN_SECRET_BYTES} bytes")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (env.get(name) or default).upper()
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {env.get(name)!r}")
    return value


def _prefix(value: str) -> str:
    """A key prefix: letters, digits, ``_``, ``-``, ``.`` and ``:`` (it is spelled into every key
    and channel, and a ``{``, ``*`` or space would change what they mean: a hash tag, a pattern)."""
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value):
        raise ValueError(f"GATEWAY_REDIS_PREFIX must be letters, digits, _ - . or :, got {value!r}")
    return value


def _origin(name: str, value: str) -> str:
    u = urlsplit(value)
    if u.scheme not in ("http", "https") or not u.hostname or u.path or u.query or u.fragment:
        raise ValueError(f"{name}: {value!r} is not an origin (scheme://host[:port])")
    return f"{u.scheme}://{u.netloc}".lower()


def _url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    u = urlsplit(value)
    if u.scheme not in schemes or not u.hostname:
        raise ValueError(f"{name}: {value!r} is not a {' or '.join(schemes)} URL")
    return value


def _list(env: Mapping[str, str], name: str) -> list[str]:
    return [v.strip() for v in (env.get(name) or "").split(",") if v.strip()]


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be within [{lo}, {hi}], got {value}")
    return value


@dataclass(frozen=True, slots=True)
class StoreSettings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    #: Prefix of every Redis key and channel: one per deployment sharing a Redis.
    redis_prefix: str = "lg"
    #: ``redis_url`` is one node of a Redis Cluster (sharded pub/sub, per-slot epochs).
    redis_cluster: bool = False
    #: On a cluster: the 16384 slots are split into this many pub/sub shards, each with its
    #: own sharded-pub/sub connection to each master owning slots of it.
    redis_shards: int = 4
    #: Connections in the asyncpg pool used for reads and admin work (ledger lanes have their own).
    db_pool_size: int = 8
    #: Seconds a single store call may take before the command fails with ``timeout``.
    command_timeout: float = 5.0

    def __repr__(self) -> str:  # URLs may carry passwords
        return f"StoreSettings(db_pool_size={self.db_pool_size})"


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    #: Parallel group-commit lanes (each one PostgreSQL connection, one batch in flight).
    lanes: int = 2
    #: Most operations in one group-commit transaction.
    max_batch: int = 256
    #: Seconds between expiry sweeps (holds past expiry already count as expired before this).
    sweep_interval: float = 1.0
    #: Seconds between outbox relay passes, and the age after which an unpublished change is
    #: republished by any node.
    relay_interval: float = 1.0
    relay_min_age: float = 3.0
    #: Seconds one lane statement may take (row-lock waits included) before the lane gives its
    #: connection up: the batch fails with ``unavailable`` (nothing applied) or, if it was
    #: committing, ``timeout`` (ask for the outcome). Without it a PostgreSQL that stops
    #: answering would hold the batch, and the node's shutdown, until TCP gave up.
    command_timeout: float = 10.0
    #: Seconds the oldest queued operation of a lane may have waited before the lane refuses
    #: new ones at once with ``unavailable`` (retry with the same id, nothing applied): past
    #: its capacity a node answers fast instead of queueing every till for seconds.
    max_queue_wait: float = 2.0


@dataclass(frozen=True, slots=True)
class SessionSettings:
    #: Websocket ping interval (one node-wide timer); a peer that sends nothing, not even a
    #: pong, for two to three intervals is closed (3003).
    heartbeat: float = 15.0
    #: Seconds a new connection has to send ``hello`` (else 3504).
    auth_timeout: float = 10.0
    #: Transport hard limit; a frame above it closes the socket with 1009.
    max_transport_frame: int = 1_048_576
    #: Outbound bytes queued for one session before it is closed as slow (3008).
    max_queue_bytes: int = 1_048_576
    #: Sessions this node holds (new ones are closed with 3002).
    max_sessions: int = 20_000
    #: Of those, connections not yet welcomed (no valid ``hello`` yet; each waits at most
    #: ``auth_timeout``): a flood of idle sockets takes at most this many slots from real tills
    #: (new ones are closed with 3002 above it).
    max_pending: int = 4_000
    #: Live app/web sessions per member across all nodes, counted in Redis (this node's count
    #: while Redis is unavailable); 3004 above it.
    max_sessions_per_member: int = 50
    #: Members one session may watch at once.
    max_subscriptions: int = 16
    #: Commands per second per session (token bucket, burst = 2x).
    rate_per_second: int = 200
    #: Consecutive malformed frames before 3505.
    max_bad_frames: int = 20
    #: Changes kept for resume: a subscriber further behind gets ``recovered=false``.
    max_recovery: int = 100
    #: Origins (``https://shop.example.com``) whose pages may open ``/ws`` besides the node's
    #: own: a browser names its page's origin, and any other is refused (cross-site websocket
    #: hijacking). Connections without an ``Origin`` (tills, servers, apps) are not affected.
    allowed_origins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthSettings:
    jwt_secret: str = field(default=DEV_JWT_SECRET, repr=False)
    #: Leeway in seconds when checking token expiry.
    leeway: float = 5.0
    admin_token: str = field(default=DEV_ADMIN_TOKEN, repr=False)
    #: Per-merchant signing keys and admin tokens (``GATEWAY_MERCHANT_KEYS_FILE``; see
    #: ``gateway/merchant_keys.py``). Empty: only the operator's secrets are accepted.
    merchant_keys: MerchantKeys = field(default_factory=MerchantKeys, repr=False)


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """Where a member's verification codes (and, later, messages) go. Unset: none are sent
    (``verify_contact`` answers ``unavailable``)."""

    #: ``smtp://host:port`` or ``smtps://host:port`` (user and password in the URL if needed).
    smtp_url: str = field(default="", repr=False)
    mail_from: str = "loyalty@localhost"
    #: A JSON-over-HTTP SMS provider (``POST {"to": ..., "text": ...}``).
    sms_url: str = ""
    sms_token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class WebSettings:
    """What the wallet page and the cashier console are told (``gateway/web``)."""

    #: The websocket URLs a page connects to, tried in turn on reconnect (``wss://gw-a/ws``,
    #: ...). Empty: the ``/ws`` of the node that served the page.
    ws_urls: tuple[str, ...] = ()
    #: Where a page asks for its token when no embedding app hands it one: the merchant's back
    #: end, which answers ``{"token": ...}`` to a credentialed ``POST`` from the page (after its
    #: own login). Empty: the token comes from the embedding app only (``postMessage``).
    token_url: str = ""


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """How this node delivers the merchants' webhooks (``gateway/webhooks``)."""

    #: Seconds between a delivery worker's looks for due deliveries when it found none (0: this
    #: node delivers nothing; another node's worker does).
    poll_seconds: float = 0.5
    #: Seconds one POST may take (connect, send, the answer's status) before it counts as failed.
    timeout: float = 5.0
    #: POSTs this node has in flight to one endpoint at most (a slow one holds only these).
    concurrency: int = 16
    #: The first retry's delay in seconds, doubled at each attempt up to ``backoff_max`` (each
    #: delay jittered by up to 20%), for ``retry_seconds`` from the first attempt; then failed.
    backoff: float = 10.0
    backoff_max: float = 3600.0
    retry_seconds: float = 259_200.0
    #: Seconds a rotated-out secret keeps signing beside the new one, unless the rotation says.
    rotation_overlap: float = 86_400.0
    #: Accept endpoint URLs on loopback, private, link-local and unique-local addresses (local
    #: development and tests only: a merchant could otherwise reach the node's own network).
    allow_private: bool = False


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    node_id: str = field(default_factory=socket.gethostname)
    #: Seconds between SIGTERM and exit; below Kubernetes' 30 s default grace period.
    drain_seconds: float = 20.0
    #: Seconds between moves of surviving objects out of the collector's reach (0: the
    #: interpreter's own policy); see ``gateway/collector.py``.
    gc_freeze_seconds: float = 10.0
    #: Seconds between full collections over everything, frozen objects included (0: never).
    gc_full_seconds: float = 600.0
    #: Logging level of the node's log (DEBUG, INFO, WARNING, ERROR).
    log_level: str = "INFO"
    #: ``json`` (one object per line, the container image's) or ``text`` (a terminal's).
    log_format: str = "text"
    #: Seconds between birthday-reward passes on each node (jittered; 0: none, cron runs
    #: ``python -m gateway birthdays``). A pass grants each member once a year whatever runs it.
    birthday_seconds: float = 300.0
    #: Seconds between reorder-prediction passes on each node (jittered; 0: none): the
    #: members whose purchases changed get their predicted repurchase dates recomputed.
    reorder_seconds: float = 5.0
    #: The gateway's public base URL, for the links in reorder messages (the cart page and
    #: the one-click unsubscribe): what a member's mail client or phone reaches.
    public_url: str = "http://127.0.0.1:8080"
    #: Largest body of a catalogue import, in bytes (64 MiB: some 400,000 rows); past it the
    #: import is refused with 413 ``body_too_large`` and changes no product.
    catalogue_max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings
    store: StoreSettings
    ledger: LedgerSettings
    session: SessionSettings
    auth: AuthSettings
    notify: NotifySettings = field(default_factory=NotifySettings)
    web: WebSettings = field(default_factory=WebSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    def check_serving(self) -> None:
        """Refuse to serve with secrets anyone could know (``ValueError`` says which): the
        development defaults off the loopback interface, or a value under 32 bytes. Checked by
        ``serve`` only: ``migrate``, ``rebuild-cache`` and ``token`` need no secret to be safe."""
        _check_secrets(self.server.host, self.auth.jwt_secret, self.auth.admin_token)

    # long function: every setting read from the environment, one line each, in one place
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        jwt_secret = e.get("GATEWAY_JWT_SECRET", DEV_JWT_SECRET)
        admin_token = e.get("GATEWAY_ADMIN_TOKEN", DEV_ADMIN_TOKEN)
        host = e.get("GATEWAY_HOST", "127.0.0.1")
        return cls(
            server=ServerSettings(
                host=host,
                port=_int(e, "GATEWAY_PORT", 8080, 0, 65535),
                node_id=e.get("GATEWAY_NODE_ID") or socket.gethostname(),
                drain_seconds=_float(e, "GATEWAY_DRAIN_SECONDS", 20.0, 1.0, 600.0),
                gc_freeze_seconds=_float(e, "GATEWAY_GC_FREEZE_SECONDS", 10.0, 0.0, 86400.0),
                gc_full_seconds=_float(e, "GATEWAY_GC_FULL_SECONDS", 600.0, 0.0, 864000.0),
                log_level=_choice(
                    e, "GATEWAY_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")
                ),
                log_format=_choice(e, "GATEWAY_LOG_FORMAT", "TEXT", ("JSON", "TEXT")).lower(),
                birthday_seconds=_float(e, "GATEWAY_BIRTHDAY_SECONDS", 300.0, 0.0, 86400.0),
                reorder_seconds=_float(e, "GATEWAY_REORDER_SECONDS", 5.0, 0.0, 86400.0),
                public_url=_url(
                    "GATEWAY_PUBLIC_URL",
                    e.get("GATEWAY_PUBLIC_URL") or "http://127.0.0.1:8080",
                    ("http", "https"),
                ).rstrip("/"),
                catalogue_max_bytes=_int(
                    e, "GATEWAY_CATALOGUE_MAX_BYTES", 64 * 1024 * 1024, 1024, 1 << 32
                ),
            ),
            store=StoreSettings(
                database_url=e.get("DATABASE_URL", DEFAULT_DATABASE_URL),
                redis_url=e.get("REDIS_URL", DEFAULT_REDIS_URL),
                redis_prefix=_prefix(e.get("GATEWAY_REDIS_PREFIX") or "lg"),
                redis_cluster=_choice(e, "GATEWAY_REDIS_CLUSTER", "0", ("0", "1")) == "1",
                redis_shards=_int(e, "GATEWAY_REDIS_SHARDS", 4, 1, 256),
                db_pool_size=_int(e, "GATEWAY_DB_POOL", 8, 1, 200),
                command_timeout=_float(e, "GATEWAY_COMMAND_TIMEOUT", 5.0, 0.1, 120.0),
            ),
            ledger=LedgerSettings(
                lanes=_int(e, "GATEWAY_LEDGER_LANES", 2, 1, 64),
                max_batch=_int(e, "GATEWAY_LEDGER_MAX_BATCH", 256, 1, 10_000),
                sweep_interval=_float(e, "GATEWAY_SWEEP_SECONDS", 1.0, 0.05, 3600.0),
                relay_interval=_float(e, "GATEWAY_RELAY_SECONDS", 1.0, 0.05, 3600.0),
                relay_min_age=_float(e, "GATEWAY_RELAY_MIN_AGE", 3.0, 0.0, 3600.0),
                command_timeout=_float(e, "GATEWAY_LEDGER_COMMAND_TIMEOUT", 10.0, 0.1, 600.0),
                max_queue_wait=_float(e, "GATEWAY_LEDGER_MAX_QUEUE_WAIT", 2.0, 0.01, 600.0),
            ),
            session=SessionSettings(
                heartbeat=_float(e, "GATEWAY_HEARTBEAT_SECONDS", 15.0, 0.1, 600.0),
                auth_timeout=_float(e, "GATEWAY_AUTH_TIMEOUT", 10.0, 0.1, 600.0),
                max_transport_frame=_int(e, "GATEWAY_MAX_FRAME", 1_048_576, 65_536, 16_777_216),
                # below the transport's own buffer (WRITE_HIGH, 64 KiB) it would not be enforced
                max_queue_bytes=_int(e, "GATEWAY_MAX_QUEUE_BYTES", 1_048_576, 65_536, 1 << 30),
                max_sessions=_int(e, "GATEWAY_MAX_SESSIONS", 20_000, 1, 1_000_000),
                max_pending=_int(e, "GATEWAY_MAX_PENDING_SESSIONS", 4_000, 1, 1_000_000),
                max_sessions_per_member=_int(e, "GATEWAY_MAX_SESSIONS_PER_MEMBER", 50, 1, 10_000),
                max_subscriptions=_int(e, "GATEWAY_MAX_SUBSCRIPTIONS", 16, 1, 10_000),
                rate_per_second=_int(e, "GATEWAY_RATE_PER_SECOND", 200, 1, 1_000_000),
                max_bad_frames=_int(e, "GATEWAY_MAX_BAD_FRAMES", 20, 1, 10_000),
                max_recovery=_int(e, "GATEWAY_MAX_RECOVERY", 100, 0, 100_000),
                allowed_origins=tuple(
                    _origin("GATEWAY_ALLOWED_ORIGINS", o)
                    for o in _list(e, "GATEWAY_ALLOWED_ORIGINS")
                ),
            ),
            web=WebSettings(
                ws_urls=tuple(
                    _url("GATEWAY_PAGE_WS_URLS", u, ("ws", "wss"))
                    for u in _list(e, "GATEWAY_PAGE_WS_URLS")
                ),
                token_url=_url("GATEWAY_PAGE_TOKEN_URL", t, ("http", "https"))
                if (t := e.get("GATEWAY_PAGE_TOKEN_URL", ""))
                else "",
            ),
            webhooks=WebhookSettings(
                poll_seconds=_float(e, "GATEWAY_WEBHOOKS_POLL_SECONDS", 0.5, 0.0, 60.0),
                timeout=_float(e, "GATEWAY_WEBHOOKS_TIMEOUT", 5.0, 0.1, 60.0),
                concurrency=_int(e, "GATEWAY_WEBHOOKS_CONCURRENCY", 16, 1, 1000),
                backoff=_float(e, "GATEWAY_WEBHOOKS_BACKOFF_SECONDS", 10.0, 0.01, 86400.0),
                backoff_max=_float(
                    e, "GATEWAY_WEBHOOKS_BACKOFF_MAX_SECONDS", 3600.0, 0.01, 86400.0
                ),
                retry_seconds=_float(
                    e, "GATEWAY_WEBHOOKS_RETRY_SECONDS", 259_200.0, 0.0, 2_592_000.0
                ),
                rotation_overlap=_float(
                    e, "GATEWAY_WEBHOOKS_ROTATION_OVERLAP_SECONDS", 86_400.0, 0.0, 604_800.0
                ),
                allow_private=_choice(e, "GATEWAY_WEBHOOKS_ALLOW_PRIVATE", "0", ("0", "1")) == "1",
            ),
            notify=NotifySettings(
                smtp_url=e.get("GATEWAY_SMTP_URL", ""),
                mail_from=e.get("GATEWAY_MAIL_FROM", "loyalty@localhost"),
                sms_url=e.get("GATEWAY_SMS_URL", ""),
                sms_token=e.get("GATEWAY_SMS_TOKEN", ""),
            ),
            auth=AuthSettings(
                jwt_secret=jwt_secret,
                leeway=_float(e, "GATEWAY_TOKEN_LEEWAY", 5.0, 0.0, 3600.0),
                admin_token=admin_token,
                merchant_keys=MerchantKeys.load(
                    e.get("GATEWAY_MERCHANT_KEYS_FILE", ""), admin_token, jwt_secret
                ),
            ),
        )
