"""Where one installation keeps all its state.

Resolution order for the home directory: explicit argument (`--home`), `$SFR_HOME`,
`~/sfr-home`. Everything the warehouse records is relative to the home, so a workspace can
be moved or copied as one directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = Path("~/sfr-home")


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """The workspace directory: `home` if given, else $SFR_HOME, else ~/sfr-home."""
    raw = home if home not in (None, "") else os.environ.get("SFR_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True)
class Workspace:
    home: Path

    @classmethod
    def open(cls, home: str | os.PathLike | None = None, create: bool = True) -> "Workspace":
        ws = cls(resolve_home(home))
        if create:
            ws.ensure()
        elif not ws.home.is_dir():
            raise FileNotFoundError(
                f"workspace {ws.home} does not exist; create it with `sfr --home {ws.home} status` "
                "or point --home / SFR_HOME at an existing workspace"
            )
        return ws

    def ensure(self) -> None:
        try:
            for d in (self.home, self.images, self.media, self.labelstudio, self.datasets,
                      self.models, self.batches, self.incoming, self.reports, self.dagster_home):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(
                f"cannot create workspace directories under {self.home}: {e.strerror}. "
                "Pick a writable location with --home or SFR_HOME."
            ) from e

    # Layout (see docs/architecture.md).
    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def images(self) -> Path:
        return self.home / "images"

    @property
    def media(self) -> Path:
        return self.home / "media"

    @property
    def labelstudio(self) -> Path:
        return self.home / "labelstudio"

    @property
    def datasets(self) -> Path:
        return self.home / "datasets"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def batches(self) -> Path:
        return self.home / "batches"

    @property
    def incoming(self) -> Path:
        """Drop manifests (or parquet dataset folders) here; a Dagster sensor ingests them."""
        return self.home / "incoming"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def relative(self, path: str | os.PathLike) -> str:
        """A path under the home as the warehouse stores it (POSIX, relative)."""
        return Path(path).resolve().relative_to(self.home).as_posix()

    def absolute(self, stored: str) -> Path:
        """Inverse of `relative` for paths read back from the warehouse."""
        p = Path(stored)
        return p if p.is_absolute() else self.home / p
