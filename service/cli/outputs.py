"""Files the command line writes: checked before any work, and never left half-written.

An output path is refused up front when it names a directory or a file in a directory that
does not exist (``--model-out /no/such/dir/m.ctr`` used to create the directories
silently: a typo would put a model where nobody looks). Text outputs are written under a
temporary name in their directory and renamed when the run succeeds, so a failed run
leaves neither a partial predictions file nor a stale metrics file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from . import CommandError


def check_output(path: Path | None, flag: str) -> None:
    """Refuse ``path`` (given as ``flag``) if a file cannot be created there."""
    if path is None:
        return
    if path.is_dir():
        raise CommandError(f"{flag} {path}: is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise CommandError(f"{flag} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CommandError(f"{flag} {path}: cannot write in {parent}")


@contextlib.contextmanager
def atomic_text(path: Path) -> Iterator[TextIO]:
    """A text file at ``path``, written under a temporary name and renamed there only if
    the block ends without an exception (then nothing is left behind)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
        with os.fdopen(fd, "w", buffering=1 << 20) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """``path.write_text(text)``, atomically."""
    with atomic_text(path) as fh:
        fh.write(text)
