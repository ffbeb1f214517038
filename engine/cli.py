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
from engine.storage.layout import DEFAULT_CACHE

# Modules that contribute sub-commands, in the order ``--help`` lists them, with the
# sub-commands each registers: a command imports only its own module (training's imports
# torch, torchvision and timm, ~2–6 s, which `dependencies` never needs). tests/test_cli.py
# checks this table against what the modules register.
COMMANDS = {
    "engine.commands.core": ("import-logits", "stores", "dependencies", "verify"),
    "engine.commands.jobs": ("jobs",),
    "engine.commands.train_apps": ("train-newclasses", "train-regularizer"),
    "engine.commands.extract": ("extract",),
    "engine.commands.table1": ("table1",),
    "engine.commands.demo": ("demo",),
    "engine.commands.talk": ("talk",),
    "engine.commands.train_classifier": ("train-classifier",),
    "engine.commands.emergence": ("emergence",),
}
COMMAND_MODULES = tuple(COMMANDS)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like the engine's (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"error: {one_line(message)} (see `{self.prog} --help`)\n")


def one_line(message: str) -> str:
    """A message on one line: line breaks (a value typed with a newline, a library's long
    explanation) become visible escapes."""
    return str(message).strip().replace("\r", "\\r").replace("\n", "\\n")


def command_modules(argv: list[str] | None) -> tuple[str, ...]:
    """The modules whose sub-commands ``argv`` may name: those of every word of ``argv`` that
    is a sub-command (an option's value that happens to be one only costs an import); every
    module when none is (``--help``, a mistyped command: the message lists them all)."""
    words = set(argv or ())
    named = tuple(m for m, commands in COMMANDS.items() if words.intersection(commands))
    return named or COMMAND_MODULES


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser with the sub-commands of :func:`command_modules` (``argv`` None: all)."""
    parser = _Parser(
        prog="python -m engine",
        description="Neural Dependency Explorer: logits -> Gram -> CovLasso dependencies.",
    )
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"cache directory (default: ./{DEFAULT_CACHE})")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES if argv is None else command_modules(argv):
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
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
