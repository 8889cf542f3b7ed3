#!/usr/bin/env python3
"""Apply the database migrations (Alembic) up to head. Safe to run again.

python bin/migrate.py --database-url postgresql://user@host:5432/benchlink
python bin/migrate.py --database-url sqlite:///var/benchlink.db
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.engine import make_url

from cloud.migrate import current, upgrade
from cloud.settings import DEFAULT_SQLITE, normalize_database_url
from common.cli import add_version, plain


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(p)
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCHLINK_DATABASE_URL", f"sqlite:///{DEFAULT_SQLITE}"),
        help="SQLAlchemy or libpq-style URL (default: BENCHLINK_DATABASE_URL or %(default)s)",
    )
    args = p.parse_args(argv)
    url = normalize_database_url(args.database_url)
    before = current(url)
    upgrade(url)
    after = current(url)
    shown = make_url(url).render_as_string(hide_password=True)
    if before == after:
        print(f"{shown}: already at {after}")
    else:
        print(f"{shown}: migrated {before or 'empty'} -> {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
