"""The code's layers: imports read top to bottom (no cycle, even through imports inside functions), no
module reaches into another's private names, and the record-reading commands stay free of torch."""

import ast
import subprocess
import sys

from conftest import ROOT

# (importer, private name) pairs known and owned elsewhere: drop one when it is made public
KNOWN_PRIVATE: set[tuple[str, str]] = set()


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted([*ROOT.glob("suite/**/*.py"), *ROOT.glob("tasks/*.py")]):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text())
    return out


def _imports(modules: dict[str, ast.Module]) -> list[tuple[str, str, str]]:
    """(importer, module imported, name imported or "") for every import anywhere in a module, inside
    functions too (a lazy import still makes a cycle, only later)."""
    out = []
    for name, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out += [(name, a.name, "") for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:  # `from suite import harness` imports the module suite.harness
                    full = f"{node.module}.{a.name}"
                    out.append((name, full, "") if full in modules else (name, node.module, a.name))
    return [(a, b, n) for a, b, n in out if b.split(".")[0] in ("suite", "tasks")]


def _layer(module: str) -> str:
    """suite.models.lstm -> suite.models: a package is one layer, a top-level module is its own."""
    return ".".join(module.split(".")[:2])


def test_the_layers_have_no_import_cycle():
    edges: dict[str, set[str]] = {}
    for importer, imported, _ in _imports(_modules()):
        if _layer(importer) != _layer(imported):
            edges.setdefault(_layer(importer), set()).add(_layer(imported))
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        assert node not in path, "import cycle: " + " -> ".join(path[path.index(node) :] + [node])
        if node not in done:
            for nxt in sorted(edges.get(node, ())):
                visit(nxt, path + [node])
            done.add(node)

    for layer in sorted(edges):
        visit(layer, [])


def test_no_module_imports_another_modules_private_names():
    private = {
        (importer, f"{imported}.{name}")
        for importer, imported, name in _imports(_modules())
        if name.startswith("_") and not name.startswith("__")
    }
    assert private <= KNOWN_PRIVATE, sorted(private - KNOWN_PRIVATE)


def test_report_and_compare_do_not_import_torch(smoke_run, tmp_path):
    """The CLI promises it (they read records only): checked on the modules they really import."""
    script = (
        "import sys\n"
        "from suite.cli import main\n"
        f"assert main(['report', {str(smoke_run)!r}, '--out', {str(tmp_path / 'rep')!r}]) == 0\n"
        f"assert main(['compare', {str(smoke_run)!r}, {str(smoke_run)!r}]) == 0\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'transformers'})\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
