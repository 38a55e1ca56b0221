"""The power-cut filesystem: a FUSE server that keeps unsynced changes in a volatile layer.

Run as a child process (``python -m support.powercut.fs DURABLE LIVE MOUNTPOINT``, with
``tests/`` on ``sys.path``); :class:`support.powercut.mount.PowerCutMount` drives it.

Model (what survives a cut):

* ``DURABLE`` is the disk: what a reboot after a power cut finds. ``LIVE``
  starts as a copy of it and is what every process on the mount sees (reads,
  ``stat``, ``readdir`` and ``mmap`` see every write at once, as with a page
  cache).
* **File data** (``write``, ``truncate``, the size): held per file, in 4 KiB
  blocks, until ``fsync``/``fdatasync`` of *that* file copies its dirty blocks
  and its size to ``DURABLE``. A file that is never synced (SQLite's ``-shm``)
  never reaches the disk.
* **Names** (``create``, ``mkdir``, ``rename``, ``unlink``, ``rmdir``): one
  ordered journal for the whole filesystem, committed (applied in order to
  ``DURABLE``) by the next ``fsync``/``fdatasync`` of any file or ``fsyncdir``
  of any directory -- the way a journaling filesystem with one journal (ext4
  ``data=ordered``) commits metadata: an fsync commits every name change made
  before it, never one made after. A file created and never followed by any
  fsync vanishes at a cut; a file whose name was committed but whose data was
  not survives with the data it had at its last fsync (a new file: empty).
  This is weaker than strict POSIX (only a directory fsync makes a name
  durable) and it is what SQLite needs: in WAL mode it fsyncs the database,
  and the directory after creating a WAL.
* **Cut** (a line ``cut`` on stdin): under the same lock that every fsync
  holds, the volatile layer is abandoned and every later operation fails with
  ``EIO``; the process answers ``cut`` and waits to be unmounted. Nothing
  after a cut reaches ``DURABLE``; an fsync is either wholly before the cut
  (durable) or fails. ``arm NAME N`` (answered ``armed``) makes the Nth next
  fsync of a file called NAME cut instead of syncing (the process then says
  ``cut``): a power failure at an exact point of a program.

Not modelled: torn or reordered writes within one fsync (an fsync is atomic
here; SQLite does not rely on that, its WAL frames carry checksums), mode and
time changes (applied live only), open files under a renamed directory, hard
links and symlinks. Writes to ``DURABLE`` are not themselves fsync'd: the real
disk under the test is not power-cut, only this filesystem is.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import mfusepy

BLOCK = 4096
_ACCESS_MODE = os.O_RDONLY | os.O_WRONLY | os.O_RDWR

__all__ = ["BLOCK", "PowerCutOperations", "main"]


@dataclass
class _FileState:
    """Unsynced data of one file (shared by every handle open on it)."""

    path: str  # current name, relative to the mount root ("/a/b")
    dirty_blocks: set[int] = field(default_factory=set)
    unlinked: bool = False

    def dirty(self, start: int, end: int) -> None:
        """Bytes ``[start, end)`` differ from the disk."""
        if end > start:
            self.dirty_blocks.update(range(start // BLOCK, (end - 1) // BLOCK + 1))


class PowerCutOperations(mfusepy.Operations):  # type: ignore[misc]
    """FUSE operations over ``live`` that only let fsync'd state reach ``durable``."""

    use_ns = True

    def __init__(self, durable: str, live: str) -> None:
        self.durable = durable
        self.live = live
        self._lock = threading.RLock()
        self._journal: list[tuple[str, str, str, int]] = []  # (op, path, new_path, mode)
        self._files: dict[str, _FileState] = {}
        self._handles: dict[int, _FileState] = {}
        self._cut = False
        self._armed: str | None = None
        self._armed_left = 0
        self.syncs = 0

    # ---------------------------------------------------------------- helpers

    def _live(self, path: str) -> str:
        return os.path.join(self.live, path.lstrip("/"))

    def _durable(self, path: str) -> str:
        return os.path.join(self.durable, path.lstrip("/"))

    def _check(self) -> None:
        if self._cut:
            raise mfusepy.FuseOSError(errno.EIO)

    def _state(self, path: str) -> _FileState:
        state = self._files.get(path)
        if state is None:
            state = self._files[path] = _FileState(path)
        return state

    def cut(self) -> None:
        """Power failure: forget everything unsynced; every later operation fails."""
        with self._lock:
            self._cut = True
            self._journal.clear()
            self._files.clear()

    def arm(self, name: str, nth: int) -> None:
        """Cut instead of the ``nth`` next fsync of a file called ``name`` (any directory)."""
        with self._lock:
            self._armed, self._armed_left = name, nth

    # ------------------------------------------------------------ durability

    def _commit_journal(self) -> None:
        for op, path, new_path, mode in self._journal:
            target = self._durable(path)
            if op == "create":
                with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb"):
                    pass
            elif op == "mkdir":
                os.mkdir(target, mode)
            elif op == "unlink":
                os.unlink(target)
            elif op == "rmdir":
                os.rmdir(target)
            elif op == "rename":
                os.rename(target, self._durable(new_path))
        self._journal.clear()

    def _write_back(self, state: _FileState, fd: int) -> None:
        if state.unlinked:
            return
        size = os.fstat(fd).st_size
        out = os.open(self._durable(state.path), os.O_WRONLY)
        try:
            for block in sorted(state.dirty_blocks):
                offset = block * BLOCK
                if offset < size:
                    os.pwrite(out, os.pread(fd, min(BLOCK, size - offset), offset), offset)
            os.ftruncate(out, size)
        finally:
            os.close(out)
        state.dirty_blocks.clear()

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        """Commit the name journal, then this file's dirty blocks and size."""
        with self._lock:
            self._check()
            if self._armed == os.path.basename(self._handles[fh].path):
                self._armed_left -= 1
            if self._armed is not None and self._armed_left == 0:
                # The power fails just before this fsync: nothing of it reaches the disk.
                self.cut()
                _tell("cut")
                raise mfusepy.FuseOSError(errno.EIO)
            self._commit_journal()
            self._write_back(self._handles[fh], fh)
            self.syncs += 1
        return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        """Commit the name journal."""
        with self._lock:
            self._check()
            self._commit_journal()
            self.syncs += 1
        return 0

    # ------------------------------------------------------------ names

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        """``stat`` of the live file."""
        with self._lock:
            self._check()
            st = os.fstat(fh) if fh is not None else os.lstat(self._live(path or "/"))
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino")
        attrs: dict[str, Any] = {key: getattr(st, key) for key in keys}
        for key in ("st_atime", "st_mtime", "st_ctime"):
            attrs[key] = getattr(st, key + "_ns")
        return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        """Live directory entries."""
        with self._lock:
            self._check()
            return [".", "..", *os.listdir(self._live(path))]

    def statfs(self, path: str) -> dict[str, int]:
        """Free space of the disk under the live layer (the spool checks it)."""
        st = os.statvfs(self.live)
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree")
        return {key: getattr(st, key) for key in (*keys, "f_favail", "f_namemax")}

    def mkdir(self, path: str, mode: int) -> int:
        """Create a directory now; its name is journaled."""
        with self._lock:
            self._check()
            os.mkdir(self._live(path), mode)
            self._journal.append(("mkdir", path, "", mode))
        return 0

    def rmdir(self, path: str) -> int:
        """Remove a directory now; journaled."""
        with self._lock:
            self._check()
            os.rmdir(self._live(path))
            self._journal.append(("rmdir", path, "", 0))
        return 0

    def unlink(self, path: str) -> int:
        """Remove a name now; journaled. Open handles keep the data (unsynced forever)."""
        with self._lock:
            self._check()
            os.unlink(self._live(path))
            self._journal.append(("unlink", path, "", 0))
            state = self._files.pop(path, None)
            if state is not None:
                state.unlinked = True
        return 0

    def rename(self, old: str, new: str) -> int:
        """Rename now; journaled (the replaced target's pending data is gone with it)."""
        with self._lock:
            self._check()
            os.rename(self._live(old), self._live(new))
            self._journal.append(("rename", old, new, 0))
            replaced = self._files.pop(new, None)
            if replaced is not None:
                replaced.unlinked = True
            moved = self._files.pop(old, None)
            if moved is not None:
                moved.path = new
                self._files[new] = moved
        return 0

    # ------------------------------------------------------------ data

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        """Open with O_CREAT; a new name is journaled."""
        flags = _read_write(fi if isinstance(fi, int) else os.O_RDWR) | os.O_CREAT
        with self._lock:
            self._check()
            live = self._live(path)
            existed = os.path.lexists(live)
            old_size = os.stat(live).st_size if existed else 0
            fd = os.open(live, flags & ~os.O_EXCL if existed else flags, mode)
            if not existed:
                self._journal.append(("create", path, "", stat.S_IMODE(mode)))
            return self._opened(path, fd, old_size)

    def open(self, path: str, flags: int) -> int:
        """Open the live file."""
        with self._lock:
            self._check()
            live = self._live(path)
            old_size = os.stat(live).st_size
            return self._opened(path, os.open(live, _read_write(flags)), old_size)

    def _opened(self, path: str, fd: int, old_size: int) -> int:
        state = self._state(path)
        self._handles[fd] = state
        state.dirty(os.fstat(fd).st_size, old_size)  # O_TRUNC cut the file
        return fd

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        """Read the live file (pending writes included)."""
        with self._lock:
            self._check()
            return os.pread(fh, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        """Write to the live file; the blocks stay dirty until this file's fsync."""
        with self._lock:
            self._check()
            written = os.pwrite(fh, data, offset)
            self._handles[fh].dirty(offset, offset + written)
            return written

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        """Change the live size; the new size is durable at this file's next fsync."""
        with self._lock:
            self._check()
            if fh is not None:
                old = os.fstat(fh).st_size
                os.ftruncate(fh, length)
                state = self._handles[fh]
            else:
                old = os.stat(self._live(path or "/")).st_size
                os.truncate(self._live(path or "/"), length)
                state = self._state(path or "/")
            # Cut-off bytes must read as zeros if the file grows again before the sync.
            state.dirty(length, old)
        return 0

    def release(self, path: str | None, fh: int) -> int:
        """Close the live handle (closing syncs nothing, as on a real disk)."""
        with self._lock:
            self._handles.pop(fh, None)
            os.close(fh)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        """Nothing to do: close(2) is not a sync."""
        with self._lock:
            self._check()
        return 0

    def chmod(self, path: str, mode: int) -> int:
        """Mode changes are applied live only (not modelled)."""
        os.chmod(self._live(path), mode)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        """Times are applied live only (not modelled)."""
        if times is None:
            os.utime(self._live(path))
        else:
            os.utime(self._live(path), ns=times)
        return 0

    def init(self, path: str) -> None:
        """Mounted: tell the controller."""
        _tell("ready")


def _read_write(flags: int) -> int:
    # A write-only handle must still be readable here: fsync copies from it.
    return (flags & ~_ACCESS_MODE) | os.O_RDWR


_TELL_LOCK = threading.Lock()


def _tell(word: str) -> None:
    with _TELL_LOCK:
        sys.stdout.write(word + "\n")
        sys.stdout.flush()


def _serve_control(ops: PowerCutOperations, mountpoint: str) -> None:
    for line in _stdin_lines():
        if line == "cut":
            ops.cut()
            _tell("cut")
        elif line.startswith("arm "):
            _, name, nth = line.split(" ")
            ops.arm(name, int(nth))
            _tell("armed")
    # The controller is gone: do not leave a dead mount behind.
    subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False)


def _stdin_lines() -> Iterator[str]:
    for line in sys.stdin:
        yield line.strip()


def main(argv: list[str]) -> None:
    """Mount the filesystem (foreground) until unmounted."""
    durable, live, mountpoint = argv
    shutil.rmtree(live, ignore_errors=True)
    shutil.copytree(durable, live, symlinks=True)
    ops = PowerCutOperations(durable, live)
    threading.Thread(target=_serve_control, args=(ops, mountpoint), daemon=True).start()
    mfusepy.FUSE(ops, mountpoint, foreground=True, nothreads=True, hard_remove=True)


if __name__ == "__main__":
    main(sys.argv[1:])
