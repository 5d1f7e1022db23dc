"""The import graph of the vcar_tf package, checked against its layering rules.

    python tools/import_graph.py [--root .] [--check]

Reads every module under vcar_tf/ with `ast` (nothing is imported or run) and prints: the floors
of the package's parts (errors, video, models, ...: its top-level modules and folders) and of its
modules (floor 0 imports nothing of the package; floor n imports something of floor n-1; the
members of a circle share a floor), the import
circles, the imports that go up the declared layers, the imports of command modules from
outside cli/, and the function-level imports that exist only to dodge a circle (moving them to
module level would close one). With --check it exits 1 when any rule is broken.
"""

import argparse
import ast
import os
import sys

PACKAGE = "vcar_tf"

# Declared layers, lowest first; an import may only go to the same layer or a lower one.
LAYERS = [
    ("errors", "allocator", ""),
    ("fileutil",),
    ("video", "metrics", "weights", "presets", "precision"),
    ("data", "ops"),
    ("models",),
    ("export", "reporting"),
    ("inference",),
    ("train", "serving"),
    ("cli",),
]
# Rules between parts of the same or neighbouring layers: (importer part, imported part).
FORBIDDEN = [("export", "train"), ("inference", "train"), ("data", "models"), ("models", "data"),
             ("ops", "models"), ("export", "inference"),
             ("serving", "train"), ("train", "serving")]


def module_name(root, path):
    rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def read_modules(root):
    """{module: ast tree} of every .py file of the package."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(root, PACKAGE)):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                with open(path) as fh:
                    modules[module_name(root, path)] = (path, ast.parse(fh.read(), path))
    return modules


def is_command(name, tree):
    """A command: under cli/, or a module that runs main() when executed (`if __name__ == ...`)."""
    if name.startswith(f"{PACKAGE}.cli.") or name.endswith(".__main__"):
        return True
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and \
                isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__":
            return True
    return False


def resolve(name, modules):
    """The package module an imported dotted name refers to (the longest known prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(name, tree, modules):
    """[(imported module, lineno, lazy)] of one module; `lazy`: inside a function."""
    found = []

    def visit(node, lazy):
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    target = resolve(alias.name, modules)
                    if target:
                        found.append((target, child.lineno, lazy))
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    target = resolve(f"{child.module}.{alias.name}", modules) or resolve(child.module, modules)
                    if target:
                        found.append((target, child.lineno, lazy))
            visit(child, inner)

    visit(tree, False)
    # `from pkg import mod` inside pkg/__init__ is the package loading its own module
    return [(t, line, lazy) for t, line, lazy in found if t != name]


def part(name):
    """The top part of a module: 'models' for vcar_tf.models.stdf.model, 'errors' for vcar_tf.errors."""
    rest = name.split(".")[1:]
    return rest[0] if rest else ""


def layer_of(name):
    p = part(name)
    for i, layer in enumerate(LAYERS):
        if p in layer:
            return i
    return None


def strongly_connected(graph):
    """Tarjan's strongly connected components of {node: set(successors)}."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def reaches(graph, start, goal):
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        if v == goal:
            return True
        if v not in seen:
            seen.add(v)
            todo.extend(graph[v])
    return False


def analyse(root):
    modules = read_modules(root)
    edges = {m: imports_of(m, tree, modules) for m, (_, tree) in modules.items()}
    graph = {m: {t for t, _, _ in e} for m, e in edges.items()}
    eager = {m: {t for t, _, lazy in e if not lazy} for m, e in edges.items()}
    circles = [c for c in strongly_connected(graph) if len(c) > 1]
    component = {m: i for i, c in enumerate(strongly_connected(graph)) for m in c}
    floors = {}

    def floor(m, path=()):
        if m in floors:
            return floors[m]
        deps = [t for t in graph[m] if component[t] != component[m]]
        floors[m] = 1 + max((floor(t) for t in deps), default=-1)
        return floors[m]

    for m in modules:
        floor(m)
    commands = {m for m, (_, tree) in modules.items() if is_command(m, tree)}
    upward, forbidden, command_imports, dodges = [], [], [], []
    for m, e in sorted(edges.items()):
        for t, line, lazy in e:
            where = f"{modules[m][0]}:{line}"
            lm, lt = layer_of(m), layer_of(t)
            shim = m in commands and t in commands  # python -m entry points forwarding to cli/
            if lm is not None and lt is not None and lt > lm and not shim:
                upward.append(f"{where}: {m} -> {t} (layer {lm} imports layer {lt})")
            if (part(m), part(t)) in FORBIDDEN:
                forbidden.append(f"{where}: {m} -> {t} ({part(m)}/ must not import {part(t)}/)")
            if t in commands and m not in commands:
                command_imports.append(f"{where}: {m} imports the command module {t}")
                command_imports = list(dict.fromkeys(command_imports))
            if lazy and reaches(eager, t, m):
                dodges.append(f"{where}: {m} -> {t} is inside a function; at module level it would close a circle")
    parts = {}
    for m, targets in graph.items():  # a shim forwarding to cli/ (models/__main__) does not tie its part to cli
        parts.setdefault(part(m) or PACKAGE, set()).update(
            part(t) or PACKAGE for t in targets if part(t) != part(m) and not (m in commands and t in commands))
    part_component = {p: i for i, c in enumerate(strongly_connected(parts)) for p in c}
    part_floors = {}

    def part_floor(p):
        if p not in part_floors:
            part_floors[p] = -1
            deps = [t for t in parts[p] if part_component[t] != part_component[p]]
            part_floors[p] = 1 + max((part_floor(t) for t in deps), default=-1)
        return part_floors[p]

    for p in parts:
        part_floor(p)
    floors = {"modules": floors, "parts": part_floors}
    outside = [f"{modules[m][0]}: part {part(m)!r} is in no declared layer" for m in sorted(modules)
               if layer_of(m) is None and m not in commands]
    return modules, floors, circles, upward + outside, forbidden, command_imports, dodges, commands


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=".", help="the repository root (holding vcar_tf/)")
    p.add_argument("--check", action="store_true", help="exit 1 when a rule is broken")
    args = p.parse_args(argv)
    if not os.path.isdir(os.path.join(args.root, PACKAGE)):
        print(f"error: {args.root} holds no {PACKAGE}/ package folder (give the repository root)", file=sys.stderr)
        return 2
    modules, floors, circles, upward, forbidden, command_imports, dodges, commands = analyse(args.root)
    parts, floors = floors["parts"], floors["modules"]
    print(f"{len(modules)} modules in {len(parts)} parts; {max(parts.values()) + 1} floors of parts, "
          f"{max(floors.values()) + 1} floors of modules; {len(circles)} circles")
    for n in range(max(parts.values()) + 1):
        print(f"part floor {n}: {', '.join(sorted(p for p, f in parts.items() if f == n))}")
    for n in range(max(floors.values()) + 1):
        names = sorted(m[len(PACKAGE) + 1:] or PACKAGE for m, f in floors.items() if f == n)
        print(f"module floor {n}: {', '.join(names)}")
    print(f"command modules: {', '.join(sorted(commands)) or 'none'}")
    problems = 0
    for title, items in (("import circles", [" <-> ".join(c) for c in circles]),
                         ("imports up the layers (or outside them)", upward), ("forbidden imports", forbidden),
                         ("command modules imported by the library", command_imports),
                         ("lazy imports that dodge a circle", dodges)):
        print(f"{title}: {len(items)}")
        for item in items:
            print(f"  {item}")
        problems += len(items)
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
