"""Command-line front end: ``estargz layer ...`` (blob level) and ``estargz demo``."""

__all__: list[str] = []
