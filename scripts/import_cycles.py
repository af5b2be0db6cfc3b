"""The import graph of ``gateway/`` and ``protocol/``, read from the source (module-level and
function-level imports alike): import cycles, imports that run back up the gateway's layers (as
the layers contract in pyproject.toml lists them), and modules or functions past the size the
code wants to keep (500 lines a module, 80 a function) that do not say why.

    python -m scripts.import_cycles           # prints the findings and the counts
    python -m scripts.import_cycles --check   # the same, exit 1 unless every count is zero

A module says why it is long with a comment line ``# long module: <why>``; a function with
``# long function: <why>`` on the line above its ``def`` (or its decorators). lint-imports checks
the contracts themselves; this script also counts what they would only refuse, so a change can
be compared with the code before it (``git stash; python -m scripts.import_cycles``).
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "protocol")
MODULE_LINES = 500
FUNCTION_LINES = 80


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``PACKAGES``."""
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``known`` it imports. An import of a module's own package (or an
    ancestor) is left out: that is how a package's face is assembled, not a dependency."""
    edges: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        base = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    pkg = base
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    origin = f"{pkg}.{node.module}" if node.module else pkg
                else:
                    origin = node.module or ""
                targets = [origin, *(f"{origin}.{a.name}" for a in node.names)]
            for t in targets:
                r = _resolve(t, known)
                if r and r != mod and not mod.startswith(r + "."):
                    edges[mod].add(r)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def layers(pyproject: Path = ROOT / "pyproject.toml") -> list[list[str]]:
    """The gateway's layers, top first, from the first layers contract."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    for contract in config.get("tool", {}).get("importlinter", {}).get("contracts", []):
        if contract.get("type") == "layers":
            return [
                [m.strip() for m in layer.replace(":", "|").split("|")]
                for layer in contract["layers"]
            ]
    return []


def layer_of(module: str, stack: list[list[str]]) -> int | None:
    for i, layer in enumerate(stack):
        if any(module == m or module.startswith(m + ".") for m in layer):
            return i
    return None


def back_imports(edges: dict[str, set[str]], stack: list[list[str]]) -> list[tuple[str, str]]:
    """Imports from a module to one in a higher layer (a smaller index)."""
    found = []
    for mod, targets in edges.items():
        mine = layer_of(mod, stack)
        for t in targets:
            theirs = layer_of(t, stack)
            if mine is not None and theirs is not None and theirs < mine:
                found.append((mod, t))
    return sorted(found)


def _said(lines: list[str], marker: str) -> bool:
    return any(line.strip().startswith(marker) for line in lines)


def oversized(known: dict[str, Path]) -> list[str]:
    """Modules over ``MODULE_LINES`` lines and functions over ``FUNCTION_LINES`` that do not
    say why (see the module doc)."""
    found = []
    for mod, path in sorted(known.items()):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if len(lines) > MODULE_LINES and not _said(lines, "# long module:"):
            found.append(f"module {mod}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > FUNCTION_LINES and not _said(
                lines[max(0, start - 3) : start - 1], "# long function:"
            ):
                found.append(f"function {mod}.{node.name}: {length} lines")
    return found


def report(root: Path = ROOT) -> tuple[list[str], dict[str, int]]:
    known = modules(root)
    edges = imports(known)
    stack = layers(root / "pyproject.toml")
    out: list[str] = []
    found_cycles = cycles(edges)
    for c in found_cycles:
        out.append("cycle: " + " <-> ".join(c))
    backs = back_imports(edges, stack)
    for mod, t in backs:
        out.append(f"back-import: {mod} -> {t}")
    sizes = oversized(known)
    out += sizes
    counts = {"cycles": len(found_cycles), "back-imports": len(backs), "oversized": len(sizes)}
    return out, counts


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.import_cycles")
    parser.add_argument("--check", action="store_true", help="exit 1 unless every count is 0")
    args = parser.parse_args(list(argv) if argv is not None else None)
    lines, counts = report()
    for line in lines:
        print(line)
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
    return 1 if args.check and any(counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
