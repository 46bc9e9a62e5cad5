"""Image names get one canonical spelling, the way Docker normalises them."""

from __future__ import annotations

import pytest

from estargz.errors import InvalidImageName, StoreError
from estargz.store import familiar_name, normalize_name, split_name

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("alpine", "docker.io/library/alpine:latest"),
        ("alpine:3.19", "docker.io/library/alpine:3.19"),
        ("library/alpine", "docker.io/library/alpine:latest"),
        ("user/app:v1", "docker.io/user/app:v1"),
        ("docker.io/alpine", "docker.io/library/alpine:latest"),
        ("index.docker.io/user/app", "docker.io/user/app:latest"),
        ("docker.io/library/alpine:latest", "docker.io/library/alpine:latest"),
        ("127.0.0.1:5000/img:tag", "127.0.0.1:5000/img:tag"),
        ("127.0.0.1:5000/img", "127.0.0.1:5000/img:latest"),
        ("localhost/img", "localhost/img:latest"),
        ("localhost:5000/a/b/c:x", "localhost:5000/a/b/c:x"),
        ("ghcr.io/o/r", "ghcr.io/o/r:latest"),
        ("quay.io/o/r-x_y.z__w", "quay.io/o/r-x_y.z__w:latest"),
        (f"alpine@{DIGEST}", f"docker.io/library/alpine@{DIGEST}"),
        (f"alpine:3@{DIGEST}", f"docker.io/library/alpine:3@{DIGEST}"),
        ("[::1]:5000/img", "[::1]:5000/img:latest"),
        ("img:-esgztoc", None),
    ],
)
def test_normalize(name: str, want: str | None) -> None:
    if want is None:
        with pytest.raises(InvalidImageName):
            normalize_name(name)
    else:
        assert normalize_name(name) == want
        assert normalize_name(want) == want  # idempotent


def test_esgztoc_suffix_on_tags_is_a_valid_tag() -> None:
    assert normalize_name("127.0.0.1:5000/img:v1-esgztoc") == "127.0.0.1:5000/img:v1-esgztoc"


@pytest.mark.parametrize(
    "bad",
    ["", "Alpine", "alpine:", "alpine:a b", "a//b", "-a", "a-", "docker.io/",
     "alpine@sha256:xyz", "host.io/UPPER", ":tag", "a" * 256, "x:" + "t" * 129],
)
def test_invalid_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidImageName) as info:
        normalize_name(bad)
    assert isinstance(info.value, StoreError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"image name {bad!r}: ")


def test_split_and_familiar() -> None:
    assert split_name("alpine") == ("docker.io/library/alpine", "latest", "")
    assert split_name(f"127.0.0.1:5000/a/b@{DIGEST}") == ("127.0.0.1:5000/a/b", "", DIGEST)
    assert split_name("localhost:5000/img:7") == ("localhost:5000/img", "7", "")
    assert familiar_name("docker.io/library/alpine:3") == "alpine:3"
    assert familiar_name("docker.io/user/app") == "user/app:latest"
    assert familiar_name("docker.io/library/a/b:1") == "library/a/b:1"
    assert familiar_name("127.0.0.1:5000/img:tag") == "127.0.0.1:5000/img:tag"
