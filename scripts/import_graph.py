"""The package's import graph: units, edges, imports that run from a lower layer up, and circles.

    python scripts/import_graph.py            # figures and every offending edge
    python scripts/import_graph.py --check    # exit 1 on an upward import or a circle (the suite runs this)

A unit is a top-level module (`curation/config.py`) or subpackage (`curation/runner/`). Every
`import` counts, including those inside functions: a deferred import still ties the two together.
Circles are looked for between modules (`curation.io.http` <-> `curation.io.s3fetch` is one).
LAYERS is the intended order, lowest first: a unit may import from its own layer and below.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "curation"
LAYERS: list[set[str]] = [
    {"__init__", "schema", "arrowutil", "io"},  # no knowledge of stages, runs or models
    {"config"},
    {"imaging", "models", "dedup", "clustering"},
    {"stages"},  # what each step computes; no Ray job code
    {"manifests"},  # output formats: tars and the manifest
    {"runner"},  # runs the DAG on Ray
    {"progress", "report", "sample_crawl", "training"},
    {"cli", "weights_cli"},
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Modules of the package that `path` imports (`from curation.x import y` may name a module y)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "curation")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            if base.split(".")[0] != "curation":
                continue
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = {t for t in imports_of(path, name) if t in files}
        # `from curation.io import fs` names both the package and the module: keep the module.
        edges[name] = {t for t in targets if t != name and not any(o.startswith(t + ".") for o in targets)}
    return edges


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def report() -> tuple[dict[str, int], list[str], list[list[str]]]:
    edges = graph()
    layer = {u: i for i, units in enumerate(LAYERS) for u in units}
    unit_edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for src, targets in edges.items():
        for t in targets:
            if unit(src) != unit(t):
                unit_edges[(unit(src), unit(t))].append(f"{src} -> {t}")
    units = {unit(m) for m in edges}
    unknown = sorted(u for u in units if u not in layer)
    upward = [f"{a} -> {b}: " + "; ".join(sorted(how)) for (a, b), how in sorted(unit_edges.items())
              if layer.get(a, -1) < layer.get(b, -1)]
    figures = {"units": len(units), "unit_edges": len(unit_edges), "module_edges": sum(map(len, edges.values()))}
    problems = [f"unit {u} is in no layer (add it to LAYERS)" for u in unknown] + upward
    return figures, problems, circles(edges)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 on an upward import or a circle")
    args = ap.parse_args()
    figures, upward, cycles = report()
    print(" ".join(f"{k}={v}" for k, v in figures.items()) + f" upward={len(upward)} circles={len(cycles)}")
    for line in upward:
        print(f"upward: {line}")
    for comp in cycles:
        print(f"circle: {' <-> '.join(comp)}")
    return 1 if args.check and (upward or cycles) else 0


if __name__ == "__main__":
    sys.exit(main())
