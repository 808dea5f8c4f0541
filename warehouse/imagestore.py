"""Content-addressed image storage: bytes are stored once under their sha256.

`ImageStore` is the interface (put/get/exists/uri/local_path); `LocalImageStore` keeps files
under `<home>/images/<sha[:2]>/<sha>.<ext>`. An fsspec/S3 store implements the same methods;
the warehouse records `uri`, which for the local store is relative to the workspace home.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from warehouse.workspace import Workspace

_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif", "GIF": "gif"}
_EXTS = (*dict.fromkeys(_EXT.values()), "bin")   # every extension put() may write


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageStore(Protocol):
    def put(self, data: bytes, fmt: str) -> tuple[str, str]:
        """Store bytes; return (sha256, uri). Idempotent."""

    def get(self, sha256: str) -> bytes: ...

    def exists(self, sha256: str) -> bool: ...

    def local_path(self, sha256: str) -> Path:
        """A local file holding the bytes (downloaded to a cache for remote stores)."""


class LocalImageStore:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.root = workspace.images

    def _path(self, sha256: str, fmt: str | None = None) -> Path:
        d = self.root / sha256[:2]
        if fmt is not None:
            return d / f"{sha256}.{_EXT.get(fmt.upper(), 'bin')}"
        # A stat per known extension (PNG first, as most images are): a glob compiles a pattern
        # per call, ~0.5 ms, which dominated hashing a 14,000-image warehouse.
        for ext in _EXTS:
            path = d / f"{sha256}.{ext}"
            if path.is_file():
                return path
        raise FileNotFoundError(f"image {sha256} is not in the store at {self.root}")

    def put(self, data: bytes, fmt: str) -> tuple[str, str]:
        sha = sha256_bytes(data)
        path = self._path(sha, fmt)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write to a temp file and rename: a crash never leaves a truncated image under a
            # valid content address.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return sha, self.workspace.relative(path)

    def get(self, sha256: str) -> bytes:
        return self._path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        try:
            self._path(sha256)
            return True
        except FileNotFoundError:
            return False

    def local_path(self, sha256: str) -> Path:
        return self._path(sha256)
