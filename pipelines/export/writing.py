"""All-or-nothing writing of an export's files.

Research software, NOT for diagnostic use.

Every file is written to a temporary name in its target folder; only when every file of the
export was written are they renamed into place (``os.replace``), so a failed export leaves no
half-written file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["StagedWrite"]


def _umask() -> int:
    # reading the umask means setting it: done under a lock-free import (one thread) rather than
    # per write, where a GUI worker thread creating a file in between would get mode 0666
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


class StagedWrite:
    """Context manager: ``with StagedWrite(out_dir) as w: w.write_bytes("a.json", data)``.

    On a clean exit every staged file is renamed into place; on an exception every temporary
    file is removed and nothing in ``out_dir`` changes.
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self._staged: list[tuple[Path, Path]] = []  # (temporary, final)

    def __enter__(self) -> StagedWrite:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Stage ``data`` for ``out_dir / name``; returns the final path."""
        final = self.out_dir / name
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.out_dir)
        self._staged.append((Path(tmp), final))  # recorded first: a failed write is cleaned up too
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp makes the file 0600; an export is handed on (PACS import, a shared folder), so
        # it gets the mode an ordinary new file would have under the process umask
        os.chmod(tmp, 0o666 & ~_UMASK)
        return final

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            for tmp, final in self._staged:
                os.replace(tmp, final)
        else:
            for tmp, _ in self._staged:
                tmp.unlink(missing_ok=True)
        self._staged.clear()
