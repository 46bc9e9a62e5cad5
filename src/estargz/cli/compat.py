"""ctr-remote's flags that mean nothing without containerd: accepted, named, and explained.

Scripts written for ``ctr-remote`` pass flags that steer containerd (its snapshotters, labels,
transfer service, namespaces). estargz has no containerd, so such a flag is accepted (a script
runs unchanged) and the reason it does not apply is printed once, when it is given. Every other
flag of ctr-remote's shared verbs is implemented; a test holds upstream's flag names as data.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["INAPPLICABLE", "add_inapplicable", "report_inapplicable"]

_SNAPSHOTTER = "there is no containerd snapshotter: layers live in estargz's own store"
_LABEL = "the store keeps no containerd image labels"
_LOCAL = "there is no containerd transfer service: estargz always talks to the registry itself"
_HOSTS_DIR = ("containerd's per-host configuration (hosts.toml) is not read: use --plain-http, "
              "--skip-verify and --tlscacert/--tlscert/--tlskey")
_HTTP_TRACE = "Go's HTTP client tracing: there is no equivalent here"

_PREFIX = "inapplicable_"
_ALIASES = {"--address": ("-a",), "--namespace": ("-n",)}

# flag -> (takes a value, why it does not apply), per ``estargz i`` verb; "" is ``estargz``
INAPPLICABLE: dict[str, dict[str, tuple[bool, str]]] = {
    "": {
        "--address": (True, "there is no containerd to connect to"),
        "--namespace": (True, "there are no containerd namespaces: --root chooses the store"),
        "--connect-timeout": (True, "there is no containerd to connect to"),
        "--timeout": (True, "there is no overall deadline for a command"),
    },
    "pull": {
        "--snapshotter": (True, _SNAPSHOTTER),
        "--label": (True, _LABEL),
        "--local": (False, _LOCAL),
        "--hosts-dir": (True, _HOSTS_DIR),
        "--http-trace": (False, _HTTP_TRACE),
        "--all-metadata": (False, "the store keeps the index and the chosen platforms only"),
        "--skip-metadata": (False, "the store keeps the index and the chosen platforms only"),
        "--sync-fs": (False, "images are not unpacked; the store syncs every blob it writes"),
    },
    "push": {
        "--local": (False, _LOCAL),
        "--hosts-dir": (True, _HOSTS_DIR),
        "--http-trace": (False, _HTTP_TRACE),
        "--allow-non-distributable-blobs": (
            False, "every blob of the image in the store is pushed, non-distributable or not"),
    },
    "rpull": {
        "--snapshotter": (True, "estargz mounts every image with its own lazy FUSE layers"),
        "--label": (True, _LABEL),
        "--hosts-dir": (True, _HOSTS_DIR),
        "--http-trace": (False, _HTTP_TRACE),
        "--skip-content-verify": (
            False, "every chunk is checked against its digest before a byte is served"),
        "--ipfs": (False, "images are read from OCI registries only"),
        "--use-containerd-labels": (False, _LABEL),
    },
}


class _Inapplicable(argparse.Action):
    """Records the flag; :func:`report_inapplicable` says why it is ignored."""

    def __init__(self, option_strings: list[str], dest: str, reason: str = "",
                 **kwargs: object) -> None:
        self.reason = reason
        super().__init__(option_strings, dest, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, f"{self.option_strings[-1]} ignored: {self.reason}")


def add_inapplicable(p: argparse.ArgumentParser, verb: str) -> None:
    """Accept the containerd-only flags of ``verb``; ``--help`` names them in one line."""
    flags = INAPPLICABLE[verb]
    p.epilog = ("ctr-remote's containerd-only flags, accepted and ignored with a note: "
                + ", ".join(flags))
    for flag, (takes_value, reason) in INAPPLICABLE[verb].items():
        p.add_argument(*_ALIASES.get(flag, ()), flag, action=_Inapplicable, reason=reason,
                       nargs=None if takes_value else 0, metavar="X", help=argparse.SUPPRESS,
                       dest=f"{_PREFIX}{flag[2:].replace('-', '_')}")


def report_inapplicable(args: argparse.Namespace) -> None:
    """One line for each containerd-only flag that was given (a repeated flag: once)."""
    for key, note in vars(args).items():
        if key.startswith(_PREFIX) and note:
            print(f"estargz: {note}", file=sys.stderr)
