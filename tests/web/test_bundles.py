"""The pages' scripts the node serves (gateway/web/static/*.js) are what clients/web/src and
clients/js/src build to today, they type-check, and each stays within the page budget of
30 KB of JavaScript, gzipped."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "clients" / "web"
STATIC = ROOT / "gateway" / "web" / "static"
BUDGET = 30 * 1024


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None or not (WEB / "node_modules" / "esbuild").exists():
        pytest.fail("the page tools are needed: make pytest installs them (npm ci in clients/web)")
    return found


def test_the_served_bundles_are_built_from_the_sources(node: str, tmp_path: Path) -> None:
    subprocess.run([node, str(WEB / "build.mjs"), "--out", str(tmp_path)], check=True, cwd=WEB)
    for name in ("wallet.js", "console.js"):
        built = (tmp_path / name).read_bytes()
        assert built == (STATIC / name).read_bytes(), f"{name} is stale: run make pages"


def test_the_pages_type_check(node: str) -> None:
    tsc = WEB / "node_modules" / "typescript" / "bin" / "tsc"
    done = subprocess.run(
        [node, str(tsc), "-p", str(WEB / "tsconfig.json")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_page_ships_at_most_30_kb_of_script_gzipped() -> None:
    for name in ("wallet.js", "console.js"):
        size = len(gzip.compress((STATIC / name).read_bytes(), 9))
        assert size <= BUDGET, (name, size)
