"""The store seam, read from the source: one chooser, called once per use case, no back doors.

tests/integration/backends/test_store_choice.py proves the same at run time, route by route, against the
database, OpenBao and moto; this reads the modules so a new use case or a shortcut is caught before it runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import broker.services.secrets
import broker.services.stores

SERVICES = Path(broker.services.secrets.__file__).parent
STORES = Path(broker.services.stores.__file__).parent
# The use cases and every part of the database store: none of them may look at the backends file.
NOT_UPSTREAM = [SERVICES / "secrets.py", *(STORES / f for f in ("base.py", "database.py", "sealing.py"))]
ALL = [SERVICES / "secrets.py", *sorted(STORES.glob("*.py"))]


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _choose_calls(node: ast.AST) -> int:
    return sum(
        1
        for n in ast.walk(node)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "choose"
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == "stores"
    )


def test_each_use_case_chooses_its_store_exactly_once() -> None:
    """Every public use case of services.secrets calls stores.choose once (the read: once, in its unit)."""
    functions = {
        n.name: n for n in _tree(SERVICES / "secrets.py").body if isinstance(n, ast.AsyncFunctionDef)
    }
    public = [name for name in functions if not name.startswith("_") and name != "read_secret"]
    assert {"write_secret", "delete_secret", "list_secrets", "resolve", "generate_secret"} <= set(public)
    for name in public:
        assert _choose_calls(functions[name]) == 1, name
    # The read chooses inside its unit of work, so the choice shares the token look-up's transaction.
    assert _choose_calls(functions["read_secret"]) == 0
    assert _choose_calls(functions["_read_in"]) == 1


def test_only_the_chooser_reads_the_backends_file() -> None:
    """Nothing but stores.choose (and the upstream store it hands the routes to) looks at `backends`."""
    for path in NOT_UPSTREAM:
        names = [n for n in ast.walk(_tree(path)) if isinstance(n, ast.Attribute) and n.attr == "backends"]
        assert not names, f"{path.name}:{names[0].lineno} reads the backends file" if names else ""


def test_no_function_local_imports_nor_private_names_across_modules() -> None:
    """Imports sit at the top of each module and name only public names."""
    for path in ALL:
        tree = _tree(path)
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                local = [n for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)]
                assert not local, (
                    f"{path.name}:{local[0].lineno}: an import inside {fn.name}" if local else ""
                )
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("broker"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name}:{node.lineno} imports {private}"
