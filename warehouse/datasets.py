"""The dataset contract between curation (the writer) and training, evaluation and the demo
(the readers): where a version's exports live, which version is "the current dataset", and how
to open one. Writers and readers use only these functions; nobody rebuilds a path by hand.

Layout (docs/architecture.md, "Dataset export"):

    <home>/datasets/<dataset_id>/                   version_dir: version.json, exports, copied images
    <home>/datasets/<dataset_id>/hf/{split}-00000-of-00001.parquet    the training contract
    <home>/datasets/<dataset_id>/{reward_json,sft}/{split}.jsonl       the JSON-lines exports

The current dataset is the newest version recorded in the warehouse (`dataset_versions`,
newest `created_at`, ties broken by id); asked for one with an export (`export="hf"` for
training), the newest version that has that export recorded in `dataset_exports`. A build
that reproduces an existing version returns that version unchanged, so it keeps its
`created_at`. In Dagster the id flows along the asset graph instead (`dataset_version` ->
exports and checks); this rule is for callers that start from nothing (the training asset
without a configured id, `sfr dataset ... latest`).
"""
from __future__ import annotations

from pathlib import Path

from warehouse.db import Warehouse
from warehouse.workspace import Workspace

EXPORT_FORMATS = ("hf", "reward_json", "sft")
SPLIT_FILE = "{split}-00000-of-00001.parquet"   # one parquet shard per split in hf/


class DatasetNotFound(FileNotFoundError):
    """No such dataset version or export; the message says what exists and what to run."""


def version_dir(ws: Workspace, dataset_id: str) -> Path:
    """<home>/datasets/<dataset_id>: everything written for one version."""
    return ws.datasets / dataset_id


def export_dir(ws: Workspace, dataset_id: str, fmt: str) -> Path:
    """The folder of one export format (hf | reward_json | sft) of a version."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format {fmt!r}: expected one of {list(EXPORT_FORMATS)}")
    return version_dir(ws, dataset_id) / fmt


def split_file_name(fmt: str, split: str) -> str:
    """File name of one split inside an export folder."""
    return SPLIT_FILE.format(split=split) if fmt == "hf" else f"{split}.jsonl"


def split_path(data_dir: str | Path, split: str) -> Path:
    """The parquet file of a split; `data_dir` is a version directory, its hf/ folder, or a
    parquet file (what a training config's `data_dir` may hold)."""
    p = Path(data_dir)
    if p.suffix == ".parquet":
        return p
    name = split_file_name("hf", split)
    for cand in (p / "hf" / name, p / name):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"dataset {data_dir}: no {split} split (looked for hf/{name})")


def exported_ids(ws: Workspace) -> list[str]:
    """Version directories that hold an hf export (on disk), sorted."""
    if not ws.datasets.is_dir():
        return []
    return sorted(p.name for p in ws.datasets.iterdir() if (p / "hf").is_dir())


def open_version(ws: Workspace, dataset_id: str) -> Path:
    """The directory of an exported version, ready for `split_path` and for a training config's
    `data_dir`. Raises DatasetNotFound naming the exported versions when it has no hf export."""
    d = version_dir(ws, dataset_id)
    if not (d / "hf").is_dir():
        raise DatasetNotFound(f"dataset {dataset_id!r} has no export at {d / 'hf'} "
                                f"(exported datasets: {exported_ids(ws) or 'none'})")
    return d


def recorded_exports(wh: Warehouse, dataset_id: str) -> dict[str, str]:
    """format -> path (relative to the workspace home) of the exports recorded for a version."""
    return dict(wh.query("SELECT format, path FROM dataset_exports WHERE dataset_id = ? ORDER BY format", [dataset_id]))


def version_ids(ws: Workspace | Warehouse, export: str | None = None) -> list[str]:
    """Recorded version ids, newest first (the order that defines "current"); with `export`,
    only versions that have that export recorded."""
    wh = ws if isinstance(ws, Warehouse) else Warehouse.open(ws)
    if export is None:
        rows = wh.query("SELECT dataset_id FROM dataset_versions ORDER BY created_at DESC, dataset_id")
    else:
        rows = wh.query("SELECT v.dataset_id FROM dataset_versions v JOIN dataset_exports e USING (dataset_id) "
                        "WHERE e.format = ? ORDER BY v.created_at DESC, v.dataset_id", [export])
    return [r[0] for r in rows]


def current_dataset_id(ws: Workspace | Warehouse, export: str | None = None) -> str:
    """The one rule for "the current dataset" (module docstring). Raises DatasetNotFound."""
    ids = version_ids(ws, export)
    if not ids:
        if export is None:
            raise DatasetNotFound("no dataset versions yet; build one first (sfr dataset build, "
                                  "or materialize dataset_version)")
        raise DatasetNotFound(f"no dataset version has a {export} export yet; export one first "
                              f"(sfr dataset export latest --format {export})")
    return ids[0]


def resolve_dataset_id(ws: Workspace | Warehouse, ref: str) -> str:
    """A dataset id, a unique prefix of one, or 'latest' (= current_dataset_id) -> the id.
    Raises DatasetNotFound."""
    ids = version_ids(ws)
    if not ids:
        raise DatasetNotFound("no dataset versions yet; run `sfr dataset build` first")
    if ref == "latest":
        return ids[0]
    matches = [i for i in ids if i == ref] or [i for i in ids if i.startswith(ref)]
    if len(matches) != 1:
        raise DatasetNotFound(f"dataset id {ref!r} matches {len(matches)} versions; see `sfr dataset list`")
    return matches[0]
