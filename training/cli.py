"""The ``gravity`` command: one home for every subcommand.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which
registers the subparser and sets ``func``); modules are imported only when needed so
``gravity --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module providing add_parser(subparsers)
SUBCOMMANDS: dict[str, str] = {
    "train": "training.train_cli",
    "predict": "training.predict_cli",
    "evaluate": "napari_gravity.evaluation.cli",
    "synth": "napari_gravity.data.synth_cli",
    "calibrate": "training.calibrate",
    "demo": "training.demo",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gravity", description="GravityNet small-lesion detection (headless)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"(see gravity {name} --help)")
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a subcommand not built yet
            if exc.name and module.startswith(exc.name):
                sub.add_parser(name, help="(not available in this build)")
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("gravity: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError) as exc:
        # Known user-facing errors carry a message naming the file and the problem.
        print(f"gravity {command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
