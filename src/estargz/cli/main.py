"""Entry point: parse arguments, run one command, turn known errors into one clear line."""

from __future__ import annotations

import argparse
import sys
import traceback

from estargz import __version__
from estargz.cli.demo import add_demo_command
from estargz.cli.image import add_image_commands
from estargz.cli.layer import add_layer_commands
from estargz.errors import EstargzError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="estargz",
        description="Convert container image layers to eStargz, verify and read them.",
    )
    parser.add_argument("--version", action="version", version=f"estargz {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--root", metavar="DIR",
                        help="image store directory (default: $ESTARGZ_ROOT, /var/lib/estargz "
                        "as root, ~/.local/share/estargz otherwise)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_layer_commands(sub)
    add_image_commands(sub)
    add_demo_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (EstargzError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        what = type(exc).__name__
        print(f"estargz: error: {what}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("estargz: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
