"""benchlink-cloud: serve the API, or migrate its database."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import secrets
import socket
import sys

from pydantic import ValidationError
from sqlalchemy.engine import make_url

from cloud.settings import Settings, normalize_database_url
from common.cli import Parser, add_version

DEFAULT_PORT = 8002


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="benchlink-cloud", description=__doc__)
    add_version(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the API server")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--database-url", default=None, help="default: BENCHLINK_DATABASE_URL or a SQLite file"
    )
    serve.add_argument(
        "--workers",
        type=_workers_option,
        default="auto",
        help="server processes, or 'auto': one per core on PostgreSQL, 1 on SQLite "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--migrate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="apply migrations before serving (default: on for SQLite, off for PostgreSQL, "
        "where bin/migrate.py is run once by the operator)",
    )
    serve.add_argument(
        "--dev-identity",
        action="store_true",
        default=None,
        help="let the portal work in a plain browser without a gateway (development only)",
    )
    serve.add_argument(
        "--dev-identity-user",
        default=None,
        metavar="UUID",
        help="with --dev-identity: the user the portal opens as (default: it asks)",
    )
    serve.add_argument(
        "--dev-identity-project",
        default=None,
        metavar="NAME_OR_ID",
        help="with --dev-identity-user: the project it opens on (default: the user's only one)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="(default: %(default)s)",
    )
    migrate = sub.add_parser("migrate", help="apply Alembic migrations up to head")
    migrate.add_argument(
        "--database-url", default=None, help="default: BENCHLINK_DATABASE_URL or a SQLite file"
    )
    return p


def _settings_problem(exc: ValidationError) -> str:
    """One line: each bad setting, where it comes from, and why."""
    parts = []
    for e in exc.errors():
        name = ".".join(map(str, e["loc"]))
        where = f"BENCHLINK_{name.upper()}" + (f" or --{name.replace('_', '-')}" if name else "")
        parts.append(f"{where}: {e['msg']}" if name else str(e["msg"]))
    return "invalid settings: " + "; ".join(parts)


def _port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, or None. Checked before migrating and starting
    the server, so a second cloud on the same port says so in one line instead of starting up,
    failing to bind and shutting down."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"cannot resolve --host {host!r} ({exc}); give an address such as 127.0.0.1"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"cannot listen on {host}:{port} ({reason}): another process holds that "
                    "port (another benchlink-cloud?); stop it or pick another with --port"
                )
            return f"cannot listen on {host}:{port} ({reason}); check --host and --port"
    return None


def _workers_option(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a number of processes (1 or more) or 'auto'"
        )
    return n


def worker_count(asked: int | str, database_url: str) -> int:
    """``--workers auto``: one process per core the server may use, except on SQLite, whose
    single writer would keep every other process waiting on its lock."""
    if asked != "auto":
        return int(asked)
    if make_url(database_url).get_backend_name() == "sqlite":
        return 1
    return len(os.sched_getaffinity(0))


def _serve(args: argparse.Namespace, settings: Settings, url: str) -> None:
    import uvicorn

    from cloud import httpproto, wsproto

    # Workers re-create the app from the environment, so hand the settings down that way.
    os.environ["BENCHLINK_DATABASE_URL"] = settings.database_url
    if settings.dev_identity:
        os.environ["BENCHLINK_DEV_IDENTITY"] = "1"
    if settings.dev_identity_user:
        os.environ["BENCHLINK_DEV_IDENTITY_USER"] = str(settings.dev_identity_user)
    if settings.dev_identity_project:
        os.environ["BENCHLINK_DEV_IDENTITY_PROJECT"] = settings.dev_identity_project
    if not settings.stream_ticket_secret:
        # The workers of this one server verify each other's stream tickets: one secret for
        # all of them, for as long as it runs (each would otherwise make up its own, and a
        # browser's ticket would open its stream on one worker in N).
        os.environ["BENCHLINK_STREAM_TICKET_SECRET"] = secrets.token_urlsafe(32)
    uvicorn.run(
        "cloud.asgi:app",
        host=args.host,
        port=args.port,
        workers=worker_count(args.workers, url),
        log_level=args.log_level,
        proxy_headers=True,
        ws=wsproto.IMPORT_PATH,
        # Limits on request heads (size, count, time): cloud.httpproto, from the settings.
        http=httpproto.IMPORT_PATH,
        timeout_keep_alive=settings.keep_alive_timeout_s,
    )


#: The commands, whose options may also be written before their name.
COMMANDS = ("serve", "migrate")


def command_first(argv: list[str]) -> list[str]:
    """The arguments with the command's name first: options written before it are the
    command's (``benchlink-cloud --dev-identity serve`` is ``serve --dev-identity``), as the
    edge's command line takes ``--config`` on either side. Unchanged when the command comes
    first or a top-level option (``--help``, ``--version``) comes before it."""
    for i, arg in enumerate(argv):
        if arg in COMMANDS:
            return [arg, *argv[:i], *argv[i + 1 :]]
        if arg in ("-h", "--help", "--version"):
            break
    return argv


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(command_first(sys.argv[1:] if argv is None else argv))
    overrides = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    if getattr(args, "dev_identity", None):
        overrides["dev_identity"] = True
    for name in ("dev_identity_user", "dev_identity_project"):
        if getattr(args, name, None):
            overrides[name] = getattr(args, name)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"benchlink-cloud: {_settings_problem(exc)}", file=sys.stderr)
        return 2
    if args.command == "serve":
        taken = _port_taken(args.host, args.port)
        if taken is not None:
            print(f"benchlink-cloud: {taken}", file=sys.stderr)
            return 1
    url = normalize_database_url(settings.database_url)
    migrate = args.command == "migrate" or (
        args.migrate if args.migrate is not None else make_url(url).get_backend_name() == "sqlite"
    )
    from cloud.migrate import behind_head, upgrade, upgrade_for_serve

    if not migrate:
        # Not served half-built: every request and background task would fail on a table
        # that is not there. Checked before logging is set up: one line, no migration chatter.
        behind = behind_head(url)
        if behind is not None:
            shown = make_url(url).render_as_string(hide_password=True)
            print(
                f"benchlink-cloud: {behind}: run `benchlink-cloud migrate --database-url "
                f"{shown}` first, or serve with --migrate",
                file=sys.stderr,
            )
            return 1
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if args.command == "migrate":
        upgrade(url)
        print(f"migrated {make_url(url).render_as_string(hide_password=True)} to head")
        return 0
    if migrate:
        upgrade_for_serve(url)
    _serve(args, settings, url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
