"""The ``evalkit`` command line: train | attack | analyze | report | demo | info | study.

Each subcommand lives in ``evalkit/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``--help`` is fast.
User mistakes (:class:`evalkit.errors.EvalkitError`) print one line and exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from evalkit import __version__
from evalkit.errors import EvalkitError

COMMANDS = {
    "train": "train a classifier with a defense SPEC (standard, at, trades, mart, at+cas, ...)",
    "attack": "evaluate a checkpoint under attacks (FGSM, PGD, CW, AutoAttack, ...)",
    "analyze": "analyses: channels, importance, pooling, sap-eot, distributions",
    "report": "render run directories into an HTML (and PDF) robustness report",
    "demo": "offline end-to-end run on the bundled Fashion-MNIST subset",
    "study": "run a named reproduction study of the seed papers",
    "info": "describe a checkpoint, the datasets, architectures and attacks",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (``evalkit CMD: error: ...``, exit 2), like EvalkitError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(load_all: bool = True) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="evalkit",
        description="Train adversarially robust image classifiers, attack them, and explain the results.",
    )
    parser.add_argument("--version", action="version", version=f"evalkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = _command_module(name) if load_all else None
        if module is not None:
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def _command_module(name: str):
    try:
        return importlib.import_module(f"evalkit.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"evalkit.commands.{name}":
            return None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # only import the module of the command being run
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in COMMANDS:
        parser = OneLineParser(prog="evalkit")
        sub = parser.add_subparsers(dest="command")
        module = _command_module(command)
        if module is None:
            print(
                f"evalkit: error: command {command!r} is not available in this build",
                file=sys.stderr,
            )
            return 2
        module.add_parser(sub)
    else:
        parser = build_parser()
        module = None
    args = parser.parse_args(argv)
    if module is None:
        parser.print_help()
        return 0 if not argv or "-h" in argv or "--help" in argv else 2
    try:
        return int(module.run(args) or 0)
    except EvalkitError as exc:
        print(f"evalkit {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(module, "interrupted_hint", None)
        text = hint(args, argv) if hint is not None else None
        print(
            f"evalkit {command}: interrupted; "
            + (text or "completed work is saved (rerun with --resume)"),
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
