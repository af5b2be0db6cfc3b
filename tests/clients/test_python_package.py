"""The client distribution (clients/python, ``loyalty-client``) stands alone: its wheel holds
``loyalty_client`` and the whole ``protocol`` package, requires msgspec and aiohttp only, and
installs and imports in a fresh environment without the server or its stores."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")
SERVER_ONLY = {"asyncpg", "redis", "hiredis", "uvloop", "loyalty-gateway", "orjson", "pyjwt"}

pytestmark = pytest.mark.slow


def run(*cmd: str | Path, cwd: Path = ROOT) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    run(UV, "build", "--package", "loyalty-client", "--out-dir", out)  # sdist, then wheel from it
    (built,) = out.glob("loyalty_client-*.whl")
    yield built


def test_the_wheel_holds_the_client_and_the_whole_protocol(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.split("/", 1)[1] for n in names if n.startswith("protocol/")}
    in_repo = {p.name for p in (ROOT / "protocol").iterdir() if p.is_file()}
    assert in_repo - {".gitignore"} <= shipped  # every module, README.md, asyncapi.json
    assert "py.typed" in shipped
    assert {"loyalty_client/__init__.py", "loyalty_client/client.py"} <= names
    assert "loyalty_client/py.typed" in names
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"loyalty_client", "protocol", wheel.name.split("-py3")[0] + ".dist-info"}


def test_the_wheel_requires_no_server_dependency(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(z.read(meta))
    requires = metadata.get_all("Requires-Dist") or []
    names = {
        r.split(">")[0].split("<")[0].split("=")[0].split(";")[0].strip().lower() for r in requires
    }
    assert metadata["Name"] == "loyalty-client"
    assert names == {"msgspec", "aiohttp"}
    assert not names & SERVER_ONLY


def test_the_client_installs_and_imports_alone(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(UV, "venv", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    run(UV, "pip", "install", "--python", python, wheel)
    listed = run(UV, "pip", "list", "--python", python).lower()
    for name in SERVER_ONLY | {"gateway"}:
        assert f"\n{name} " not in listed, name
    code = """
import importlib.util, sys
import loyalty_client, protocol, protocol.client
from loyalty_client import Client, SqliteJournal
assert protocol.__file__.startswith(sys.prefix), protocol.__file__
assert loyalty_client.__file__.startswith(sys.prefix), loyalty_client.__file__
for name in ("gateway", "asyncpg", "redis", "hiredis"):
    assert importlib.util.find_spec(name) is None, name
print("ok")
"""
    assert run(python, "-I", "-c", code, cwd=tmp_path).strip() == "ok"


def test_the_server_ships_no_protocol_and_depends_on_the_client(tmp_path: Path) -> None:
    """One copy of protocol: the server's wheel has none and requires loyalty-client; in the
    workspace's environment protocol is the repository's own (the editable client)."""
    run(UV, "build", "--package", "loyalty-gateway", "--wheel", "--out-dir", tmp_path)
    (server,) = tmp_path.glob("loyalty_gateway-*.whl")
    with zipfile.ZipFile(server) as z:
        names = z.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = email.message_from_bytes(z.read(meta)).get_all("Requires-Dist") or []
    assert not [n for n in names if n.startswith("protocol/")]
    assert any(r.startswith("loyalty-client") for r in requires)
    import protocol

    assert Path(protocol.__file__).resolve() == ROOT / "protocol" / "__init__.py"
