"""The import graph of ``cpstream``, read with ``ast``, and the rules its layers keep.

    python -m tests.layers [PACKAGE_DIR]     # every module and what it imports, by layer

Layers, lowest first: ``domain`` (no HTTP, no WebSocket, no Redis), ``broker``
(the Redis publisher and feed: domain + txredisapi), ``streams`` (the
protocols: domain + Autobahn), ``web`` (REST, the ``/ws/`` tree, the site:
domain + streams + Klein), then the top level (the composition roots and the
programs), which may import anything.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cpstream"
LAYERS = ("domain", "broker", "streams", "web")
# What each layer may import beyond the standard library and its own package.
ALLOWED = {
    # psutil: the domain owns the children, and measures them (cpstream.domain.usage).
    "domain": {"twisted", "psutil", "cpstream.domain"},
    "broker": {"twisted", "txredisapi", "cpstream.domain", "cpstream.broker"},
    "streams": {"twisted", "autobahn", "txaio", "cpstream.domain", "cpstream.streams"},
    "web": {
        "twisted",
        "autobahn",
        "klein",
        "treq",
        "werkzeug",
        "prometheus_client",
        "cpstream.domain",
        "cpstream.streams",
        "cpstream.web",
    },
}
FORBIDDEN_IN_DOMAIN = (
    "twisted.web",
    "klein",
    "autobahn",
    "treq",
    "werkzeug",
    "txaio",
    "txredisapi",
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = (
        module_name(path, root).rsplit(".", 1)[0]
        if path.name != "__init__.py"
        else (module_name(path, root))
    )
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            if base in ("cpstream", *(f"cpstream.{layer}" for layer in LAYERS)):
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module name -> the modules it imports, for every module under ``root``."""
    return {module_name(path, root): imports_of(path, root) for path in sorted(root.rglob("*.py"))}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else "top"


def violations(root: Path = PACKAGE) -> list[str]:
    """Every import that breaks a layer's rule, as ``module -> imported``."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    found = []
    for module, imported in graph(root).items():
        layer = layer_of(module)
        if layer == "top":
            continue
        for name in imported:
            top = name.split(".")[0]
            if top in stdlib:
                continue
            allowed = ALLOWED[layer]
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                found.append(f"{module} -> {name}")
            elif layer == "domain" and name.startswith(FORBIDDEN_IN_DOMAIN):
                found.append(f"{module} -> {name}")
    return sorted(found)


def main() -> None:
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else PACKAGE
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for module, imported in graph(root).items():
        ours = sorted(i for i in imported if i.startswith("cpstream") and i in graph(root))
        print(f"{module}  [{layer_of(module)}]")
        for name in ours:
            print(f"    -> {name}")
            edges[(layer_of(module), layer_of(name))] += 1
    print("\nlayer -> layer (imports)")
    for (source, target), count in sorted(edges.items()):
        print(f"    {source:8} -> {target:8} {count}")
    broken = violations(root)
    print(f"\nviolations: {len(broken)}")
    for line in broken:
        print(f"    {line}")


if __name__ == "__main__":
    main()
