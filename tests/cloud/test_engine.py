"""Database sessions on PostgreSQL are in UTC, without losing the URL's own options."""

from __future__ import annotations

from datetime import UTC

from cloud.db.engine import make_engine


def test_postgres_sessions_are_in_utc_and_keep_the_urls_options(pg_url: str) -> None:
    sep = "&" if "?" in pg_url else "?"
    engine = make_engine(f"{pg_url}{sep}options=-c%20statement_timeout%3D12345")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "12345ms"
            now = conn.exec_driver_sql("SELECT now()").scalar()
            # psycopg's UTC is datetime.timezone.utc itself: astimezone(UTC) costs nothing.
            assert now is not None and now.tzinfo is UTC
    finally:
        engine.dispose()
