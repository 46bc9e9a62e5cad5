"""The gRPC face of the snapshotter: containerd.services.snapshots.v1.Snapshots.

Each method turns its request into a call on the snapshotter and its answer into the reply
message; refusals become the status codes containerd understands (NOT_FOUND, ALREADY_EXISTS,
FAILED_PRECONDITION, INVALID_ARGUMENT), anything unexpected becomes INTERNAL with one log line,
so a bad request never takes the daemon down.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from estargz.errors import EstargzError
from estargz.snapshot import snapshots_pb2 as pb
from estargz.snapshot.filters import compile_filters
from estargz.snapshot.metadata import (
    AlreadyExists,
    FailedPrecondition,
    Kind,
    NotFound,
    SnapshotInfo,
)
from estargz.snapshot.overlay import Mount

__all__ = ["SERVICE_NAME", "Snapshotter", "SnapshotsServicer", "add_to_server"]

log = logging.getLogger("estargz.snapshot")
SERVICE_NAME = "containerd.services.snapshots.v1.Snapshots"
_CODES = [
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
]
R = TypeVar("R")


class Snapshotter(Protocol):
    """What the servicer needs: the snapshots API in domain terms."""

    def prepare(self, key: str, parent: str, labels: dict[str, str],
                kind: Kind = Kind.ACTIVE) -> list[Mount]: ...
    def mounts(self, key: str) -> list[Mount]: ...
    def commit(self, name: str, key: str, labels: dict[str, str]) -> SnapshotInfo: ...
    def remove(self, key: str) -> None: ...
    def stat(self, key: str) -> SnapshotInfo: ...
    def update(self, key: str, labels: dict[str, str], paths: list[str]) -> SnapshotInfo: ...
    def usage(self, key: str) -> tuple[int, int]: ...
    def walk(self) -> list[SnapshotInfo]: ...
    def cleanup(self) -> None: ...


def _mounts(mounts: list[Mount]) -> list[pb.Mount]:
    return [pb.Mount(type=m.type, source=m.source, options=list(m.options)) for m in mounts]


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _info(info: SnapshotInfo) -> pb.Info:
    return pb.Info(name=info.key, parent=info.parent, kind=info.kind.name,
                   created_at=_timestamp(info.created), updated_at=_timestamp(info.updated),
                   labels=info.labels)


def _rpc(method: Callable[[Any, Any, grpc.ServicerContext], R]
         ) -> Callable[[Any, Any, grpc.ServicerContext], R]:
    """Run one method; a refusal aborts the call with its status code, never the daemon."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return method(self, request, context)
        except EstargzError as exc:
            code = next((c for t, c in _CODES if isinstance(exc, t)),
                        grpc.StatusCode.INVALID_ARGUMENT)
            log.debug("%s: %s: %s", method.__name__, code.name, exc)
            context.abort(code, str(exc))
        except Exception as exc:  # one bad call must not end the service
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        raise AssertionError("unreachable: abort raises")

    return wrapper


class SnapshotsServicer:
    """The ten methods of the service over one :class:`Snapshotter`."""

    def __init__(self, snapshotter: Snapshotter) -> None:
        self.sn = snapshotter

    @_rpc
    def Prepare(self, req: pb.PrepareSnapshotRequest, ctx: grpc.ServicerContext
                ) -> pb.PrepareSnapshotResponse:
        mounts = self.sn.prepare(req.key, req.parent, dict(req.labels), Kind.ACTIVE)
        return pb.PrepareSnapshotResponse(mounts=_mounts(mounts))

    @_rpc
    def View(self, req: pb.ViewSnapshotRequest, ctx: grpc.ServicerContext
             ) -> pb.ViewSnapshotResponse:
        mounts = self.sn.prepare(req.key, req.parent, dict(req.labels), Kind.VIEW)
        return pb.ViewSnapshotResponse(mounts=_mounts(mounts))

    @_rpc
    def Mounts(self, req: pb.MountsRequest, ctx: grpc.ServicerContext) -> pb.MountsResponse:
        return pb.MountsResponse(mounts=_mounts(self.sn.mounts(req.key)))

    @_rpc
    def Commit(self, req: pb.CommitSnapshotRequest, ctx: grpc.ServicerContext
               ) -> empty_pb2.Empty:
        self.sn.commit(req.name, req.key, dict(req.labels))
        return empty_pb2.Empty()

    @_rpc
    def Remove(self, req: pb.RemoveSnapshotRequest, ctx: grpc.ServicerContext
               ) -> empty_pb2.Empty:
        self.sn.remove(req.key)
        return empty_pb2.Empty()

    @_rpc
    def Stat(self, req: pb.StatSnapshotRequest, ctx: grpc.ServicerContext
             ) -> pb.StatSnapshotResponse:
        return pb.StatSnapshotResponse(info=_info(self.sn.stat(req.key)))

    @_rpc
    def Update(self, req: pb.UpdateSnapshotRequest, ctx: grpc.ServicerContext
               ) -> pb.UpdateSnapshotResponse:
        info = self.sn.update(req.info.name, dict(req.info.labels), list(req.update_mask.paths))
        return pb.UpdateSnapshotResponse(info=_info(info))

    @_rpc
    def List(self, req: pb.ListSnapshotsRequest, ctx: grpc.ServicerContext
             ) -> Iterator[pb.ListSnapshotsResponse]:
        keep = compile_filters(list(req.filters))
        infos = [_info(i) for i in self.sn.walk() if keep(i)]
        return iter([pb.ListSnapshotsResponse(info=infos[n:n + 100])
                     for n in range(0, len(infos), 100)])

    @_rpc
    def Usage(self, req: pb.UsageRequest, ctx: grpc.ServicerContext) -> pb.UsageResponse:
        size, inodes = self.sn.usage(req.key)
        return pb.UsageResponse(size=size, inodes=inodes)

    @_rpc
    def Cleanup(self, req: pb.CleanupRequest, ctx: grpc.ServicerContext) -> empty_pb2.Empty:
        self.sn.cleanup()
        return empty_pb2.Empty()


_UNARY: dict[str, Any] = {
    "Prepare": pb.PrepareSnapshotRequest, "View": pb.ViewSnapshotRequest,
    "Mounts": pb.MountsRequest, "Commit": pb.CommitSnapshotRequest,
    "Remove": pb.RemoveSnapshotRequest, "Stat": pb.StatSnapshotRequest,
    "Update": pb.UpdateSnapshotRequest, "Usage": pb.UsageRequest, "Cleanup": pb.CleanupRequest,
}


def add_to_server(servicer: SnapshotsServicer, server: grpc.Server) -> None:
    """Register the service's methods (the work a generated ``_pb2_grpc`` module would do)."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name), request_deserializer=req.FromString,
            response_serializer=lambda msg: msg.SerializeToString())
        for name, req in _UNARY.items()
    }
    handlers["List"] = grpc.unary_stream_rpc_method_handler(
        servicer.List, request_deserializer=pb.ListSnapshotsRequest.FromString,
        response_serializer=lambda msg: msg.SerializeToString())
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME,
                                                                          handlers),))
