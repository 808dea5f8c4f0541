"""Warehouse snapshots as hive-partitioned parquet, read through the Warehouse API (issue 9)."""
import json

import pytest

from warehouse.curation.aggregate import aggregate_into_tables, prepare_current
from warehouse.db import Warehouse, WarehouseError
from warehouse.lake import PARTITIONS, LakeWarehouse, export_snapshot, list_snapshots


def _table_rows(wh, table):
    with wh.read() as con:
        cols = [c for (c,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
            [table]).fetchall()]
        return cols, sorted(con.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)


def _aggregates(wh):
    with wh.read() as con:
        prepare_current(con)
        aggregate_into_tables(con, persist=False)
        return (con.execute("SELECT * FROM cur_agg_samples ORDER BY ALL").fetchall(),
                con.execute("SELECT * FROM cur_agg_regions ORDER BY ALL").fetchall())


def test_snapshot_reads_back_every_table_and_row(curation_ws, annotated_warehouse, tmp_path):
    wh = Warehouse.open(curation_ws)
    with wh.write() as con:  # a partition value that needs escaping, and a NULL one
        con.execute("UPDATE samples SET batch_id = 'b:x/y z' WHERE sample_id = (SELECT min(sample_id) FROM samples)")
        con.execute("UPDATE annotations SET annotator_id = NULL WHERE ls_annotation_id = "
                    "(SELECT max(ls_annotation_id) FROM annotations)")
    # annotations partitioned by a nullable column here, to cover NULL partition values
    snap = export_snapshot(wh, tmp_path / "lake", "s1", PARTITIONS | {"annotations": ["annotator_id"]})
    assert snap.rows == wh.counts() and snap.schema_version == wh.schema_version()
    # Partitioned on disk, one folder per batch.
    assert len(list((snap.path / "samples").glob("batch_id=*"))) >= 2
    assert (snap.path / "annotations" / "annotator_id=__HIVE_DEFAULT_PARTITION__").is_dir()
    lake = LakeWarehouse.open(tmp_path / "lake")
    assert lake.counts() == wh.counts() and lake.schema_version() == wh.schema_version()
    for table in wh.counts():
        assert _table_rows(lake, table) == _table_rows(wh, table), table  # same columns, order, types, rows
    # Code written against the read API runs unchanged: the curation aggregation agrees.
    assert _aggregates(lake) == _aggregates(wh)
    assert lake.query_dicts("SELECT count(*) AS n FROM annotations WHERE annotator_id IS NULL") == [{"n": 1}]
    assert lake.query("SELECT count(*) FROM samples WHERE batch_id = 'b:x/y z'") == [(1,)]


def test_snapshots_are_isolated_immutable_and_only_complete_ones_are_visible(curation_ws, annotated_warehouse,
                                                                             tmp_path):
    wh = Warehouse.open(curation_ws)
    root = tmp_path / "lake"
    with pytest.raises(WarehouseError, match="no snapshot yet"):
        LakeWarehouse.open(root)
    first = export_snapshot(wh, root, "v1")
    n_ann = first.rows["annotations"]
    with wh.write() as con:
        con.execute("DELETE FROM annotation_regions WHERE ls_annotation_id = (SELECT min(ls_annotation_id) FROM annotations)")
        con.execute("DELETE FROM annotations WHERE ls_annotation_id = (SELECT min(ls_annotation_id) FROM annotations)")
    export_snapshot(wh, root, "v2")
    assert LakeWarehouse.open(root).counts()["annotations"] == n_ann - 1          # LATEST
    assert LakeWarehouse.open(root, "v1").counts()["annotations"] == n_ann         # still readable
    with pytest.raises(WarehouseError, match="already exists"):
        export_snapshot(wh, root, "v1")
    with pytest.raises(WarehouseError, match="letters, digits"):
        export_snapshot(wh, root, "../escape")
    # A crashed export (folder without a manifest) is not a snapshot and LATEST never points at it.
    (root / "snapshots" / "v3").mkdir()
    assert list_snapshots(root) == ["v1", "v2"]
    with pytest.raises(WarehouseError, match="not a complete snapshot.*v1, v2"):
        LakeWarehouse.open(root, "v3")
    assert json.loads((root / "snapshots" / "v2" / "manifest.json").read_text())["snapshot_id"] == "v2"
    with pytest.raises(WarehouseError, match="read-only"):
        LakeWarehouse.open(root).write()


def test_empty_warehouse_snapshot(workspace, tmp_path):
    wh = Warehouse.open(workspace)
    snap = export_snapshot(wh, tmp_path / "lake")
    lake = LakeWarehouse.open(tmp_path / "lake", snap.snapshot_id)
    assert set(lake.counts()) == set(wh.counts()) and sum(lake.counts().values()) == sum(wh.counts().values())
    assert _table_rows(lake, "samples") == _table_rows(wh, "samples")
