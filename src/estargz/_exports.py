"""Package attributes imported on first use.

A package names its public API in one place without importing all its modules (and their
libraries) when a caller needs one of them: ``from estargz.store.fsutil import locked`` must
not cost the whole store, the format and msgspec. Type checkers see ordinary imports.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without importing typing at every start)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, namespace: dict[str, object],
                 where: dict[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name in ``where`` (module -> names) is
    imported from its module on first use, then kept in ``namespace`` (the package's
    globals)."""
    table = {name: module for module, names in where.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
