"""Shared pytest fixtures."""

from __future__ import annotations

import os
import pathlib

import pytest

from gotool import DEFAULT_CACHE_DIR, build_go_harness


@pytest.fixture(scope="session")
def go_harness(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Path to the compiled Go interop harness (tests/go/esgzharness).

    Cached in $ESTARGZ_TEST_GO_CACHE or ~/.cache/estargz-tests/go so repeated runs
    skip the compile; falls back to a pytest temp dir when that is not writable.
    """
    cache = pathlib.Path(os.environ.get("ESTARGZ_TEST_GO_CACHE", DEFAULT_CACHE_DIR))
    try:
        cache.mkdir(parents=True, exist_ok=True)
        writable = os.access(cache, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        cache = tmp_path_factory.mktemp("go-harness")
    return build_go_harness(cache)
