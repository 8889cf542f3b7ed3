"""Every command line of the product, run as a user runs it: `--version` answers, every
option and argument of every (sub)command has a help text, and no help is written in
reStructuredText (a terminal shows ``x`` and :class: literally)."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

CLIS: dict[str, list[str]] = {
    "benchlink-edge": [str(BIN / "benchlink-edge")],
    "benchlink-cloud": [str(BIN / "benchlink-cloud")],
    "benchlink-sim": [str(BIN / "benchlink-sim")],
    **{
        f"bin/{p.name}": [sys.executable, str(p)]
        for p in sorted((REPO / "bin").glob("*.py"))
        if "argparse" in p.read_text()
    },
}
SUBCOMMANDS = {
    "benchlink-edge": ["run", "status", "bind", "flush", "dead-letter", "replay"],
    "benchlink-cloud": ["serve", "migrate"],
}
HELPS = [(name, sub) for name in CLIS for sub in [None, *SUBCOMMANDS.get(name, [])]]
RST = re.compile(r"``|:(class|func|meth|mod|attr|ref|data):`|^\.\. \w+::", re.M)
# an option or argument line of a section: two spaces, the invocation (single spaces inside),
# then its help after two or more spaces -- or on the next, deeper-indented line
ENTRY = re.compile(r"^  (\S(?:\S| (?! ))*)(?: {2,}(\S.*))?$")


def run(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def entries_without_help(text: str) -> list[str]:
    missing: list[str] = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if not lines or not re.match(r"^\S.*:$", lines[0]):  # not a section of entries
            continue
        for i, line in enumerate(lines[1:], 1):
            m = ENTRY.match(line)
            if m is None or m.group(2):
                continue
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if not re.match(r"^ {3,}\S", following):
                missing.append(m.group(1))
    return missing


@pytest.mark.parametrize("name", list(CLIS))
def test_every_cli_has_version(name: str) -> None:
    out = run(CLIS[name], "--version")
    assert out.returncode == 0, out.stderr
    assert version("benchlink") in out.stdout and "Traceback" not in out.stderr


@pytest.mark.parametrize(("name", "sub"), HELPS)
def test_every_option_has_help_and_no_rst(name: str, sub: str | None) -> None:
    out = run(CLIS[name], *([sub] if sub else []), "--help")
    assert out.returncode == 0, out.stderr
    assert entries_without_help(out.stdout) == [], out.stdout
    assert not RST.search(out.stdout), out.stdout


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("benchlink-edge", ["status", "--colour"]),
        ("benchlink-cloud", ["serve", "--log-level", "verbose"]),
        ("benchlink-sim", ["--rate", "fast"]),
    ],
)
def test_a_usage_error_is_one_line(name: str, args: list[str]) -> None:
    out = run(CLIS[name], *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and args[1] in lines[0] and "--help" in lines[0], out.stderr


def test_the_checker_finds_an_option_without_help() -> None:
    text = (
        "options:\n  -h, --help   show this help\n  --alone X\n  --fine Y     does y\n"
        "  --very-long-option-name VALUE\n                 wrapped help\n  --last"
    )
    assert entries_without_help(text) == ["--alone X", "--last"]
