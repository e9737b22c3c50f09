"""No two modules of the package import each other, even through a chain or an import inside a function:
such a circle works only in one import order and breaks when someone imports the other module first."""

import ast
from pathlib import Path

import zerosearch

PACKAGE = Path(zerosearch.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["zerosearch", *path.relative_to(PACKAGE).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _imports(name: str, path: Path, is_package: bool, modules) -> set[str]:
    here = name.split(".") if is_package else name.split(".")[:-1]
    targets = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module
            targets += [f"{base}.{a.name}" for a in node.names]  # `from pkg import submodule` or a name
    deps = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            deps.add(target)
    return deps


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, is_package, modules) for name, (path, is_package) in modules.items()}
    cycles, done = [], set()

    def visit(name, chain):
        if name in chain:
            cycles.append(chain[chain.index(name):] + [name])
            return
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, chain + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert len(modules) > 40 and not cycles, [" -> ".join(c) for c in cycles]
