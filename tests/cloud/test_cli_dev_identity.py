"""``benchlink-cloud serve``: a bad --dev-identity-user, a port already taken: one line each,
not a traceback or the server's start-up and shutdown."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.support.cloud import REPO
from tests.support.services import free_port, wait_port


def test_a_bad_dev_identity_user_is_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "serve", "--dev-identity", "--dev-identity-user", "x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--dev-identity-user" in lines[0] and "UUID" in lines[0]


def test_a_port_already_taken_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as holder:  # another cloud (or anything) listening there
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        db = tmp_path / "second.db"
        proc = subprocess.run(
            [
                sys.executable, "-m", "cloud.cli", "serve", "--port", str(port),
                "--database-url", f"sqlite:///{db}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0]
    assert "another process holds that port" in lines[0] and "--port" in lines[0]
    assert not db.exists()  # nothing migrated or started


def test_a_database_not_migrated_is_one_line_before_anything_starts(pg_url: str) -> None:
    """On PostgreSQL serve does not migrate unless asked (an operator runs the migrations
    once): a database behind this version is refused in one line that says what to run."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "serve", "--port", str(port), "--database-url", pg_url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "never migrated" in lines[0] and "this version needs" in lines[0]
    assert "benchlink-cloud migrate --database-url" in lines[0] and "--migrate" in lines[0]


def _serve_until_up(port: int, database_url: str) -> str:
    """Start serve, wait for its port, stop it: what it logged."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "cloud.cli", "serve", "--port", str(port),
            "--database-url", database_url,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert wait_port("127.0.0.1", port, timeout=60), "serve did not start"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    return out


def test_serve_says_it_migrated_in_one_line_and_then_nothing(tmp_path: Path) -> None:
    """On SQLite serve migrates by itself: a new database is one line saying so, not
    Alembic's line per migration (twenty) and its two set-up lines; at head, nothing."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    first = _serve_until_up(free_port(), url)
    assert "alembic" not in first, first
    said = [line for line in first.splitlines() if "migrated the database" in line]
    assert len(said) == 1 and "from none (never migrated) to 00" in said[0], first
    again = _serve_until_up(free_port(), url)
    assert "alembic" not in again and "migrated" not in again, again
