"""Two rules of the cloud's wiring, held by reading its source:

- the app's services are one typed :class:`cloud.container.AppContainer`, and only
  ``cloud/container.py`` touches ``app.state`` (everything else calls ``container(request)``);
- transactions and connections are opened by the unit of work (``cloud/db/uow.py``) alone:
  no ``.begin()``, ``.commit()``, ``.rollback()``, ``.connect()`` nor a bare session made from
  a sessionmaker anywhere else in ``cloud/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from cloud.container import AppContainer, app_container
from tests.cloud.conftest import Api

CLOUD = Path(__file__).resolve().parents[2] / "cloud"
ACCESSOR = "cloud/container.py"
UOW = "cloud/db/uow.py"
#: Opened outside the unit of work on purpose, by (file, function), with the reason.
OWN_TRANSACTIONS = {
    # The pool's "connect" event: the DBAPI connection's own setup (SET TIME ZONE), before
    # any unit of work may use it.
    ("cloud/db/engine.py", "_postgres_utc"),
}
#: Alembic runs each migration in the transactions it opens itself.
OWN_TRANSACTIONS_UNDER = "cloud/migrations/"
#: Names that hold a sessionmaker: calling one makes a session outside the unit of work.
SESSION_FACTORIES = {"sessions", "readers", "reads", "writers", "factory", "sessionmaker"}
TRANSACTION_CALLS = {"commit", "rollback", "connect"}


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _app_state(node: ast.AST) -> bool:
    """``app.state``, ``request.app.state``, ``conn.app.state``, ..."""
    return isinstance(node, ast.Attribute) and node.attr == "state" and _name(node.value) == "app"


def _opens_transaction(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    called = _name(node.func)
    bare = not node.args and not node.keywords
    if isinstance(node.func, ast.Attribute) and called in TRANSACTION_CALLS:
        return f".{called}()"
    if isinstance(node.func, ast.Attribute) and called == "begin" and bare:
        return ".begin()"
    if called in SESSION_FACTORIES and bare:
        return f"{called}() (a session of its own)"
    return None


def _functions(tree: ast.AST) -> dict[ast.AST, str]:
    """Each node inside a function, with the innermost function's name."""
    owner: dict[ast.AST, str] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                owner[node] = fn.name  # inner functions are walked later and win
    return owner


def offences(root: Path) -> list[str]:
    """``file:line: what`` for each breach of the two rules under ``root`` (a ``cloud/``)."""
    found: list[tuple[str, int, str]] = []
    for path in sorted(root.rglob("*.py")):
        rel = f"{root.name}/{path.relative_to(root).as_posix()}"
        tree = ast.parse(path.read_text(), str(path))
        owner = _functions(tree)
        for node in ast.walk(tree):
            if rel != ACCESSOR and _app_state(node):
                found.append((rel, node.lineno, "app.state (use cloud.container.container)"))
            what = _opens_transaction(node)
            exempt = (
                rel == UOW
                or rel.startswith(OWN_TRANSACTIONS_UNDER)
                or (rel, owner.get(node)) in OWN_TRANSACTIONS
            )
            if what is not None and not exempt:
                found.append((rel, node.lineno, f"{what} outside the unit of work ({UOW})"))
    return [f"{rel}:{line}: {what}" for rel, line, what in sorted(found)]


def test_only_the_accessor_touches_app_state_and_only_the_uow_opens_transactions() -> None:
    found = offences(CLOUD)
    assert found == [], "\n".join(found)


def test_the_scan_sees_each_kind_of_breach(tmp_path: Path) -> None:
    root = tmp_path / "cloud"
    (root / "db").mkdir(parents=True)
    (root / "routers.py").write_text(
        "def route(request, engine, db, sessions, capture_sessions):\n"
        "    hub = request.app.state.live_hub\n"
        "    with sessions.begin() as s:\n"
        "        s.commit()\n"
        "    with engine.connect() as conn:\n"
        "        conn.rollback()\n"
        "    with sessions() as s:\n"
        "        pass\n"
        "    capture_sessions.begin(db, 1)  # a service named begin: not a transaction\n"
        "    with db.begin_nested():  # a savepoint inside the unit of work\n"
        "        pass\n"
    )
    (root / "db" / "uow.py").write_text("def t(factory):\n    factory().commit()\n")
    (root / "db" / "engine.py").write_text("def _postgres_utc(c, r):\n    c.commit()\n")
    assert offences(root) == [
        "cloud/routers.py:2: app.state (use cloud.container.container)",
        "cloud/routers.py:3: .begin() outside the unit of work (cloud/db/uow.py)",
        "cloud/routers.py:4: .commit() outside the unit of work (cloud/db/uow.py)",
        "cloud/routers.py:5: .connect() outside the unit of work (cloud/db/uow.py)",
        "cloud/routers.py:6: .rollback() outside the unit of work (cloud/db/uow.py)",
        "cloud/routers.py:7: sessions() (a session of its own) outside the unit of work "
        "(cloud/db/uow.py)",
    ]


def test_the_app_keeps_one_typed_container_under_one_key(api: Api) -> None:
    app = api.c.app
    assert list(app.state._state) == ["benchlink"]  # type: ignore[attr-defined]
    services = app_container(app)  # type: ignore[arg-type]
    assert isinstance(services, AppContainer)
    # Every service the install functions add is there once the app is built.
    for name in ("live_hub", "heartbeats", "health", "webhook_deliverer", "reprocess_runner"):
        assert hasattr(services, name), name
