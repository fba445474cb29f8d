"""Atomic file writes: a killed process never leaves a half-written image, shard or weight file.

Every temp file is ``.<name>.tmp*`` beside its target, so a resumed run can delete exactly
the leftovers of a writer that was killed (kill -9 runs no cleanup code).

Large files are written :data:`WRITE_CHUNK` bytes per ``write()``. On this project's machines
(Linux 6.18, ext4) buffered writes of several MB from one buffer ran erratically slow: with memory
free, a 2 GB safetensors file took 11-28 s through ``safetensors``' one write per tensor and about
1 s in 64 KiB writes (medians of ``dense-face bench safetensors-write``; single writes vary
widely). Once the page cache has filled memory, every writer there slows to 13-28 s for 2 GB
(``--fill-page-cache``).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

WRITE_CHUNK = 64 << 10


def write_chunked(fh, data) -> None:
    """``fh.write(data)`` for any buffer, :data:`WRITE_CHUNK` bytes at a time."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), WRITE_CHUNK):
        fh.write(view[start:start + WRITE_CHUNK])


def _temp_beside(path: Path, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp", suffix=suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should be an ordinary file
    return Path(tmp)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; on success it is fsynced and replaces ``path``."""
    path = Path(path)
    tmp = _temp_beside(path, path.suffix if suffix is None else suffix)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", **open_kwargs):
    """Like ``open(path, mode, ...)`` for writing, but the file appears whole or not at all."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as fh:
        yield fh


def remove_stale_temp(path) -> int:
    """Delete the ``.<name>.tmp*`` leftovers of a killed writer of ``path``; returns how many."""
    n = 0
    for p in Path(path).parent.glob(f".{Path(path).name}.tmp*"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n


def atomic_save_png(pil_image, path) -> None:
    with atomic_path(path, ".png") as tmp:
        pil_image.save(tmp, format="PNG")


def atomic_write_text(path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def check_output_path(given, option: str = "--out", folder: bool = False) -> Path:
    """Refuse, before any work starts, an output the user named that cannot be written; creates nothing.

    ``given`` is a file to write (``folder=False``) or a folder to create or fill. Refused, with a
    :class:`DenseFaceInputError` naming ``option`` and ``given``: an empty name, a folder where a file
    goes (or a file where a folder goes), a path below a file, and a path whose nearest existing
    folder this process cannot create files in (probed with a nameless temporary file, so even root
    on a read-only file system or /proc is caught). Returns the path, ``~`` expanded.
    """
    from .errors import DenseFaceInputError

    want = "folder" if folder else "file"
    if given is None or not str(given).strip():
        raise DenseFaceInputError(f"{option}: expected the path of an output {want}, got an empty name")
    path = Path(given).expanduser()
    try:
        if path.is_dir() and not folder:
            raise DenseFaceInputError(f"{option} {given}: is a folder; expected the path of a file to write "
                                      f"(e.g. {path / 'out.png'})")
        if path.exists() and not path.is_dir() and folder:
            raise DenseFaceInputError(f"{option} {given}: is a file; expected a folder (created if missing)")
        start = path.absolute() if folder else path.absolute().parent  # a file is replaced, its folder written
        existing = next(p for p in (start, *start.parents) if p.exists() or p == p.parent)
    except OSError as exc:  # e.g. a folder on the way this process may not look into
        raise DenseFaceInputError(f"{option} {given}: cannot be checked ({exc.strerror or exc})") from exc
    if not existing.is_dir():
        raise DenseFaceInputError(f"{option} {given}: {existing} is a file, so nothing can be written below it; "
                                  f"expected a path in a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise DenseFaceInputError(f"{option} {given}: cannot write in the folder {existing} "
                                  f"({exc.strerror or exc}); expected a writable location") from exc
    return path
