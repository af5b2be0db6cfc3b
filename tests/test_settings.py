"""Environment settings: defaults, and refusals of values that would break a guarantee."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.server.drain_seconds == 20.0 < 30  # below Kubernetes' grace period
    assert s.ledger.command_timeout == 10.0
    assert s.session.max_queue_bytes == 1_048_576


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # 0 s: in-flight commands were cancelled mid-command, their replies lost (review)
        ("GATEWAY_DRAIN_SECONDS", "0"),
        # below the 64 KiB a session may buffer before it queues, the limit never applied
        ("GATEWAY_MAX_QUEUE_BYTES", "4096"),
        ("GATEWAY_LEDGER_COMMAND_TIMEOUT", "0"),
        ("GATEWAY_LEDGER_COMMAND_TIMEOUT", "soon"),
    ],
)
def test_values_that_break_a_guarantee_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_every_setting_read_from_the_environment_is_in_the_readme() -> None:
    """Every ``GATEWAY_*`` variable any module of the gateway reads has its row in the README's
    settings table."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `GATEWAY_")]
    names: set[str] = set()
    for path in (root / "gateway").rglob("*.py"):
        names.update(re.findall(r'"(GATEWAY_[A-Z_]+)"', path.read_text()))
    assert len(names) > 30, "no settings found"
    missing = sorted(n for n in names if not any(f"`{n}`" in row for row in table))
    assert not missing, f"settings missing from README.md's table: {missing}"


def test_a_bad_log_level_or_key_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="GATEWAY_LOG_LEVEL"):
        Settings.from_env({"GATEWAY_LOG_LEVEL": "chatty"})
    with pytest.raises(ValueError, match="GATEWAY_REDIS_PREFIX"):
        Settings.from_env({"GATEWAY_REDIS_PREFIX": "a{b}"})
    s = Settings.from_env({"GATEWAY_LOG_LEVEL": "warning", "GATEWAY_REDIS_PREFIX": "prod-1"})
    assert (s.server.log_level, s.store.redis_prefix) == ("WARNING", "prod-1")


def test_the_services_repr_does_not_show_the_jwt_secret() -> None:
    """Found in review: the dispatcher's services held the token verifier as a
    ``functools.partial`` of the secret, and their dataclass repr printed it. The holders of
    the verifier now (the refresh command, the endpoint) must not show it either."""
    import functools

    from gateway import auth
    from gateway.sessions import Endpoint
    from gateway.sessions.core import Refreshes
    from gateway.settings import Settings

    s = Settings.from_env({"GATEWAY_JWT_SECRET": "S3CRET-operator-jwt-key-0123456789abcdef"})
    verify = functools.partial(auth.verify, s.auth.jwt_secret, leeway=s.auth.leeway)
    endpoint = Endpoint(
        s.session,
        "n1",
        None,
        None,
        None,
        None,
        None,
        verify,
        None,
        None,
        1.0,  # type: ignore[arg-type]
    )
    for holder in (Refreshes(verify), endpoint):
        assert "S3CRET" not in repr(holder)
    assert "S3CRET" not in repr(s)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"GATEWAY_HOST": "0.0.0.0"}, "GATEWAY_JWT_SECRET is unset"),
        (
            {"GATEWAY_HOST": "0.0.0.0", "GATEWAY_JWT_SECRET": "x" * 32},
            "GATEWAY_ADMIN_TOKEN is unset",
        ),
        ({"GATEWAY_JWT_SECRET": "CHANGE-ME"}, "at least 32 bytes"),
        ({"GATEWAY_ADMIN_TOKEN": "CHANGE-ME"}, "at least 32 bytes"),
    ],
)
def test_weak_or_default_operator_secrets_are_refused_off_loopback(
    env: dict[str, str], says: str
) -> None:
    """Found in review: a node listening on every interface started with the published
    development secret and admin token (anyone could mint any merchant's tokens), and a
    placeholder such as ``CHANGE-ME`` was taken as a secret."""
    settings = Settings.from_env(env)  # migrate, rebuild-cache and token need no secret
    with pytest.raises(ValueError, match=says):
        settings.check_serving()


@pytest.mark.parametrize("host", ["::1234", "::10.0.0.5", "localhost.example.com", "127.x.y", ""])
def test_only_a_loopback_address_serves_the_defaults(host: str) -> None:
    with pytest.raises(ValueError, match="is unset"):
        Settings.from_env({"GATEWAY_HOST": host}).check_serving()


def test_the_development_defaults_still_serve_on_loopback() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "0:0:0:0:0:0:0:1", "localhost"):
        Settings.from_env({"GATEWAY_HOST": host}).check_serving()
    long = {"GATEWAY_JWT_SECRET": "s" * 32, "GATEWAY_ADMIN_TOKEN": "a" * 32}
    Settings.from_env({"GATEWAY_HOST": "0.0.0.0", **long}).check_serving()
