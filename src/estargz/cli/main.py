"""Entry point: parse arguments, run one command, turn known errors into one clear line.

Commands that a resident service can answer (``estargz service start``) are handed to it first
by :mod:`estargz.cli.client`, before anything heavy is imported: that is what keeps ``i rpull``
as quick as a compiled tool. Everything else is imported only once it is needed.
"""

from __future__ import annotations

import errno
import os
import sys

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without importing typing at every start)
if TYPE_CHECKING:
    import argparse
    from typing import NoReturn

__all__ = ["build_parser", "console", "describe", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    from estargz.cli.parser import build_parser as build

    return build()


def run(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command in this process (``parser``: one built earlier, to save the time)."""
    import traceback

    from estargz.cli.compat import report_inapplicable
    from estargz.errors import EstargzError

    args = (parser or build_parser()).parse_args(argv)
    report_inapplicable(args)
    try:
        code: int = args.func(args)
        return code
    except (EstargzError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"estargz: error: {describe(exc)}", file=sys.stderr)
        _collect(args)
        return 1
    except KeyboardInterrupt:
        print("estargz: interrupted", file=sys.stderr)
        _collect(args)
        return 130


def describe(exc: BaseException) -> str:
    """The error as a person reads it: what went wrong and with which file, without Python's
    class names or errno numbers (``--debug`` prints the traceback with them)."""
    if isinstance(exc, OSError) and exc.strerror:
        what = exc.strerror[:1].lower() + exc.strerror[1:]
        hint = _OS_HINTS.get(exc.errno or 0, "")
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        if names:
            return f"{' -> '.join(names)}: {what}{hint}"
        return f"{what}{hint}"
    return str(exc) or type(exc).__doc__ or "failed"


_OS_HINTS = {
    errno.EPERM: " (run as a user allowed to do this)",
    errno.EACCES: " (run as a user allowed to do this, or choose another path)",
    errno.EISDIR: " (give a file)",
    errno.ENOSPC: " (free some space, or choose another --root)",
}


def _collect(args: argparse.Namespace) -> None:
    """After a failed or interrupted command that writes to the store: remove what it wrote
    and no image names, unless other commands are at work on the store (then the next gc or
    ``i rm`` does), so that the store is left as it was."""
    if not getattr(args, "collect_on_failure", False):
        return
    from estargz.errors import EstargzError
    from estargz.store import ImageStore

    try:
        store = ImageStore(args.root or ImageStore.default_root(), create=False)
    except (EstargzError, OSError):
        return  # no store (a command refused before it made one): nothing to remove
    try:
        store.collect_if_idle()
    except (EstargzError, OSError) as exc:  # the command's own error was said already
        print(f"estargz: store not cleaned up: {describe(exc)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Hand the command to the store's service if one runs and takes it, else run it here."""
    from estargz.cli.client import forward

    args = sys.argv[1:] if argv is None else argv
    code = forward(args)
    return run(args) if code is None else code


def console() -> NoReturn:
    """The ``estargz`` command. A command the service ran leaves nothing here to tear down, so
    the client exits at once instead of finalising the interpreter."""
    from estargz.cli.client import forward

    _hide_passwords(sys.argv)
    code = forward(sys.argv[1:])
    if code is None:
        sys.exit(run(sys.argv[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _hide_passwords(argv: list[str]) -> None:
    """``--user USER:PASSWORD`` is readable by every user of the machine in the process's
    command line (``ps``): rewrite the title without the password (argv itself is kept)."""
    shown, hidden = [], False
    for i, arg in enumerate(argv):
        after_flag = i > 0 and argv[i - 1] in ("--user", "-u")
        if (after_flag or arg.startswith("--user=")) and ":" in arg:
            arg = arg.split(":", 1)[0] + ":***"
            hidden = True
        shown.append(arg)
    if hidden:
        from setproctitle import setproctitle

        setproctitle(" ".join(["estargz", *shown[1:]]))


if __name__ == "__main__":
    console()
