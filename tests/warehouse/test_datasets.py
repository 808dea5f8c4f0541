"""The dataset contract (warehouse.datasets): one rule for the current dataset, the export
layout the writer uses and the readers open."""
from __future__ import annotations

import pytest

from warehouse import datasets
from warehouse.db import Warehouse


def _record_version(wh: Warehouse, dataset_id: str, created_at: str, exports: tuple[str, ...] = ()) -> None:
    with wh.write() as con:
        con.execute("INSERT INTO dataset_versions (dataset_id, name, config, config_hash, rows_hash, n_rows, "
                    "n_regions, split_counts, exclusion_counts, agreement, created_at) "
                    "VALUES (?, 'v', '{}', 'c', 'r', 1, 1, '{}', '{}', '{}', ?)", [dataset_id, created_at])
        for fmt in exports:
            con.execute("INSERT INTO dataset_exports (dataset_id, format, path, n_files) VALUES (?, ?, ?, 1)",
                        [dataset_id, fmt, f"datasets/{dataset_id}/{fmt}"])


def test_current_dataset_is_the_newest_version_and_with_an_export_the_newest_exported(workspace):
    wh = Warehouse.open(workspace)
    with pytest.raises(datasets.DatasetNotFound, match="no dataset versions yet; build one first"):
        datasets.current_dataset_id(workspace)
    _record_version(wh, "sfr-old", "2026-01-01 00:00:00", exports=("hf",))
    _record_version(wh, "sfr-new", "2026-02-01 00:00:00", exports=("reward_json",))
    _record_version(wh, "sfr-b-tie", "2026-01-15 00:00:00", exports=("hf",))
    _record_version(wh, "sfr-a-tie", "2026-01-15 00:00:00", exports=("hf",))
    assert datasets.current_dataset_id(workspace) == "sfr-new"
    assert datasets.current_dataset_id(wh, export="hf") == "sfr-a-tie"          # ties: smallest id
    assert datasets.version_ids(workspace, export="hf") == ["sfr-a-tie", "sfr-b-tie", "sfr-old"]
    with pytest.raises(datasets.DatasetNotFound, match="no dataset version has a sft export yet"):
        datasets.current_dataset_id(workspace, export="sft")
    assert datasets.resolve_dataset_id(workspace, "latest") == "sfr-new"
    assert datasets.resolve_dataset_id(workspace, "sfr-o") == "sfr-old"
    with pytest.raises(datasets.DatasetNotFound, match="'sfr-' matches 4 versions"):
        datasets.resolve_dataset_id(workspace, "sfr-")


def test_layout_and_opening_a_version(workspace):
    assert datasets.export_dir(workspace, "sfr-x", "hf") == workspace.home / "datasets" / "sfr-x" / "hf"
    assert datasets.split_file_name("hf", "train") == "train-00000-of-00001.parquet"
    assert datasets.split_file_name("sft", "test") == "test.jsonl"
    with pytest.raises(ValueError, match="export format 'csv'"):
        datasets.export_dir(workspace, "sfr-x", "csv")
    with pytest.raises(datasets.DatasetNotFound, match=r"'sfr-x' has no export .* \(exported datasets: none\)"):
        datasets.open_version(workspace, "sfr-x")
    hf = datasets.export_dir(workspace, "sfr-x", "hf")
    hf.mkdir(parents=True)
    (hf / "test-00000-of-00001.parquet").write_bytes(b"")
    d = datasets.open_version(workspace, "sfr-x")
    assert d == datasets.version_dir(workspace, "sfr-x")
    assert datasets.split_path(d, "test") == hf / "test-00000-of-00001.parquet"
    assert datasets.split_path(hf, "test") == hf / "test-00000-of-00001.parquet"
    with pytest.raises(FileNotFoundError, match="no train split"):
        datasets.split_path(d, "train")
