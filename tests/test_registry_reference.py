"""Reference parsing and base URLs: the normalisation rules, as a table."""

from __future__ import annotations

import pytest

from estargz.reference import split_host
from estargz.registry import Reference, api_base, is_loopback_host

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "full"),
    [
        ("alpine", "docker.io", "library/alpine", "latest", None,
         "docker.io/library/alpine:latest"),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None,
         "docker.io/library/alpine:3.19"),
        ("user/app", "docker.io", "user/app", "latest", None, "docker.io/user/app:latest"),
        ("docker.io/alpine", "docker.io", "library/alpine", "latest", None,
         "docker.io/library/alpine:latest"),
        ("index.docker.io/library/alpine:edge", "docker.io", "library/alpine", "edge", None,
         "docker.io/library/alpine:edge"),
        ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000", "a/b", "t", None, "127.0.0.1:5000/a/b:t"),
        ("localhost/foo", "localhost", "foo", "latest", None, "localhost/foo:latest"),
        ("localhost:5000/foo/bar", "localhost:5000", "foo/bar", "latest", None,
         "localhost:5000/foo/bar:latest"),
        ("ghcr.io/org/sub/img:v1.2_3-rc", "ghcr.io", "org/sub/img", "v1.2_3-rc", None,
         "ghcr.io/org/sub/img:v1.2_3-rc"),
        (f"x/y@{D1}", "docker.io", "x/y", None, D1, f"docker.io/x/y@{D1}"),
        (f"host.example/r:t@{D2}", "host.example", "r", "t", D2, f"host.example/r:t@{D2}"),
        (f"[::1]:5000/ns/img@{D1}", "[::1]:5000", "ns/img", None, D1, f"[::1]:5000/ns/img@{D1}"),
        ("ab-c__d/e.f", "docker.io", "ab-c__d/e.f", "latest", None,
         "docker.io/ab-c__d/e.f:latest"),
        ("reg.io/a---b:TAG", "reg.io", "a---b", "TAG", None, "reg.io/a---b:TAG"),
    ],
)
def test_parse(text: str, registry: str, repository: str, tag: str | None, digest: str | None,
               full: str) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag,
                                                                    digest)
    assert str(ref) == full
    assert Reference.parse(str(ref)) == ref  # the normal form is a fixed point


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        (" alpine", "surrounding spaces"),
        ("Alpine", "lowercase"),
        ("reg.io/Upper/x", "lowercase"),
        ("alpine:", "empty tag"),
        ("a/b:t:u", "repository name"),
        ("a//b", "repository name"),
        ("-a/b", "repository name"),
        ("a_/b", "repository name"),
        ("reg.io/", "no repository"),
        ("bad_host.io/x", "not a valid host name"),
        ("host:99999/x", "port must be"),
        ("host:abc/x", "port must be"),
        ("x@sha256:zz", "not a sha256/sha512 digest"),
        ("x@md5:" + "a" * 32, "not a sha256/sha512 digest"),
        ("x:.bad", "tag"),
        ("x:" + "t" * 129, "tag"),
        ("[::1/x", "unclosed"),
        ("[zz]:5000/x", "not an IPv6 address"),
        ("reg.io/" + "a" * 260, "longer than 255"),
    ],
)
def test_parse_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid image reference") as info:
        Reference.parse(text)
    assert fragment in str(info.value)


def test_with_tag_and_digest() -> None:
    ref = Reference.parse(f"reg.io/r:t@{D1}")
    assert str(ref.with_tag("v2")) == "reg.io/r:v2"
    assert str(ref.with_digest(D2)) == f"reg.io/r:t@{D2}"
    assert ref.manifest_ref == D1
    assert Reference.parse("reg.io/r:t").manifest_ref == "t"
    assert ref.name == "reg.io/r"
    with pytest.raises(ValueError):
        ref.with_tag("bad tag")


def test_default_tag() -> None:
    assert Reference.parse("reg.io/r", default_tag="stable").tag == "stable"
    assert Reference.parse(f"reg.io/r@{D1}").tag is None


@pytest.mark.parametrize(
    ("host", "loopback", "base"),
    [
        ("127.0.0.1:5000", True, "http://127.0.0.1:5000"),
        ("127.3.4.5", True, "http://127.3.4.5"),
        ("localhost:5000", True, "http://localhost:5000"),
        ("[::1]:5000", True, "http://[::1]:5000"),
        ("10.0.0.1:5000", False, "https://10.0.0.1:5000"),
        ("ghcr.io", False, "https://ghcr.io"),
        ("docker.io", False, "https://registry-1.docker.io"),
        ("index.docker.io", False, "https://registry-1.docker.io"),
        ("localhost.example", False, "https://localhost.example"),
    ],
)
def test_api_base_and_loopback(host: str, loopback: bool, base: str) -> None:
    assert is_loopback_host(host) is loopback
    assert api_base(host) == base
    assert api_base(host, plain_http=True).startswith("http://")
    assert api_base(host, plain_http=False).startswith("https://")


def test_split_host() -> None:
    assert split_host("reg.io") == ("reg.io", None)
    assert split_host("reg.io:443") == ("reg.io", 443)
    assert split_host("[::1]:5000") == ("[::1]", 5000)
    for bad in ("", "reg.io:", "reg.io:0", "a b", "[::1]x", "-reg.io"):
        with pytest.raises(ValueError):
            split_host(bad)
