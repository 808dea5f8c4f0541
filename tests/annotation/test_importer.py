"""`sfr annotate import`: Label Studio JSON exports into the warehouse with provenance.

Most tests use exports written by hand in this platform's result format (fast, no server); one
round trip uses an export made by the platform's own real Label Studio and checks that import
stores exactly the rows sync stores."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from annotation.brush import mask_to_rle
from annotation.importer import ImportFileError, ImportMapping, import_export
from pipelines.cli import main as sfr
from tests.fixtures.labelstudio import seed_warehouse
from warehouse import masks
from warehouse.curation.aggregate import prepare_current
from warehouse.db import Warehouse
from warehouse.workspace import Workspace

KEY = "legacy-2024"


@pytest.fixture
def seeded(workspace, tmp_path):
    s = seed_warehouse(workspace, tmp_path / "incoming", names=("astronaut", "chelsea"), rollouts=1)
    rows = Warehouse.open(workspace).query(
        "SELECT s.sample_id, r.region_set_id FROM samples s JOIN region_sets r ON r.group_id = s.group_id "
        "ORDER BY s.sample_id")
    return {"ws": workspace, "tasks": rows, **s}


def regions_result(wh, rsid: str, ratings=((4, 5), (3, 4), (None, 5)), overall=(4, 4, 5), names=None) -> list[dict]:
    """A full annotation of the prefilled regions p0..p2 in our result format."""
    n = {"region": "region", "success": "success", "preserve": "preserve", "edited": "edited",
         "overall": "overall", "naturalness": "naturalness", "artifacts": "artifacts", **(names or {})}
    out = []
    for idx, kind, rle in wh.query("SELECT idx, kind, rle FROM regions WHERE region_set_id = ? ORDER BY idx", [rsid]):
        m = masks.decode(rle)
        rid = f"p{idx}"
        out.append({"id": rid, "from_name": n["region"], "to_name": n["edited"], "type": "brushlabels",
                    "original_width": m.shape[1], "original_height": m.shape[0], "image_rotation": 0,
                    "value": {"format": "rle", "rle": mask_to_rle(m), "brushlabels": [n.get(kind, kind)]}})
        success, preserve = ratings[idx]
        if success is not None:
            out.append({"id": rid, "from_name": n["success"], "to_name": n["edited"], "type": "rating",
                        "value": {"rating": success}})
        out.append({"id": rid, "from_name": n["preserve"], "to_name": n["edited"], "type": "rating",
                    "value": {"rating": preserve}})
    for rid, name, v in zip(("o1", "n1", "a1"), ("overall", "naturalness", "artifacts"), overall):
        out.append({"id": rid, "from_name": n[name], "to_name": n["edited"], "type": "rating", "value": {"rating": v}})
    return out


def export(tmp_path, tasks: list[dict], name="export.json"):
    p = tmp_path / name
    p.write_text(json.dumps(tasks))
    return p


def task(tid: int, sid: str, rsid: str | None, anns: list[dict], data_key="sample_id") -> dict:
    return {"id": tid, "data": {data_key: sid, "region_set_id": rsid}, "annotations": anns}


def ann(aid: int, result, user=7, **kw) -> dict:
    return {"id": aid, "completed_by": user, "result": result, "was_cancelled": False,
            "updated_at": "2024-05-01T10:00:00.000000Z", "lead_time": 9.5, **kw}


def test_import_stores_what_fits_and_reports_the_rest(seeded, tmp_path):
    wh = Warehouse.open(seeded["ws"])
    (s0, r0), (s1, r1) = seeded["tasks"]
    good = regions_result(wh, r0)
    unknown = regions_result(wh, r1) + [dict(good[0], id="p9")]            # p9 is not in the set
    unknown += [{"id": "p9", "from_name": "preserve", "to_name": "edited", "type": "rating", "value": {"rating": 3}},
                {"id": "p9", "from_name": "success", "to_name": "edited", "type": "rating", "value": {"rating": 3}}]
    bad_rle = regions_result(wh, r1)
    bad_rle[0] = {**bad_rle[0], "value": {**bad_rle[0]["value"], "rle": [1, 2, 3]}}
    out_of_range = regions_result(wh, r1, overall=(7, 4, 5))
    path = export(tmp_path, [
        task(1, s0, r0, [ann(11, good), ann(12, [], user=8, was_cancelled=True)]),
        task(2, s1, r1, [ann(21, unknown), ann(22, bad_rle), ann(23, out_of_range)]),
        task(3, "s-not-here", None, [ann(31, good)]),
    ])
    s = import_export(seeded["ws"], path, KEY)
    assert (s.tasks, s.annotations, s.imported, s.unchanged) == (3, 6, 2, 0)
    reasons = {r["annotation"]: r["reason"] for r in s.rejected}
    assert set(reasons) == {21, 22, 23, 31}
    assert "unknown region" in reasons[21] and "'p9'" in reasons[21]
    assert "malformed brush RLE" in reasons[22]
    assert "overall: rating 7 outside 1..5" in reasons[23]
    assert "is not in the warehouse; ingest it first" in reasons[31]
    rows = {r["ls_annotation_id"]: r for r in wh.query_dicts("SELECT * FROM annotations WHERE project_key = ?", [KEY])}
    assert set(rows) == {11, 12}
    a = rows[11]
    assert (a["source"], a["import_sha256"], a["valid"], a["overall"], a["annotator_id"]) == \
        ("imported", s.sha256, True, 4, "ls:7@imported")
    assert rows[12]["was_cancelled"] and rows[12]["invalid_reason"].startswith("skipped by the annotator")
    regs = wh.query("SELECT region_key, region_id, kind, success, preserve FROM annotation_regions "
                    "WHERE ls_annotation_id = 11 ORDER BY region_key")
    assert regs == [("p0", f"{r0}:0", "edit", 4, 5), ("p1", f"{r0}:1", "context", 3, 4),
                    ("p2", f"{r0}:2", "background", None, 5)]
    assert wh.query("SELECT task_key, ls_task_id, region_set_id FROM tasks WHERE project_key = ? ORDER BY 1", [KEY]) \
        == sorted([(f"{KEY}:{s0}", 1, r0), (f"{KEY}:{s1}", 2, r1)])


def test_importing_the_same_file_twice_changes_nothing(seeded, tmp_path, capsys):
    wh = Warehouse.open(seeded["ws"])
    (s0, r0), _ = seeded["tasks"]
    path = export(tmp_path, [task(1, s0, r0, [ann(11, regions_result(wh, r0))])])

    def state():
        return [wh.query(f"SELECT * EXCLUDE (synced_at) FROM {t} ORDER BY ALL") if t == "annotation_versions"
                else wh.query(f"SELECT * FROM {t} ORDER BY ALL")
                for t in ("annotations", "annotation_versions", "annotation_regions", "tasks", "annotation_imports")]

    rc = sfr(["--home", str(seeded["ws"].home), "annotate", "import", str(path), "--project", KEY])
    first = json.loads(capsys.readouterr().out)
    assert rc == 0 and (first["imported"], first["already_imported"]) == (1, False)
    before = state()
    rc = sfr(["--home", str(seeded["ws"].home), "annotate", "import", str(path), "--project", KEY])
    again = json.loads(capsys.readouterr().out)
    assert rc == 0 and again["already_imported"] and again["imported"] == 1
    assert state() == before
    # The same annotation in a different file (another export of the project): unchanged.
    other = export(tmp_path, [task(1, s0, r0, [ann(11, regions_result(wh, r0))])], name="again.json")
    other.write_text(other.read_text() + "\n")
    s = import_export(seeded["ws"], other, KEY)
    assert (s.imported, s.unchanged, s.already_imported) == (0, 1, False)
    assert wh.query("SELECT count(*) FROM annotation_versions")[0][0] == 1


def test_older_config_through_a_yaml_mapping(seeded, tmp_path):
    wh = Warehouse.open(seeded["ws"])
    (s0, r0), _ = seeded["tasks"]
    theirs = {"region": "mask", "success": "done_well", "preserve": "kept", "edited": "img", "overall": "quality",
              "naturalness": "natural", "artifacts": "clean", "edit": "Changed", "context": "Object",
              "background": "Rest"}
    result = regions_result(wh, r0, names=theirs)
    path = export(tmp_path, [task(5, s0, r0, [ann(51, result)], data_key="sid")])
    plain = import_export(seeded["ws"], path, KEY)
    assert plain.imported == 0 and "no sample_id" in plain.rejected[0]["reason"]
    mapping_file = tmp_path / "old.yaml"
    mapping_file.write_text(yaml.safe_dump({
        "from_name": {"mask": "region", "done_well": "success", "kept": "preserve", "quality": "overall",
                      "natural": "naturalness", "clean": "artifacts"},
        "to_name": {"img": "edited"}, "labels": {"Changed": "edit", "Object": "context", "Rest": "background"},
        "data": {"sample_id": "sid"}}))
    path2 = export(tmp_path, [task(5, s0, r0, [ann(51, result)], data_key="sid")], name="export2.json")
    path2.write_text(path2.read_text() + " ")   # another file: the first one is recorded as imported
    s = import_export(seeded["ws"], path2, KEY, ImportMapping.from_yaml(mapping_file))
    assert (s.imported, s.rejected) == (1, [])
    assert wh.query("SELECT kind, success, preserve FROM annotation_regions ORDER BY region_key") == \
        [("edit", 4, 5), ("context", 3, 4), ("background", None, 5)]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"labels": {"Changed": "sky"}}))
    with pytest.raises(ImportFileError, match="not region kinds"):
        ImportMapping.from_yaml(bad)


def test_curation_includes_or_excludes_imported_annotations(seeded, tmp_path):
    from warehouse.curation.config import CurationConfig

    wh = Warehouse.open(seeded["ws"])
    (s0, r0), _ = seeded["tasks"]
    import_export(seeded["ws"], export(tmp_path, [task(1, s0, r0, [ann(11, regions_result(wh, r0))])]), KEY)
    with wh.write() as con:   # a synced annotation of the same sample by someone else
        con.execute("INSERT INTO annotations (ls_annotation_id, project_key, task_key, sample_id, annotator_id, "
                    "version, valid, overall) VALUES (99, 'live', 'live:x', ?, 'ls:1@h', 1, true, 2)", [s0])
    for sources, want in (((), {11, 99}), (("sync",), {99}), (("imported",), {11})):
        with wh.read() as con:
            prepare_current(con, annotation_sources=sources)
            assert {r[0] for r in con.execute("SELECT ls_annotation_id FROM cur_ann").fetchall()} == want
    assert CurationConfig(annotation_sources=["imported"]).hash() != CurationConfig().hash()
    assert "annotation_sources" not in CurationConfig().to_dict()   # old configs keep their ids
    with pytest.raises(ValueError, match="annotation_sources"):
        CurationConfig(annotation_sources=["manual"])


def test_bad_files_and_live_projects_are_refused(seeded, tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"not": "a list"}')
    with pytest.raises(ImportFileError, match="list of tasks"):
        import_export(seeded["ws"], p, KEY)
    p.write_text("[{")
    with pytest.raises(ImportFileError, match="not JSON"):
        import_export(seeded["ws"], p, KEY)
    with Warehouse.open(seeded["ws"]).write() as con:
        con.execute("INSERT INTO sync_state (project_key, cursor) VALUES ('live', '{}')")
    with pytest.raises(ImportFileError, match="synced from a live Label Studio"):
        import_export(seeded["ws"], export(tmp_path, []), "live")


# ----------------------------------------------------------------------------- real Label Studio
def test_an_export_of_the_real_label_studio_round_trips_into_the_rows_sync_stores(labelstudio, tmp_path):
    from annotation.client import LSHttp
    from annotation.push import push_batch
    from annotation.sync import sync_project

    ws = labelstudio.workspace
    seeded = seed_warehouse(ws, tmp_path / "incoming", names=("astronaut", "chelsea"), rollouts=1)
    project = "roundtrip"
    pushed = push_batch(ws, project, batch_id=seeded["batch_id"], conn=labelstudio.conn)
    # A copy of the warehouse as it is before any annotation arrives.
    copy = Workspace.open(tmp_path / "copy")
    for f in ws.warehouse_path.parent.glob(ws.warehouse_path.name + "*"):
        shutil.copy(f, copy.warehouse_path.parent / f.name)
    wh = Warehouse.open(ws)
    tasks = wh.query("SELECT sample_id, ls_task_id, region_set_id FROM tasks WHERE project_key = ? ORDER BY 1",
                     [project])
    ls = labelstudio.client()
    (s0, t0, r0), (s1, t1, r1) = tasks
    ls.annotations.create(id=t0, result=regions_result(wh, r0), lead_time=12.5)
    ls.annotations.create(id=t1, result=regions_result(wh, r1, ratings=((2, 3), (5, 5), (None, 4))), lead_time=3.0)
    ls.annotations.create(id=t1, result=[], was_cancelled=True)
    sync_project(ws, project, conn=labelstudio.conn)
    with LSHttp(labelstudio.conn) as http:
        exported = http.get(f"/api/projects/{pushed.ls_project_id}/export", exportType="JSON")
    path = export(tmp_path, exported)

    s = import_export(copy, path, project)
    assert (s.imported, s.rejected) == (3, [])
    cols = {"annotations": "* EXCLUDE (source, import_sha256)", "annotation_versions": "* EXCLUDE (synced_at)",
            "annotation_regions": "*", "tasks": "* EXCLUDE (pushed_at)"}
    for table, sel in cols.items():
        synced = wh.query(f"SELECT {sel} FROM {table} WHERE project_key = ? ORDER BY ALL", [project])
        imported = Warehouse.open(copy).query(f"SELECT {sel} FROM {table} WHERE project_key = ? ORDER BY ALL",
                                              [project])
        assert imported == synced and len(synced) >= 2, table
    assert Warehouse.open(copy).query("SELECT DISTINCT source, import_sha256 FROM annotations") == \
        [("imported", s.sha256)]
    assert wh.query("SELECT DISTINCT source FROM annotations") == [("sync",)]
