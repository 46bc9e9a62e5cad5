"""A conformance kit: build tars in memory and check blobs and extracted trees against them.

Importable by any test suite (it does not depend on pytest); failures raise ``AssertionError``
with a message naming the entry and the got/want values.
"""

from estargz.testing.checks import (
    LANDMARKS,
    Expected,
    assert_lossless,
    assert_matches_tar,
    assert_tree_matches,
    clean,
    expected_entries,
    sha256,
    uncompressed,
)
from estargz.testing.tarkit import (
    DEFAULT_MTIME,
    Member,
    block,
    char,
    dir_,
    fifo,
    file_,
    gzip_bytes,
    hardlink,
    payload,
    symlink,
    tar_of,
)

__all__ = [
    "DEFAULT_MTIME",
    "LANDMARKS",
    "Expected",
    "Member",
    "assert_lossless",
    "assert_matches_tar",
    "assert_tree_matches",
    "block",
    "char",
    "clean",
    "dir_",
    "expected_entries",
    "fifo",
    "file_",
    "gzip_bytes",
    "hardlink",
    "payload",
    "sha256",
    "symlink",
    "tar_of",
    "uncompressed",
]
