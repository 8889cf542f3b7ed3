"""What every benchlink command line shares: ``--version`` and one-line usage errors."""

from __future__ import annotations

import argparse
import re
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn


def package_version() -> str:
    try:
        return version("benchlink")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {package_version()}",
        help="print the version and exit",
    )


class Parser(argparse.ArgumentParser):
    """argparse with a usage error on one line (what is wrong, and where to read more) instead
    of the usage block: under systemd each line is a journal entry of its own."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def plain(doc: str | None) -> str:
    """A module docstring as help text: without the reStructuredText quoting (``x``) that
    a terminal would show literally."""
    return re.sub(r"``(.+?)``", r"\1", doc or "")
