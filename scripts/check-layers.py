#!/usr/bin/env python3
"""Checks the crate's layering (run from anywhere; exit 1 on a violation).

Every file under src/<layer>/ belongs to one layer. A module may use modules of its own
layer and of the layers before it in LAYERS, never one after it; `source` and `http` are
both outermost and may not use each other. No two modules may depend on each other in a
circle (parent/child pairs excepted: a `mod.rs` declares its children, and children may
name the parent's items).

A dependency is any `crate::a::b` path in the file (doc comments included, grouped
`crate::{a, b::c}` imports expanded) and any `super::` path, resolved to the module it
names. Unit-test modules (`#[cfg(test)] mod tests`) are not counted.
"""
import os
import re
import sys

# Inner to outer. Same-rank layers may not use each other.
LAYERS = {"core": 0, "provider": 1, "state": 2, "source": 3, "http": 3}
# Files at the top of src/ that the binary uses; they may not use any layer.
SUPPORT = {"telemetry", "healthcheck"}

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def modules():
    """module path (tuple) -> file path, for every file of the library."""
    out = {}
    for root, _, names in os.walk(ROOT):
        for n in names:
            if not n.endswith(".rs"):
                continue
            p = os.path.join(root, n)
            rel = os.path.relpath(p, ROOT)[:-3].split(os.sep)
            if rel == ["main"]:
                continue  # the binary: wiring only, it may use everything
            if rel[-1] in ("mod", "lib"):
                rel = rel[:-1]
            out[tuple(rel)] = p
    return out


def expand(prefix, body):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (as lists of segments)."""
    paths = []
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    for part in parts:
        part = part.strip()
        if not part:
            continue
        m = re.match(r"([\w:]*?)(?:::)?\{(.*)\}$", part, re.S)
        if m:
            head = [s for s in m.group(1).split("::") if s]
            paths += expand(prefix + head, m.group(2))
        else:
            paths.append(prefix + [s for s in re.split(r"::|\s+as\s+", part)[0].split("::") if s])
    return paths


def references(text):
    """Every path a file names, as (kind, segments): kind is 'crate' or 'super'."""
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
    refs = []
    for kind in ("crate", "super"):
        for m in re.finditer(rf"\b{kind}::\{{", text):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            refs += [(kind, p) for p in expand([], text[m.end():i - 1])]
        for m in re.finditer(rf"\b{kind}((?:::[A-Za-z_]\w*)+)", text):
            refs.append((kind, m.group(1).strip(":").split("::")))
    return refs


def resolve(mods, here, is_dir_module, kind, segs):
    """The longest module prefix a path names, or None."""
    if kind == "crate":
        base = []
    else:
        # `super` of a mod.rs file is the folder's parent; of a plain file, its folder.
        base = list(here[:-1]) if here else []
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    full = base + segs
    for k in range(len(full), 0, -1):
        if tuple(full[:k]) in mods:
            return tuple(full[:k])
    return None


def main():
    mods = modules()
    graph = {m: set() for m in mods}
    problems = []
    for m, path in mods.items():
        text = open(path, encoding="utf-8").read()
        is_dir = os.path.basename(path) == "mod.rs"
        for kind, segs in references(text):
            t = resolve(mods, m, is_dir, kind, segs)
            if t is None or t == m or t[: len(m)] == m or m[: len(t)] == t:
                continue  # itself, a child or an ancestor
            graph[m].add(t)
    for m, deps in sorted(graph.items()):
        for t in sorted(deps):
            lm, lt = m[0] if m else "", t[0] if t else ""
            name = "::".join(m)
            if lm in SUPPORT:
                problems.append(f"{name} uses {'::'.join(t)}: support modules use no layer")
            elif lm in LAYERS and lt in LAYERS and lm != lt:
                if LAYERS[lt] >= LAYERS[lm]:
                    problems.append(
                        f"{name} ({lm}) uses {'::'.join(t)} ({lt}): "
                        f"a layer may only use the layers inside it"
                    )
    # Circles (Tarjan's strongly connected components).
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                comps.append(sorted("::".join(c) for c in comp))

    for v in graph:
        if v not in index:
            visit(v)
    for c in comps:
        problems.append("import cycle: " + " <-> ".join(c))
    edges = sum(len(d) for d in graph.values())
    if problems:
        print("check-layers: FAILED", file=sys.stderr)
        for p in problems:
            print("  - " + p, file=sys.stderr)
        return 1
    print(f"check-layers: ok ({len(mods)} modules, {edges} dependencies, no cycles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
