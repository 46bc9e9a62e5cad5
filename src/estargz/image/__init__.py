"""OCI images: descriptors, manifests, indexes, configs, conversion and the TOC image."""
