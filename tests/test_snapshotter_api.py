"""Our snapshotter's gRPC API driven directly, as containerd (and its CRI plugin) drive it.

A real ``estargz snapshotter`` process on a unix socket; the calls are made with grpcio and
the project's own message definitions.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2

from containerdkit import Containerd
from estargz.snapshot import snapshots_pb2 as pb
from registry_fixture import RegistryServer
from test_snapshotter_remote import BIG, _converted

SERVICE = "/containerd.services.snapshots.v1.Snapshots/"
TARGET = "containerd.io/snapshot.ref"
CRI_REF = "containerd.io/snapshot/cri.image-ref"
CRI_DIGEST = "containerd.io/snapshot/cri.layer-digest"
CRI_LAYERS = "containerd.io/snapshot/cri.image-layers"


class Client:
    def __init__(self, socket: pathlib.Path) -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket}")

    def __call__(self, method: str, request: Any, reply: Any) -> Any:
        call = self.channel.unary_unary(SERVICE + method,
                                        request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=reply.FromString)
        return call(request, timeout=120)

    def list(self, *filters: str) -> list[Any]:
        call = self.channel.unary_stream(SERVICE + "List",
                                         request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=pb.ListSnapshotsResponse.FromString)
        return [info for reply in call(pb.ListSnapshotsRequest(filters=list(filters)))
                for info in reply.info]

    def code(self, fn: Callable[[], object]) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as caught:
            fn()
        return caught.value.code()  # type: ignore[no-any-return]


@pytest.fixture
def served(tmp_path: pathlib.Path) -> Iterator[tuple[Containerd, Client]]:
    base = pathlib.Path(tempfile.mkdtemp(prefix="esa", dir="/tmp"))
    env = Containerd(base, tmp_path / "store", ("--no-background-fetch",))
    env.start_snapshotter()
    client = Client(env.sn_socket)
    try:
        yield env, client
    finally:
        client.channel.close()
        env.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_socket_and_state_are_root_only(served: tuple[Containerd, Client]) -> None:
    env, _ = served
    assert stat.S_IMODE(env.sn_socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(env.sn_socket.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(env.sn_root.stat().st_mode) == 0o700
    pid = os.fork()
    if pid == 0:  # another user is refused at connect, whatever it would ask
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(env.sn_socket))
                code = 3
            except PermissionError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_overlay_semantics_and_errors(served: tuple[Containerd, Client]) -> None:
    env, call = served
    one = call("Prepare", pb.PrepareSnapshotRequest(key="k1"), pb.PrepareSnapshotResponse)
    assert [(m.type, list(m.options)) for m in one.mounts] == [("bind", ["rw", "rbind"])]
    (pathlib.Path(one.mounts[0].source) / "f").write_text("one")
    call("Commit", pb.CommitSnapshotRequest(key="k1", name="c1", labels={"a": "1"}),
         empty_pb2.Empty)
    assert call("Usage", pb.UsageRequest(key="c1"), pb.UsageResponse).inodes == 2

    two = call("Prepare", pb.PrepareSnapshotRequest(key="k2", parent="c1"),
               pb.PrepareSnapshotResponse).mounts[0]
    assert two.type == "overlay"
    opts = dict(o.split("=", 1) for o in two.options)
    assert opts["lowerdir"] == one.mounts[0].source and "upperdir" in opts and "workdir" in opts
    view = call("View", pb.ViewSnapshotRequest(key="v", parent="c1"),
                pb.ViewSnapshotResponse).mounts[0]
    assert (view.type, view.source, list(view.options)) == \
        ("bind", one.mounts[0].source, ["ro", "rbind"])

    assert call.code(lambda: call("Prepare", pb.PrepareSnapshotRequest(key="k2"),
                                  pb.PrepareSnapshotResponse)) == grpc.StatusCode.ALREADY_EXISTS
    assert call.code(lambda: call("Stat", pb.StatSnapshotRequest(key="nope"),
                                  pb.StatSnapshotResponse)) == grpc.StatusCode.NOT_FOUND
    assert call.code(lambda: call("Remove", pb.RemoveSnapshotRequest(key="c1"),
                                  empty_pb2.Empty)) == grpc.StatusCode.FAILED_PRECONDITION
    assert call.code(lambda: call("Prepare", pb.PrepareSnapshotRequest(key="k3", parent="k2"),
                                  pb.PrepareSnapshotResponse)) == \
        grpc.StatusCode.FAILED_PRECONDITION

    info = pb.Info(name="c1", labels={"a": "", "b": "2"})
    mask = pb.UpdateSnapshotRequest(info=info)
    mask.update_mask.paths.extend(["labels.a", "labels.b"])
    updated = call("Update", mask, pb.UpdateSnapshotResponse).info
    assert dict(updated.labels) == {"b": "2"}

    assert {i.name for i in call.list()} == {"c1", "k2", "v"}
    assert [i.name for i in call.list('labels."b"==2')] == ["c1"]
    assert {i.name for i in call.list("parent==c1")} == {"k2", "v"}
    assert {i.name for i in call.list("kind==view", "name==k2")} == {"v", "k2"}

    for key in ("v", "k2", "c1"):
        call("Remove", pb.RemoveSnapshotRequest(key=key), empty_pb2.Empty)
    (env.sn_root / "snapshots" / "99").mkdir()  # as a crash between row and directory leaves
    call("Cleanup", pb.CleanupRequest(), empty_pb2.Empty)
    assert list((env.sn_root / "snapshots").iterdir()) == []
    assert call.list() == []


def _lazy(env: Containerd) -> list[str]:
    return [m for m in env.mounts() if " fuse" in m]


def test_cri_labels_mount_a_layer_lazily_and_bad_labels_fall_back(
    served: tuple[Containerd, Client], registry: RegistryServer, repo: str,
    tmp_path: pathlib.Path,
) -> None:
    """The labels containerd's CRI plugin sends: the bottom layer is mounted lazily; labels
    naming an unreachable registry or a layer the image lacks make an ordinary snapshot."""
    env, call = served
    ref, layers = _converted(registry, repo, tmp_path)
    cri = {CRI_REF: ref, CRI_LAYERS: ",".join(layers)}

    for bad in ({**cri, CRI_REF: "127.0.0.1:9/nothing/here:v1", CRI_DIGEST: layers[0]},
                {**cri, CRI_DIGEST: "sha256:" + "0" * 64}):
        key = f"extract-{time.monotonic_ns()}"
        reply = call("Prepare", pb.PrepareSnapshotRequest(key=key, labels={**bad,
                                                                           TARGET: "chain0"}),
                     pb.PrepareSnapshotResponse)
        assert reply.mounts[0].type == "bind", "an ordinary snapshot to unpack into"
        assert call.code(lambda: call("Stat", pb.StatSnapshotRequest(key="chain0"),
                                      pb.StatSnapshotResponse)) == grpc.StatusCode.NOT_FOUND
        call("Remove", pb.RemoveSnapshotRequest(key=key), empty_pb2.Empty)
    assert "not mounted lazily" in env.sn_log.read_text()
    assert not _lazy(env)

    labels = {**cri, CRI_DIGEST: layers[0], TARGET: "chain0"}
    assert call.code(lambda: call("Prepare", pb.PrepareSnapshotRequest(key="x", labels=labels),
                                  pb.PrepareSnapshotResponse)) == grpc.StatusCode.ALREADY_EXISTS
    info = call("Stat", pb.StatSnapshotRequest(key="chain0"), pb.StatSnapshotResponse).info
    assert info.kind == pb.COMMITTED and info.labels["containerd.io/snapshot/remote"]
    found = call.list('labels."containerd.io/snapshot.ref"==chain0,parent==""')
    assert [i.name for i in found] == ["chain0"], "containerd finds the target this way"
    assert len(_lazy(env)) == 2  # the layer's FUSE mount and its bind onto the snapshot

    view = call("View", pb.ViewSnapshotRequest(key="v", parent="chain0"),
                pb.ViewSnapshotResponse).mounts[0]
    root = pathlib.Path(view.source)
    assert hashlib.sha256((root / "data/big.bin").read_bytes()).digest() == \
        hashlib.sha256(BIG).digest()
    assert not (root / "etc/hello.txt").exists()  # (layer two's)

    call("Remove", pb.RemoveSnapshotRequest(key="v"), empty_pb2.Empty)
    call("Remove", pb.RemoveSnapshotRequest(key="chain0"), empty_pb2.Empty)
    assert not _lazy(env), "removing the snapshot unmounts its layer"
