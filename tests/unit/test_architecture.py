"""The layout rules of the guide: who may import pyfuse3, boto3 and diskcache."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "rangefs"
ALLOWED = {
    "pyfuse3": {"fuse_ops.py", "mount.py"},
    "boto3": {"s3.py"},
    "botocore": {"s3.py"},
    "diskcache": {"chunk_cache.py"},
    "sqlite3": {"chunk_cache.py", "metadata_index.py"},  # diskcache's errors; the index
    "prometheus_client": {"metrics.py"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_only_the_owner_imports_a_library(path):
    for library in imported_modules(path) & ALLOWED.keys():
        assert path.name in ALLOWED[library], f"{path.name} imports {library}"


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_only_the_cli_picks_exit_statuses(path):
    """Library modules raise UserError/UsageError; cli.py maps them to 1/2 (and __main__
    hands main()'s status to the interpreter)."""
    if path.name in ("cli.py", "__main__.py"):
        return
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            assert name not in ("SystemExit", "exit", "_exit"), f"{path.name}: {name}"
