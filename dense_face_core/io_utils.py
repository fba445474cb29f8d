"""Atomic file writes: a killed process never leaves a half-written image, shard or weight file.

Every temp file is ``.<name>.tmp*`` beside its target, so a resumed run can delete exactly
the leftovers of a writer that was killed (kill -9 runs no cleanup code).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
