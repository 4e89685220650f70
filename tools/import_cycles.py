"""Count the import cycles in `service` and `bots`: the before/after figure of the issue 15 restructure.

    python tools/import_cycles.py [--type-checking] [--list]

The graph is grimp's (import-linter's graph library), built from the source in the current directory:
every `import` in a module, including those inside functions (a lazy import is still a dependency), and
by default not those under `if TYPE_CHECKING:` (they name a type for the checker and import nothing at
run time; `--type-checking` counts them too).

Printed figures:
- module cycles: elementary cycles between modules (Johnson's algorithm), e.g. a -> b -> a;
- tangles: strongly connected groups of modules (every module in one reaches every other), their sizes;
- package cycles: the same at the level of `service.<package>` / `bots`, where the layering is drawn.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp

PACKAGES = ("service", "bots")
CYCLE_LIMIT = 100_000
"""Stop counting there: a figure that large only says "tangled", and Johnson's algorithm is exponential."""

Graph = dict[str, set[str]]


def module_graph(*, type_checking: bool) -> Graph:
    sys.path.insert(0, str(Path.cwd()))
    imports = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=not type_checking, cache_dir=None)
    return {module: set(imports.find_modules_directly_imported_by(module)) for module in imports.modules}


def package_of(module: str) -> str:
    """`service.approvals.votes` -> `service.approvals`; every channel module -> `bots`."""
    parts = module.split(".")
    return "bots" if parts[0] == "bots" else ".".join(parts[:2])


def package_graph(modules: Graph) -> Graph:
    packages: Graph = {}
    for module, imported in modules.items():
        edges = packages.setdefault(package_of(module), set())
        edges.update(package_of(other) for other in imported if package_of(other) != package_of(module))
    return packages


def tangles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found, key=len, reverse=True)


def cycles(graph: Graph, limit: int = CYCLE_LIMIT) -> list[list[str]]:
    """Elementary cycles (Johnson's idea: each cycle is found once, from its smallest module), up to `limit`."""
    found: list[list[str]] = []
    for component in tangles(graph):
        members = set(component)
        for start in component:
            allowed = {m for m in members if m >= start}
            path = [start]
            work = [iter(sorted(graph[start] & allowed))]
            on_path = {start}
            while work:
                child = next(work[-1], None)
                if child is None:
                    work.pop()
                    on_path.discard(path.pop())
                    continue
                if child == start:
                    found.append([*path, start])
                    if len(found) >= limit:
                        return found
                elif child not in on_path:
                    path.append(child)
                    on_path.add(child)
                    work.append(iter(sorted(graph[child] & allowed)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--type-checking", action="store_true", help="count imports under `if TYPE_CHECKING:` too")
    parser.add_argument("--list", action="store_true", help="print every cycle and tangle")
    args = parser.parse_args()
    modules = module_graph(type_checking=args.type_checking)
    packages = package_graph(modules)
    module_cycles, module_tangles = cycles(modules), tangles(modules)
    package_cycles = cycles(packages)
    more = "+" if len(module_cycles) >= CYCLE_LIMIT else ""
    what = "all imports" if args.type_checking else "run-time imports (TYPE_CHECKING left out)"
    print(f"{len(modules)} modules, {sum(map(len, modules.values()))} imports between them; {what}")
    print(f"module cycles: {len(module_cycles)}{more}")
    print(f"tangles: {len(module_tangles)} (sizes {[len(t) for t in module_tangles]})")
    print(f"package cycles: {len(package_cycles)}")
    if args.list:
        for cycle in package_cycles:
            print("  package cycle:", " -> ".join(cycle))
        for tangle in module_tangles:
            print("  tangle:", ", ".join(tangle))
        for cycle in module_cycles:
            print("  cycle:", " -> ".join(cycle))


if __name__ == "__main__":
    main()
