"""miniq's import graph: its wings, the arrows between them, circles and floors.

    python3 tests/import_graph.py

Every import of a miniq module counts: at the top of a module, deferred
(inside a function) and for type checkers only (``if TYPE_CHECKING``).  A
*floor* is one step of the longest chain of imports (modules in a circle
count as one); the linter test (test_linters.py) holds the wings to their
order and the graph to no circle.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "miniq"

#: The wings, lowest first: a module imports only from its own wing and lower
#: ones.  The package's own modules (``__init__``: the public face and the
#: version; ``__main__``) stand outside the order.
WINGS = ("core", "store", "systemd", "run", "serve", "cli")


def modules() -> dict[str, Path]:
    """Every module by its name under the package: ``store.queue``, ``__init__``."""
    return {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))}


def _package_of(module: str) -> list[str]:
    """The package a module's relative imports start from, as parts under miniq."""
    return module.split(".")[:-1]


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The miniq modules ``module`` imports, however and wherever."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = _package_of(module)
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = [*base, *(node.module.split(".") if node.module else [])]
            name = ".".join(target)
            for alias in node.names:
                sub = ".".join([*target, alias.name])
                if sub in known:
                    found.add(sub)  # from ..core import files
                elif name in known:
                    found.add(name)  # from ..core.files import fsync
                elif not target:
                    found.add("__init__")  # from .. import __version__
                elif ".".join([*target, "__init__"]) in known:
                    found.add(".".join([*target, "__init__"]))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for full in names:
                if full == "miniq" or full.startswith("miniq."):
                    rest = full.split(".")[1:]
                    found.add(".".join(rest) if ".".join(rest) in known else "__init__")
    found.discard(module)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {module: imports(module, path, known) for module, path in found.items()}


def wing_of(module: str) -> str | None:
    head = module.split(".")[0]
    return head if head in WINGS else None


def _components(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), each a circle if it has more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    return [c for c in _components(g) if len(c) > 1]


def floors(g: dict[str, set[str]]) -> tuple[int, list[str]]:
    """The number of floors and the longest chain (a circle is one floor)."""
    comps = _components(g)
    comp_of = {m: i for i, c in enumerate(comps) for m in c}

    def below(c: int) -> set[int]:
        return {comp_of[w] for m in comps[c] for w in g[m]} - {c}

    @cache
    def depth(c: int) -> int:
        return 1 + max((depth(n) for n in below(c)), default=0)

    c = max(range(len(comps)), key=lambda i: (depth(i), comps[i]))
    chain = []
    while True:
        chain.append("/".join(comps[c]))
        nxt = below(c)
        if not nxt:
            break
        c = max(nxt, key=lambda i: (depth(i), comps[i]))
    return len(chain), chain


def wing_arrows(g: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(from wing, to wing) -> the imports that make the arrow."""
    arrows: dict[tuple[str, str], list[str]] = {}
    for module, deps in g.items():
        for dep in deps:
            a, b = wing_of(module), wing_of(dep)
            if a and b and a != b:
                arrows.setdefault((a, b), []).append(f"{module} -> {dep}")
    return arrows


def main() -> None:
    g = graph()
    for wing in WINGS:
        names = sorted(m.split(".", 1)[1] for m in g if wing_of(m) == wing and "." in m and not m.endswith("__init__"))
        print(f"{wing}: {' '.join(names)}")
    print("arrows between wings (from -> to: imports):")
    for (a, b), why in sorted(wing_arrows(g).items(), key=lambda kv: (WINGS.index(kv[0][0]), WINGS.index(kv[0][1]))):
        up = "  UP" if WINGS.index(b) > WINGS.index(a) else ""
        print(f"  {a} -> {b}: {len(why)}{up}")
    print(f"circles: {circles(g) or 'none'}")
    count, chain = floors(g)
    print(f"floors: {count}")
    print("longest chain: " + " -> ".join(chain))


if __name__ == "__main__":
    main()
