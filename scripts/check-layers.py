#!/usr/bin/env python3
"""Checks the layering of src/ that lib.rs describes, from the `crate::` paths
each file names in code (comments and strings are ignored):

- no import cycle between files;
- each layer imports only itself and the layers its rule allows: the core
  nothing else, the store and the gRPC edge the core and `proto`, the shell
  everything below it;
- the core names neither etcd_client nor tonic nor prost.

Prints the file graph's size and exits 1 with what broke a rule."""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
ALLOWED = {
    "core": {"core"},
    "proto": {"proto", "core"},
    "store": {"store", "core", "proto"},
    "grpc": {"grpc", "core", "proto"},
    "shell": {"shell", "grpc", "store", "core", "proto"},
    "cli": {"cli", "proto", "core"},
    "gateway": {"gateway", "shell", "grpc", "cli", "proto", "core"},
}
FORBIDDEN_IN_CORE = re.compile(r"\b(etcd_client|tonic|prost|prost_types)::")


def code_of(text):
    """The text without comments and string literals."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def module_of(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return tuple(parts)


def main():
    files = {module_of(p): p for p in SRC.rglob("*.rs") if p.name not in ("lib.rs", "main.rs")}
    edges = {module: set() for module in files}
    problems = []
    for module, path in files.items():
        code = code_of(path.read_text())
        # Unit tests come last in a file; their `super` is the file itself.
        code = code.split("#[cfg(test)]")[0]
        layer = module[0]
        parent = module[:-1] if path.name != "mod.rs" else module[:-2]
        code = re.sub(r"\bsuper::", "crate::" + "".join(p + "::" for p in parent), code)
        paths = re.findall(r"\bcrate::((?:\w+::)*\w+)", code)
        # `use crate::a::{b, c::d}` names a::b and a::c::d.
        for prefix, group in re.findall(r"\bcrate::((?:\w+::)*)\{([^}]*)\}", code):
            paths += [prefix + item.strip().split(" as ")[0] for item in group.split(",") if item.strip()]
        for named in paths:
            parts = tuple(p for p in named.split("::") if p != "self")
            target = next((parts[:n] for n in range(len(parts), 0, -1) if parts[:n] in files), None)
            if target is None or target == module:
                continue
            edges[module].add(target)
            if target[0] not in ALLOWED.get(layer, {layer}):
                problems.append(f"{path.relative_to(SRC)}: layer {layer} may not import {'::'.join(target)}")
        if layer == "core" and FORBIDDEN_IN_CORE.search(code):
            problems.append(f"{path.relative_to(SRC)}: the core names {FORBIDDEN_IN_CORE.search(code).group(1)}")

    # Depth-first search for a cycle among files.
    state = {}

    def visit(module, stack):
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                problems.append("import cycle: " + " -> ".join("::".join(m) for m in cycle))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(files):
        if module not in state:
            visit(module, [])
    arrows = sum(len(t) for t in edges.values())
    print(f"check-layers: {len(files)} files, {arrows} imports between them")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
