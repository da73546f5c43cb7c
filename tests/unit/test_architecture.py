"""The layout rules of the guide: who may import pyfuse3, boto3 and diskcache, and which
folder may import which (layers import only downwards)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "rangefs"
MODULES = sorted(PACKAGE.rglob("*.py"))
ALLOWED = {
    "pyfuse3": {"fuse_ops.py", "mount.py"},
    "boto3": {"s3.py"},
    "botocore": {"s3.py"},
    "diskcache": {"chunk_cache.py"},
    "sqlite3": {"chunk_cache.py", "metadata_index.py"},  # diskcache's errors; the index
    "prometheus_client": {"metrics.py"},
}


# Higher layers first; a folder may import its own layer, lower ones and the top-level leaves.
LAYERS = (("daemon", "commands"), ("fs",), ("engine",), ("cache",), ("remote",))
LEAVES = {"errors", "keys", "chunks", "stats", "config", "options"}


def layer_of(folder: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if folder in names)


def rangefs_imports(path: Path) -> set[str]:
    """The rangefs modules ``path`` imports, as dotted names below ``rangefs``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "rangefs":
                continue
            if len(parts) > 1:
                names.add(".".join(parts[1:]))
            else:
                names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if p.parent != PACKAGE],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_a_folder_imports_only_its_layer_and_those_below(path):
    mine = layer_of(path.parent.name)
    for name in rangefs_imports(path):
        folder = name.split(".")[0]
        if (PACKAGE / folder).is_dir():
            assert layer_of(folder) >= mine, f"{path.relative_to(PACKAGE)} imports {name}"
        else:
            assert folder in LEAVES, f"{path.relative_to(PACKAGE)} imports the top-level {name}"


def test_every_folder_has_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == {name for names in LAYERS for name in names}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_owner_imports_a_library(path):
    for library in imported_modules(path) & ALLOWED.keys():
        assert path.name in ALLOWED[library], f"{path.name} imports {library}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_cli_picks_exit_statuses(path):
    """Library modules raise UserError/UsageError; cli.py maps them to 1/2 (and __main__
    hands main()'s status to the interpreter)."""
    if path.name in ("cli.py", "__main__.py"):
        return
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            assert name not in ("SystemExit", "exit", "_exit"), f"{path.name}: {name}"
