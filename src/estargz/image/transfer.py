"""Pull images from a registry into the store, and push them back, blob by blob.

Every blob is verified against its digest on the way in; a name is only set in the store once
everything it references is there, so an interrupted pull leaves no half image behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from estargz.errors import EstargzError, RegistryUnavailable
from estargz.image.mediatypes import INDEX_TYPES, MANIFEST_TYPES
from estargz.image.model import Descriptor, Index, Manifest, Platform, parse_document

if TYPE_CHECKING:
    from estargz.registry import Reference, RegistryClient
    from estargz.store import ImageStore

__all__ = ["IncompleteImage", "Progress", "image_blobs", "pull_image", "push_image"]


class IncompleteImage(EstargzError):
    """The store holds the image only in part (e.g. one platform of an index)."""


@dataclass(slots=True)
class Progress:
    """Callbacks a front end can hook; the library itself prints nothing."""

    blob_started: Callable[[Descriptor, str], None] = lambda _d, _what: None
    blob_advanced: Callable[[Descriptor, int], None] = lambda _d, _n: None
    blob_done: Callable[[Descriptor, str], None] = lambda _d, _how: None


def _chosen(index: Index, platforms: list[Platform], all_platforms: bool) -> list[Descriptor]:
    from estargz.image.convert import host_platform_spec

    children = [d for d in index.manifests if d.media_type in MANIFEST_TYPES]
    if all_platforms:
        return children
    wants = platforms or [host_platform_spec()]
    chosen = [d for d in children if d.platform and any(w.matches(d.platform) for w in wants)]
    if not chosen:
        have = ", ".join(str(d.platform) for d in children if d.platform) or "none"
        raise IncompleteImage(
            f"no manifest for platform {', '.join(map(str, wants))} (the index has: {have})"
        )
    return chosen


def _fetch_blob(
    client: RegistryClient, store: ImageStore, repo: str, desc: Descriptor, progress: Progress
) -> None:
    if store.has_blob(desc.digest):
        progress.blob_done(desc, "exists")
        return
    progress.blob_started(desc, "fetching")
    with store.ingest(desc.digest, desc.size) as writer:
        client.fetch_blob(
            repo,
            desc.digest,
            writer,  # type: ignore[arg-type]  # needs only write()
            size=desc.size,
            progress=lambda n: progress.blob_advanced(desc, n),
        )
        writer.commit()
    progress.blob_done(desc, "fetched")


def pull_image(
    client: RegistryClient,
    store: ImageStore,
    ref: Reference,
    *,
    name: str | None = None,
    platforms: list[Platform] | None = None,
    all_platforms: bool = False,
    progress: Progress | None = None,
    workers: int = 4,
) -> Descriptor:
    """Fetch ``ref`` (manifest or index, config and layers) and name it in the store."""
    progress = progress or Progress()
    data, media_type, digest = client.get_manifest(ref.repository, ref.manifest_ref)
    top = Descriptor(media_type, digest, len(data))
    doc = parse_document(data, media_type, str(ref))
    blobs: list[Descriptor] = []
    documents: list[tuple[Descriptor, bytes]] = [(top, data)]
    if isinstance(doc, Index):
        for child in _chosen(doc, platforms or [], all_platforms):
            child_data, child_type, _ = client.get_manifest(ref.repository, child.digest)
            child_doc = parse_document(child_data, child_type, f"{ref}@{child.digest}")
            if not isinstance(child_doc, Manifest):
                raise IncompleteImage(f"{child.digest}: nested indexes are not supported")
            documents.append((child, child_data))
            blobs += [child_doc.config, *child_doc.layers]
    else:
        blobs += [doc.config, *doc.layers]
    unique = list({d.digest: d for d in blobs}.values())
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="estargz-pull") as pool:
        for future in [
            pool.submit(_fetch_blob, client, store, ref.repository, d, progress) for d in unique
        ]:
            future.result()
    for desc, raw in reversed(documents):  # children before the index that names them
        store.put_blob(raw, desc.digest)
    store.set_images({name or str(ref): top})
    return top


def image_blobs(store: ImageStore, top: Descriptor) -> Iterator[tuple[Descriptor, bool]]:
    """Every blob of a stored image, children first: ``(descriptor, is_document)``."""
    if not store.has_blob(top.digest):
        raise IncompleteImage(f"{top.digest} is not in the store")
    doc = parse_document(store.read_blob(top.digest), top.media_type, top.digest)
    if isinstance(doc, Index):
        for child in doc.manifests:
            if not store.has_blob(child.digest):
                raise IncompleteImage(
                    f"the store has only part of this index: {child.digest} "
                    f"({child.platform or 'no platform'}) is missing; pull with --all-platforms "
                    "to push the whole index"
                )
            yield from image_blobs(store, child)
    else:
        for desc in (doc.config, *doc.layers):
            if not store.has_blob(desc.digest):
                raise IncompleteImage(f"blob {desc.digest} of {top.digest} is not in the store")
            yield desc, False
    yield top, True


def _put_manifest(
    client: RegistryClient, repo: str, target: str, data: bytes, media_type: str
) -> None:
    """PUT a manifest, again after a dropped connection or a 5xx answer.

    The client sends a PUT only once; unlike an upload session, a manifest PUT is idempotent,
    so a push that got all its blobs across survives the registry restarting at the very end.
    """
    policy = client.retry_policy
    for attempt in range(policy.retries + 1):
        try:
            client.put_manifest(repo, target, data, media_type)
            return
        except RegistryUnavailable:
            if attempt == policy.retries:
                raise
            policy.sleep(attempt)


def push_image(
    client: RegistryClient,
    store: ImageStore,
    top: Descriptor,
    ref: Reference,
    *,
    progress: Progress | None = None,
    workers: int = 4,
) -> str:
    """Push a stored image to ``ref``; blobs the registry has are skipped. Returns the digest."""
    progress = progress or Progress()
    items = list(image_blobs(store, top))
    layers = list({d.digest: d for d, is_doc in items if not is_doc}.values())

    def push_one(desc: Descriptor) -> None:
        progress.blob_started(desc, "pushing")
        how = client.push_blob(
            ref.repository,
            desc.digest,
            desc.size,
            store.blob_path(desc.digest),
            progress=lambda n: progress.blob_advanced(desc, n),
        )
        progress.blob_done(desc, {"uploaded": "pushed"}.get(how, how))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="estargz-push") as pool:
        for future in [pool.submit(push_one, d) for d in layers]:
            future.result()
    for desc, is_doc in items:
        if is_doc and desc.media_type in MANIFEST_TYPES | INDEX_TYPES:
            target = ref.tag if desc is top and ref.tag and not ref.digest else desc.digest
            _put_manifest(client, ref.repository, target, store.read_blob(desc.digest),
                          desc.media_type)
            progress.blob_done(desc, "pushed")
    return top.digest
