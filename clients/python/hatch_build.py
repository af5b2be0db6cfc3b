"""Ship the repository's ``protocol/`` package in this distribution without moving it.

* From the repository, ``protocol`` is ``../../protocol``; from an sdist (which this hook fills
  the same way) it is ``./protocol``.
* A wheel and an sdist get a copy of it (and ``protocol/py.typed``: it is typed).
* An editable install gets no copy: a small import hook finds ``protocol`` in the repository,
  so edits to it are live and one environment never holds two copies.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_FINDER = '''"""Editable install of loyalty-client: finds the repository's ``protocol`` package."""

import importlib.machinery
import sys

_ROOT = {root!r}


class _ProtocolFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "protocol":
            return None
        return importlib.machinery.PathFinder.find_spec(name, [_ROOT])


if not any(f is _ProtocolFinder or getattr(f, "__name__", "") == "_ProtocolFinder"
           for f in sys.meta_path):
    sys.meta_path.append(_ProtocolFinder)
'''


def _protocol_dir(root: Path) -> Path:
    for candidate in (root / "protocol", root.parent.parent / "protocol"):
        if (candidate / "__init__.py").is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"no protocol/ package next to or two levels above {root}")


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        source = _protocol_dir(Path(self.root))
        scratch = Path(tempfile.mkdtemp(prefix="loyalty-client-build-"))
        if self.target_name == "wheel" and version == "editable":
            finder = scratch / "_loyalty_client_protocol.py"
            finder.write_text(_FINDER.format(root=os.fspath(source.parent)), encoding="utf-8")
            pth = scratch / "_loyalty_client_protocol.pth"
            pth.write_text("import _loyalty_client_protocol\n", encoding="utf-8")
            build_data["force_include_editable"][os.fspath(finder)] = finder.name
            build_data["force_include_editable"][os.fspath(pth)] = pth.name
            return
        marker = scratch / "py.typed"
        marker.write_text("", encoding="utf-8")
        build_data["force_include"][os.fspath(source)] = "protocol"
        if not (source / "py.typed").exists():
            build_data["force_include"][os.fspath(marker)] = "protocol/py.typed"
