"""Write a blob's tree to a directory, never outside it.

All names are checked before anything is written: a ``..`` component is refused, and so is an
absolute name unless the caller asks to strip the leading slash (as GNU tar does by default).
Files are then created relative to directory descriptors opened with ``O_NOFOLLOW``, so a symlink
planted by an earlier entry cannot redirect a later one out of the tree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from estargz.errors import ExtractError, UnsafePath
from estargz.format.index import FileInfo
from estargz.format.reader import BlobReader

__all__ = ["ExtractReport", "extract"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class ExtractReport:
    entries: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)


def _check_name(raw: str, what: str, strip_leading_slash: bool) -> None:
    if ".." in raw.split("/"):
        raise UnsafePath(f"{what} {raw!r} has a '..' component: refused")
    if raw.startswith("/") and not strip_leading_slash:
        raise UnsafePath(
            f"{what} {raw!r} is absolute: refused (strip the leading '/' to extract it "
            "inside the target directory)"
        )


def _mtime_ns(modtime: str) -> int:
    if not modtime:
        return 0
    try:
        stamp = datetime.fromisoformat(modtime.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp()) * 1_000_000_000


class _Tree:
    """Directory descriptors below the root, opened without following symlinks.

    At most ``keep`` stay open (least recently used closed first; the root never), so that a
    tree of any width or depth extracts within the process's descriptor limit. A descriptor
    handed out is valid until the next call of :meth:`dir_fd`.
    """

    def __init__(self, root: str, keep: int = 256) -> None:
        os.makedirs(root, exist_ok=True)
        self.root_fd = os.open(root, _DIR_FLAGS)
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._keep = keep

    def dir_fd(self, path: str) -> int:
        """The directory ``path`` (made if missing), reached from its nearest open ancestor
        one component at a time."""
        if path == "":
            return self.root_fd
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        ancestor = path
        while ancestor:
            ancestor = ancestor.rpartition("/")[0]
            fd = self._fds.get(ancestor) if ancestor else self.root_fd
            if fd is not None:
                break
        assert fd is not None
        done = len(ancestor) + 1 if ancestor else 0
        for base in path[done:].split("/"):
            done += len(base) + 1
            fd = self._open_child(fd, base, path[: done - 1])
            self._fds[path[: done - 1]] = fd
            if len(self._fds) > self._keep:  # (never the one just opened: it is the newest)
                os.close(self._fds.popitem(last=False)[1])
        return fd

    @staticmethod
    def _open_child(pfd: int, base: str, path: str) -> int:
        with contextlib.suppress(FileExistsError):
            os.mkdir(base, 0o755, dir_fd=pfd)
        try:
            return os.open(base, _DIR_FLAGS, dir_fd=pfd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(f"{path!r} is not a directory (a symlink?): refused") from exc
            raise

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        os.close(self.root_fd)


def _remove(pfd: int, base: str, keep_dir: bool, keep_file: bool = False) -> None:
    """Clear the way for a new entry: a directory stays for a directory and is refused for
    anything else; anything else goes, unless ``keep_file`` (a rename will replace it)."""
    try:
        st = os.lstat(base, dir_fd=pfd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return
        raise UnsafePath(f"{base!r}: a directory is in the way of a non-directory entry")
    if not keep_file:
        os.unlink(base, dir_fd=pfd)


def _place_file(reader: BlobReader, info: FileInfo, pfd: int, base: str, as_root: bool,
                report: ExtractReport) -> int:
    """Write a regular file under a temporary name, verified chunk by chunk, set its metadata,
    then rename it into place: a failure leaves no partial file and, over an existing tree,
    the old file as it was. Returns the bytes written."""
    tmp = f".estargz-{os.urandom(8).hex()}.tmp"  # (random: a layer may hold any name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=pfd)
    written = 0
    try:
        try:
            for chunk in reader.chunks(info.name):
                data = reader.read_chunk(info.hardlink_to or info.name, chunk)
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                written += len(data)
            _apply(info, pfd, None, fd, as_root, report)
        finally:
            os.close(fd)
        os.rename(tmp, base, src_dir_fd=pfd, dst_dir_fd=pfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=pfd)
        raise
    return written


def extract(reader: BlobReader, dest: str, *, strip_leading_slash: bool = False) -> ExtractReport:
    """Recreate the blob's tree under ``dest`` with modes, owners (as root), times and xattrs.

    A failure of the file system on one entry (no space, a name it cannot hold) is an
    :class:`ExtractError` naming the entry; whatever was written before it stays.
    """
    for e in reader.entries:
        if e.type == "chunk":
            continue
        _check_name(e.name, "entry", strip_leading_slash)
        if e.type == "hardlink":
            _check_name(e.link_name, f"hardlink {e.name!r} target", strip_leading_slash)
    report = ExtractReport()
    as_root = os.geteuid() == 0
    tree = _Tree(dest)
    dirs: list[FileInfo] = []
    links: list[FileInfo] = []
    try:
        for info in reader.walk():
            report.entries += 1
            with _naming(info.name):
                if _place(reader, tree, info, as_root, report):
                    (links if info.hardlink_to is not None else dirs).append(info)
        for info in links:
            assert info.hardlink_to is not None
            parent, _, base = info.name.rpartition("/")
            tparent, _, tbase = info.hardlink_to.rpartition("/")
            with _naming(info.name):
                source_fd = os.dup(tree.dir_fd(tparent))  # (the next dir_fd may close it)
                try:
                    os.link(tbase, base, src_dir_fd=source_fd, dst_dir_fd=tree.dir_fd(parent),
                            follow_symlinks=False)
                finally:
                    os.close(source_fd)
        for info in sorted(dirs, key=lambda d: d.name.count("/"), reverse=True):
            with _naming(info.name or "/"):
                fd = tree.dir_fd(info.name)
                _apply(info, fd, None, fd, as_root, report)
    finally:
        tree.close()
    return report


@contextlib.contextmanager
def _naming(name: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ExtractError(f"cannot write {name!r}: {exc.strerror or exc}") from exc


def _place(reader: BlobReader, tree: _Tree, info: FileInfo, as_root: bool,
           report: ExtractReport) -> bool:
    """Create one entry; True for those finished later (directories, hardlinks)."""
    if info.name == "":
        return True
    parent, _, base = info.name.rpartition("/")
    pfd = tree.dir_fd(parent)
    kind = info.type if info.hardlink_to is None else "hardlink"
    _remove(pfd, base, keep_dir=kind == "dir", keep_file=kind == "reg")
    if kind == "dir":
        tree.dir_fd(info.name)
        return True
    if kind == "hardlink":
        return True  # after all files: a duplicate may put its target later
    if kind == "reg":  # (replaces an old file only once the new one is complete)
        report.bytes += _place_file(reader, info, pfd, base, as_root, report)
        return False
    if kind == "symlink":
        os.symlink(info.link_name, base, dir_fd=pfd)
    elif kind in ("char", "block"):
        fmt = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
        os.mknod(base, fmt | (info.mode & 0o7777),
                 os.makedev(info.dev_major, info.dev_minor), dir_fd=pfd)
    elif kind == "fifo":
        os.mkfifo(base, info.mode & 0o7777, dir_fd=pfd)
    _apply(info, pfd, base, -1, as_root, report)
    return False


def _apply(info: FileInfo, pfd: int, base: str | None, fd: int, as_root: bool,
           report: ExtractReport) -> None:
    """Owner, xattrs, mode and time; through the open descriptor when there is one."""
    ns = _mtime_ns(info.modtime)
    mode = info.mode & 0o7777
    if fd >= 0:
        if as_root:
            os.fchown(fd, info.uid, info.gid)
        for key, value in info.xattrs.items():
            _setxattr(fd, key, value, info, report)
        os.fchmod(fd, mode)
        os.utime(fd, ns=(ns, ns))
        return
    assert base is not None
    if as_root:
        os.chown(base, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
    if info.type != "symlink":
        for key, value in info.xattrs.items():
            _setxattr(f"/proc/self/fd/{pfd}/{base}", key, value, info, report)
        os.chmod(base, mode, dir_fd=pfd)
    os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)


def _setxattr(target: int | str, key: str, value: bytes, info: FileInfo,
              report: ExtractReport) -> None:
    try:
        os.setxattr(target, key, value)
    except OSError as exc:
        report.warnings.append(f"{info.name!r}: xattr {key!r} not set: {exc.strerror}")
