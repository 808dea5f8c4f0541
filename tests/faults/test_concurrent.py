"""Four processes at once on one workspace (issue 9): two `sfr ingest` of different batches and
two `sfr annotate sync` of the same project. No lock error reaches the user, no row is lost,
no annotation version is written twice."""
import json
import os
import subprocess
import sys

from annotation.client import LSHttp
from annotation.push import push_batch
from tests.faults.test_labelstudio_kills import _result
from tests.fixtures.core import make_samples
from tests.fixtures.labelstudio import seed_warehouse
from warehouse.db import Warehouse

KEY = "concurrent"


def test_two_ingests_and_two_syncs_at_once(labelstudio, tmp_path):
    ws = labelstudio.workspace
    seeded = seed_warehouse(ws, tmp_path / "seed", names=("astronaut", "coffee"), rollouts=3)
    s = push_batch(ws, KEY, batch_id=seeded["batch_id"], conn=labelstudio.conn)
    with LSHttp(labelstudio.conn) as http:
        for page in http.iter_tasks(s.ls_project_id, all_fields=True):
            for task in page:
                http.post(f"/api/tasks/{task['id']}/annotations/", {"result": _result(task, 4)})
    m1 = make_samples(tmp_path / "a", names=("chelsea", "rocket"), rollouts=4, size=96)
    m2 = make_samples(tmp_path / "b", names=("astronaut", "coffee"), rollouts=4, size=80)
    env = {**os.environ, "SFR_HOME": str(ws.home), "LABEL_STUDIO_URL": labelstudio.base_url,
           "LABEL_STUDIO_API_KEY": labelstudio.api_key}
    cmds = [["ingest", str(m1)], ["ingest", str(m2)], ["annotate", "sync", "--project", KEY],
            ["annotate", "sync", "--project", KEY]]
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.cli", *c], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e[-1500:] for _, e in outs]
    assert not any("lock" in e.lower() for _, e in outs), [e for _, e in outs]
    assert sum(json.loads(o)["ingested"] for o, _ in outs[:2]) == 16
    wh = Warehouse.open(ws)
    assert wh.query("SELECT count(*) FROM samples WHERE batch_id <> ?", [seeded["batch_id"]]) == [(16,)]
    n_tasks = len(seeded["sample_ids"])
    assert wh.query("SELECT count(*) FROM annotations WHERE project_key = ?", [KEY]) == [(n_tasks,)]
    # Both syncs saw the same annotations: exactly one version each, not two.
    assert wh.query("SELECT count(*), max(version) FROM annotation_versions WHERE project_key = ?",
                    [KEY]) == [(n_tasks, 1)]
