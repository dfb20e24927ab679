"""Print csmae's import graph between folders (floors), from the source, with no import of csmae.

Usage:
    python scripts/import_graph.py            # folder -> folder edges with counts, and any cycle
    python scripts/import_graph.py --modules  # module -> module edges
    python scripts/import_graph.py --check    # exit 1 on a data<->geo cycle, geo->data, or an engine
                                              # named in retrieval/index*.py

Every `import csmae.x` / `from csmae.x import y` / relative import is counted, also those inside
functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "csmae"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[str]:
    """Absolute csmae module names imported by one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "csmae"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "csmae":
                continue
            found.append(target)
            # `from csmae.data import store` imports the module csmae.data.store
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if (ROOT.parent / Path(*candidate.split("."))).with_suffix(".py").exists():
                    found.append(candidate)
    return found


def floor(module: str) -> str:
    """The folder a module lives in: csmae.data.scenes.cut -> data; csmae.sensors -> sensors."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "csmae (package face)"


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        edges[module_name(path)] = {m for m in imports_of(path) if m != module_name(path)}
    return edges


def folder_edges(edges: dict[str, set[str]]) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for src, targets in edges.items():
        for target in targets:
            a, b = floor(src), floor(target)
            if a != b:
                counts[(a, b)] += 1
    return counts


def problems(edges: dict[str, set[str]]) -> list[str]:
    counts = folder_edges(edges)
    found = []
    if counts[("geo", "data")]:
        users = sorted(
            s for s, t in edges.items() if floor(s) == "geo" and any(floor(x) == "data" for x in t)
        )
        found.append(f"geo imports data ({counts[('geo', 'data')]} imports): {', '.join(users)}")
    face = sorted(s for s, t in edges.items() if "csmae" in t and s not in ("csmae", "csmae.__main__"))
    if face:
        found.append(f"modules importing the package face csmae/__init__.py: {', '.join(face)}")
    engines = ("csmae.retrieval.backends.faiss", "csmae.retrieval.backends.milvus")
    for module in ("csmae.retrieval.index", "csmae.retrieval.index_grow"):
        named = sorted(edges.get(module, set()) & set(engines))
        if named:
            found.append(f"{module} imports engines: {', '.join(named)}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modules", action="store_true", help="module-level edges")
    parser.add_argument("--check", action="store_true", help="exit 1 when a layering rule is broken")
    args = parser.parse_args()
    edges = graph()
    if args.modules:
        for src in sorted(edges):
            for target in sorted(edges[src]):
                print(f"{src} -> {target}")
    else:
        counts = folder_edges(edges)
        for (a, b), n in sorted(counts.items()):
            back = "  <-> cycle" if counts.get((b, a)) else ""
            print(f"{a:>22} -> {b:<22} {n:4d}{back}")
    found = problems(edges)
    for line in found:
        print("PROBLEM:", line)
    return 1 if (args.check and found) else 0


if __name__ == "__main__":
    sys.exit(main())
