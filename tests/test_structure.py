"""The package's structure: no import cycle between modules of ``liif`` (lazy imports inside functions
count; imports under ``if TYPE_CHECKING:`` do not) and no module over 450 lines.

``python tests/test_structure.py`` prints every module with its line count, grouped by import
layer (layer 0 imports no other module of the package; layer n imports modules of layers < n).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "liif"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports at run time, at any depth of its code."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:  # from liif import api: the submodule
                    found.add(sub)
                elif base in known:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return {m for m in found if m.startswith("liif")}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    g = {name: imported(path, name, known) for name, path in mods.items()}
    # Importing liif.a.b first runs liif/__init__ and liif/a/__init__; those are not cycles of b's.
    return {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in g.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def layers(g: dict[str, set[str]]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def level(v: str) -> int:
        if v not in depth:
            depth[v] = 0  # (no cycles: checked first)
            depth[v] = 1 + max((level(w) for w in g[v] if w in g), default=-1)
        return depth[v]

    for v in g:
        level(v)
    return depth


def test_no_import_cycle_in_the_package() -> None:
    found = cycles(graph())
    assert found == [], "import cycles (lazy imports count): " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_lazy_cycle(tmp_path: Path) -> None:
    """The checker itself: a cycle through an import inside a function is found, one under
    ``if TYPE_CHECKING:`` is not."""
    pkg = tmp_path / "liif"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from liif import b\n")
    (pkg / "b.py").write_text("def f():\n    from liif.a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from liif import a\n")
    known = {"liif", "liif.a", "liif.b", "liif.c"}
    g = {n: imported(pkg / f"{n.split('.')[-1]}.py", n, known) for n in ("liif.a", "liif.b", "liif.c")}
    assert g == {"liif.a": {"liif.b"}, "liif.b": {"liif.a"}, "liif.c": set()}
    assert cycles(g) == [["liif.a", "liif.b"]]


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_450_lines(name: str) -> None:
    n = len(modules()[name].read_text().splitlines())
    assert n <= MAX_LINES, f"{name} has {n} lines (at most {MAX_LINES}: split it along its concepts)"


def main() -> None:
    g = graph()
    found = cycles(g)
    # A cycle's modules share one layer (the cycle is printed first): condense each to one node.
    rep = {m: c[0] for c in found for m in c}
    cg: dict[str, set[str]] = {}
    for v, ws in g.items():
        cg.setdefault(rep.get(v, v), set()).update(rep.get(w, w) for w in ws if rep.get(w, w) != rep.get(v, v))
    for c in found:
        print(f"cycle of {len(c)} modules: {', '.join(c)}")
    depth = layers(cg)
    mods = modules()
    total = 0
    for d in sorted(set(depth.values())):
        names = sorted(n for n in g if depth[rep.get(n, n)] == d)
        print(f"layer {d}:")
        for n in names:
            lines = len(mods[n].read_text().splitlines())
            total += lines
            print(f"  {n:32s} {lines:4d}{'  (in the cycle)' if n in rep else ''}")
    print(f"{len(mods)} modules, {total} lines")


if __name__ == "__main__":
    main()
