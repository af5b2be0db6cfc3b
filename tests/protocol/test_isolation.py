"""The protocol package stays importable without the server's I/O stack."""

import subprocess
import sys

HEAVY = ("asyncio", "aiohttp", "redis", "asyncpg")

CODE = f"""
import sys
import protocol, protocol.client, protocol.asyncapi
protocol.asyncapi.render()
loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)
assert not loaded, loaded
"""


def test_protocol_imports_no_io_stack() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
