"""Image documents with bad annotations are refused with one clear error, wherever they sit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from estargz.image.mediatypes import OCI_INDEX, OCI_MANIFEST
from estargz.image.model import InvalidDocument, Manifest, parse_document

DIGEST = "sha256:" + "a" * 64
DESCRIPTOR = {"mediaType": "application/octet-stream", "digest": DIGEST, "size": 1}


def _manifest(**extra: Any) -> dict[str, Any]:
    return {"mediaType": OCI_MANIFEST, "config": DESCRIPTOR, "layers": [DESCRIPTOR], **extra}


@pytest.mark.parametrize("annotations", ["text", [1], {"key": 1}, {"key": ["a"]}])
@pytest.mark.parametrize("where", ["manifest", "index", "descriptor"])
def test_annotations_must_map_strings_to_strings(where: str, annotations: object) -> None:
    if where == "manifest":
        doc = _manifest(annotations=annotations)
    elif where == "index":
        doc = {"mediaType": OCI_INDEX, "manifests": [DESCRIPTOR], "annotations": annotations}
    else:
        doc = _manifest(layers=[{**DESCRIPTOR, "annotations": annotations}])
    with pytest.raises(InvalidDocument, match="annotations must map strings to strings"):
        parse_document(json.dumps(doc).encode())


def test_good_annotations_are_kept() -> None:
    doc = parse_document(json.dumps(_manifest(annotations={"a": "b"})).encode())
    assert isinstance(doc, Manifest) and doc.annotations == {"a": "b"}
    assert doc.to_dict()["annotations"] == {"a": "b"}
