"""Dagster resources shared by every domain. Configured from the environment (SFR_HOME) so the
same code runs against a laptop workspace or a team deployment."""
from __future__ import annotations

import dagster as dg

from warehouse.db import Warehouse
from warehouse.imagestore import LocalImageStore
from warehouse.workspace import Workspace, resolve_home


class WorkspaceResource(dg.ConfigurableResource):
    """The workspace directory (all state of one installation). Empty `home` = $SFR_HOME or
    ~/sfr-home."""

    home: str = ""

    def workspace(self) -> Workspace:
        return Workspace.open(self.home or None)

    def warehouse(self) -> Warehouse:
        return Warehouse.open(self.workspace())

    def image_store(self) -> LocalImageStore:
        return LocalImageStore(self.workspace())


# DuckDB is single-writer per file: every asset that writes the warehouse uses this pool, and
# dagster.yaml limits the pool to 1 (see docs/deployment.md). The warehouse lock serializes
# anyway; the pool keeps steps from waiting on it while holding a worker.
WAREHOUSE_POOL = "warehouse"
# Assets that talk to Label Studio (push, sync, simulated annotators) spend their time on HTTP to
# one server, and training holds the accelerators for its whole run: each has its own pool
# (deploy/dagster.postgres.yaml sets labelstudio 2, training 1). A step has one pool; their
# warehouse writes are short transactions that the warehouse lock serializes.
LABELSTUDIO_POOL = "labelstudio"
TRAINING_POOL = "training"


def default_resources() -> dict:
    home = dg.EnvVar("SFR_HOME").get_value("") or ""
    # Asset values (e.g. the dataset id `dataset_version` hands to the exports) are kept in the
    # workspace, not in DAGSTER_HOME: run pods on Kubernetes share the workspace volume only.
    storage = Workspace(resolve_home(home)).dagster_home / "storage"
    return {"workspace": WorkspaceResource(home=home), "io_manager": dg.FilesystemIOManager(base_dir=str(storage))}
