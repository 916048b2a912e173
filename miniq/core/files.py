"""Durable writes and untrusting reads: the only way miniq touches its files.

Writing.  A file appears under its final name only after its bytes reached
the disk: write an unnamed file in ``tmp/`` of the same file system
(O_TMPFILE), fsync, give it a staging name, rename it (or link it, where an
existing file must not be replaced), fsync the directory.  No reader sees
a partial file, and no name anywhere holds one, even after a power cut.

Reading.  Nothing read from a queue is trusted: files are opened without
following symbolic links and without blocking (a FIFO cannot hang the
reader), must be regular files with a single link (a hard link would expose
another file's bytes), are read up to ``MAX_FILE`` bytes, and JSON is parsed
with a nesting limit.  A file that fails any of this raises ``Unusable`` with
the reason; its bytes are attached only when they came from a regular file
of the queue itself, never from a link's target.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

#: The largest job file or record miniq reads (README, "The queue on disk").
MAX_FILE = 1024 * 1024
#: How deep JSON may nest in a job file; miniq's own files need 4.
MAX_DEPTH = 32
#: Bytes of an unusable file kept in its rejection record.
KEEP_BYTES = 64 * 1024

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symbolic link",
}


class Unusable(Exception):
    """A file that cannot be used as it is; ``reason`` says why.

    ``original`` holds its bytes (at most ``KEEP_BYTES``) when they may be
    kept: it was a regular file with one link, read in full or in part.
    """

    def __init__(self, reason: str, original: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.original = original


#: Directories kept open for fsync: a directory is opened once per process.
_dir_fds: dict[str, int] = {}


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries, so that a rename into it survives a crash."""
    key = str(path)
    fd = _dir_fds.get(key)
    if fd is not None and os.fstat(fd).st_ino != os.stat(path).st_ino:  # the directory was replaced
        os.close(_dir_fds.pop(key))
        fd = None
    if fd is None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if len(_dir_fds) < 64:
            _dir_fds[key] = fd
    try:
        os.fsync(fd)
    except OSError as e:
        # Some network file systems refuse fsync on directories; their
        # rename is synchronous on the server, so there is nothing to flush.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        if _dir_fds.get(key) != fd:
            os.close(fd)


def staging_name(name: str) -> str:
    """``.NAME~WRITER~RANDOM.tmp``: WRITER is this process's tag (proc.py), so
    that a staging file a dead writer left is known as such (claims.py)."""
    from .proc import tag

    return f".{name}~{tag()}~{os.urandom(4).hex()}.tmp"


def staging_writer(name: str) -> str | None:
    """The writer's tag in a staging file's name, if it has one."""
    parts = name.split("~")
    return parts[-2] if len(parts) >= 3 and name.startswith(".") and name.endswith(".tmp") else None


def fill(fd: int, data: bytes, mode: int, owner: tuple[int, int] | None, sync: bool = True) -> None:
    """Give an open file its mode and owner and write ``data`` whole; flush
    it unless ``sync`` is false (a batch flushes all its files at once, batch.py)."""
    os.fchmod(fd, mode)  # whatever the umask says
    if owner is not None:
        os.fchown(fd, *owner)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    if sync:
        os.fsync(fd)


def stage(tmp_dir: Path, name: str, data: bytes, owner: tuple[int, int] | None, mode: int = 0o600) -> Path:
    """``data`` on disk as ``tmp_dir/name`` (which must not exist), its
    directory not flushed: a claim's end (ending.py)."""
    return _stage(tmp_dir, name, data, mode, owner, exact=True)


def _stage(tmp_dir: Path, name: str, data: bytes, mode: int, owner: tuple[int, int] | None, exact: bool = False) -> Path:
    """A staging file in ``tmp_dir`` holding ``data``, on disk; its name
    appears only once its bytes are (O_TMPFILE), so a crash at any moment
    leaves no empty or partial file under any name.  Where the file system
    has no O_TMPFILE (NFS), the name appears first: a crash can leave a
    partial staging file, never read and removed after an hour (claims.py)."""
    tmp = tmp_dir / (name if exact else staging_name(name))
    try:
        fd = os.open(tmp_dir, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    else:
        try:
            fill(fd, data, mode, owner)
            # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names the unnamed
            # file (plain link(2) would link the /proc entry itself).
            dir_fd = os.open(tmp_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.link(f"/proc/self/fd/{fd}", tmp.name, dst_dir_fd=dir_fd, follow_symlinks=True)
            finally:
                os.close(dir_fd)
            return tmp
        except FileNotFoundError:
            pass  # no /proc: name it the old way
        finally:
            os.close(fd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        try:
            fill(fd, data, mode, owner)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_durably(
    tmp_dir: Path, final: Path, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None, replace: bool = True
) -> None:
    """Publish ``data`` at ``final`` atomically, staging it in ``tmp_dir``.

    ``tmp_dir`` must be on the same file system as ``final`` and is not the
    destination directory, so watchers of that directory (the path unit)
    never see temporary files.  With ``replace=False`` an existing ``final``
    is left alone and ``FileExistsError`` raised (link(2), atomic over NFS
    too).  ``owner`` is (uid, gid) for the new file.
    """
    tmp = _stage(tmp_dir, final.name, data, mode, owner)
    try:
        if replace:
            os.rename(tmp, final)
        else:
            os.link(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)


def lstat(path: Path) -> os.stat_result | None:
    """``os.lstat``, or None if nothing is there; every other error is raised."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def move_durably(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` and flush the destination directory."""
    os.rename(src, dst)
    fsync_dir(dst.parent)


def read_all(fd: int) -> bytes:
    """Everything left to read from ``fd``: a pipe until its writers close it,
    a small kernel file (cgroupfs, /proc).  The caller closes ``fd``."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def describe_mode(st: os.stat_result) -> str:
    return _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")


def read_untrusted(path: Path, cap: int = MAX_FILE, single_link: bool = True, claim: bool = False) -> tuple[bytes, os.stat_result]:
    """Read a file that anyone may have put there; see the module comment.

    ``single_link=False`` accepts files with several links (records, which
    miniq publishes with link(2)).  ``claim`` opens it for reading and
    writing: an NFSv4.0 server then gives no delegation on it; NFSv4.1+
    servers (Linux nfsd) still may, which is why a processor writes its claim
    afresh after reading it (claims.py, ``Claim.take``).
    Raises ``FileNotFoundError`` if it is gone, ``Unusable`` for everything
    else that is wrong with it.
    """
    flags = (_OPEN_FLAGS & ~os.O_RDONLY) | os.O_RDWR if claim else _OPEN_FLAGS
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise
        if e.errno == errno.ELOOP:
            raise Unusable("it is a symbolic link, which miniq never follows") from None
        if e.errno == errno.ENXIO:
            raise Unusable("it is a socket, not a regular file") from None
        raise Unusable(f"it cannot be opened: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unusable(f"it is {describe_mode(st)}, not a regular file")
        if single_link and st.st_nlink != 1:
            raise Unusable(f"it has {st.st_nlink} hard links, so its bytes may belong to another file")
        chunks = []
        left = cap + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise Unusable(f"it cannot be read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > cap:
        raise Unusable(f"it is larger than {cap} bytes, the most miniq reads", original=data[:KEEP_BYTES])
    return data, st


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def load_json(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON from an untrusted file; ``Unusable`` with the reason if it is not."""
    keep = data[:KEEP_BYTES]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Unusable(f"it is not UTF-8 ({e.reason} at byte {e.start})", original=keep) from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise Unusable(f"its JSON nests deeper than {max_depth} levels", original=keep) from None
    except ValueError as e:
        raise Unusable(f"it is not valid JSON: {e}", original=keep) from None
    if _depth(value) > max_depth:
        raise Unusable(f"its JSON nests deeper than {max_depth} levels", original=keep)
    return value


def dump(data: dict[str, Any]) -> bytes:
    """miniq's JSON: ASCII only, so undecodable arguments (lone surrogates
    from ``os.fsdecode``) survive and a job's argv round-trips byte for byte;
    compact (``miniq show --json`` prints it for people)."""
    return (json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


_libc = None


def libc() -> Any:
    """The C library, through the symbols the interpreter already has loaded
    (dlopen(NULL)): ``ctypes.util.find_library`` would run ``ldconfig -p``,
    a few milliseconds of every command that needs it."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def fresh_mtime(path: Path) -> float | None:
    """The modification time of ``path`` (never following a link) as the file
    server has it now, or None if it is gone.

    On NFS, stat may answer from the client's attribute cache, and opening a
    file may give this client a delegation on it, which would stall other
    machines' changes to it for the server's lease time (90 s) if this
    machine died.  statx with AT_STATX_FORCE_SYNC asks the server, opening
    nothing.
    """
    import ctypes

    buf = ctypes.create_string_buffer(256)
    # AT_FDCWD, AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC, STATX_MTIME
    if libc().statx(-100, os.fsencode(path), 0x100 | 0x2000, 0x40, buf) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOENT, errno.ESTALE):
            return None
        raise OSError(err, os.strerror(err), str(path))
    seconds = int.from_bytes(buf.raw[112:120], "little", signed=True)
    nanoseconds = int.from_bytes(buf.raw[120:124], "little")
    return seconds + nanoseconds / 1e9


NFS_SUPER_MAGIC = 0x6969


def fs_type(path: Path) -> int | None:
    """The file system type of ``path`` (statfs(2) ``f_type``), or None."""
    import ctypes

    buf = ctypes.create_string_buffer(256)  # struct statfs: f_type is the first word
    if libc().statfs(os.fsencode(path), buf) != 0:
        return None
    return int.from_bytes(buf.raw[:8], "little")


def on_nfs(path: Path) -> bool:
    return fs_type(path) == NFS_SUPER_MAGIC


def revalidate(directory: Path) -> None:
    """Make the next lookups in ``directory`` ask the file server.

    On NFS a name looked up recently may be answered from the client's
    caches for up to a minute; opening the directory revalidates it
    (close-to-open consistency).  On local file systems this is a no-op.
    """
    try:
        os.close(os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    except OSError:
        pass


def stamp(path: Path) -> tuple[float, int] | None:
    """(mtime, size) of ``path``, to tell when it changed; None if it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime, st.st_size
