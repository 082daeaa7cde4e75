"""The layout's rules: simulators are clients of the library (never imported by it), and the
library's modules import each other without a circle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """Modules imported when `path` is imported (module level, outside `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node):
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names.add(child.module)
            elif isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                break  # imports inside functions run later
    return names


def library_graph() -> dict[str, set[str]]:
    """module -> library modules it imports; a package's __init__ counts as an edge only from
    outside that package (every submodule passes through its own package's __init__)."""
    files = {module_name(p): p for p in (ROOT / "mflow_sbi").rglob("*.py")}
    packages = {module_name(p) for p in (ROOT / "mflow_sbi").rglob("__init__.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        for imported in top_level_imports(path):
            if imported not in files:
                continue
            if imported in packages and (name == imported or name.startswith(imported + ".")):
                continue
            targets.add(imported)
        graph[name] = targets
    return graph


def test_the_library_never_imports_the_simulators():
    offenders = {
        module_name(p): sorted(i for i in _all_imports(p) if i.split(".")[0] == "simulators")
        for p in (ROOT / "mflow_sbi").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def _all_imports(path: Path) -> set[str]:
    """Every module `path` imports, also inside functions."""
    nodes = list(ast.walk(ast.parse(path.read_text())))
    return {n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module} | {
        a.name for n in nodes if isinstance(n, ast.Import) for a in n.names
    }


def test_library_modules_import_without_a_circle():
    graph = library_graph()
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            assert state.get(target) != "open", "import circle: " + " -> ".join(path[path.index(target) :] + [target])
            if target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert len(graph) > 30  # the walk saw the library
