"""OCI images: descriptors, manifests, indexes, configs, conversion and the TOC image."""

__all__: list[str] = []
