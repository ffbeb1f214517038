"""``python -m engine …``: the command line over the engine.

Each command lives with its module: a module exposes ``register(subparsers)`` which adds its
sub-command(s) and sets ``func`` to a handler ``(args) -> int``. This file only assembles
them, sets up logging and turns :class:`EngineError` into a one-line message (exit code 2).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from engine.errors import EngineError
from engine.store import DEFAULT_CACHE

# Modules that contribute sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "engine.commands.core",
    "engine.commands.jobs",
    "engine.commands.train_apps",
    "engine.commands.extract",
    "engine.commands.table1",
    "engine.commands.demo",
    "engine.commands.train_classifier",
)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like the engine's (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"error: {one_line(message)} (see `{self.prog} --help`)\n")


def one_line(message: str) -> str:
    """A message on one line: line breaks (a value typed with a newline, a library's long
    explanation) become visible escapes."""
    return str(message).strip().replace("\r", "\\r").replace("\n", "\\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m engine",
        description="Neural Dependency Explorer: logits -> Gram -> CovLasso dependencies.",
    )
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"cache directory (default: ./{DEFAULT_CACHE})")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except EngineError as exc:  # one line, whatever a library or a value put into the message
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the user named: missing, unwritable, disk full
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {one_line(f'{exc.strerror or exc}{where}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
