"""The data flywheel end to end: `sfr serve --capture-rate` (a real server process) scores
rollouts and captures them, `captured_rollouts_sensor` ticks against a Dagster instance, Dagster
materializes ingest -> region proposals -> flywheel selection -> Label Studio tasks in a real
Label Studio, the daily budget holds across ticks, reruns push nothing twice, and the annotated
tasks land in the next dataset version."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from pipelines.resources import WorkspaceResource
from tests.fixtures.serving import edits_of, photo
from warehouse.db import Warehouse

REPO = Path(__file__).resolve().parents[2]
PROJECT = "flywheel-e2e"


def test_the_loaded_definitions_hold_the_flywheel():
    from pipelines.definitions import DOMAINS, defs

    assert "serving" in DOMAINS
    graph = defs.resolve_asset_graph()
    parents = {k: graph.get(dg.AssetKey(k)).parent_keys for k in ("flywheel_selection", "flywheel_tasks",
                                                                    "synced_annotations")}
    assert parents["flywheel_selection"] == {dg.AssetKey("editing_samples")}
    assert parents["flywheel_tasks"] == {dg.AssetKey("flywheel_selection"), dg.AssetKey("region_proposals")}
    assert dg.AssetKey("flywheel_tasks") in parents["synced_annotations"]
    assert graph.get(dg.AssetKey("flywheel_tasks")).group_name == "serving"
    assert "captured_rollouts_sensor" in {s.name for s in defs.sensors}


def test_run_config_is_generated_from_the_dataclass():
    from pipelines.defs.serving import FlywheelRunConfig
    from sfreward.flywheel import FlywheelConfig

    fields = FlywheelRunConfig.model_fields
    assert set(fields) == set(FlywheelConfig.__dataclass_fields__)
    assert all(fields[k].default == getattr(FlywheelConfig(), k) for k in fields)
    assert "per UTC capture day" in fields["daily_budget"].description


def test_tasks_refuse_a_batch_without_a_decision(workspace):
    from pipelines.defs.serving import flywheel_tasks

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", ["b-undecided"])
    res = dg.materialize([flywheel_tasks], partition_key="b-undecided", instance=instance, raise_on_error=False,
                         resources={"workspace": WorkspaceResource(home=str(workspace.home))})
    assert not res.success
    (failure,) = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "no flywheel decision yet; materialize flywheel_selection" in str(failure.event_specific_data.error)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, what: str, proc: subprocess.Popen, limit_s: float = 120):
    deadline = time.monotonic() + limit_s
    while not cond():
        assert proc.poll() is None, f"sfr serve exited while waiting for {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def _manifests(ws) -> list[Path]:
    return sorted(ws.batches.glob("capture-*/manifest.jsonl"))


def _tick(sensor, instance, resources, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return sensor(ctx)


def _run(req, instance, resources) -> dg.ExecuteInProcessResult:
    """Execute a sensor's run request the way the daemon would: its partition, selection and config."""
    from pipelines.defs.ingest import editing_samples
    from pipelines.defs.regions import region_proposals
    from pipelines.defs.serving import flywheel_selection, flywheel_tasks

    return dg.materialize([editing_samples, region_proposals, flywheel_selection, flywheel_tasks],
                          selection=req.asset_selection, partition_key=req.partition_key,
                          run_config=req.run_config, tags=req.tags, instance=instance, resources=resources)


def _ls_sample_ids(labelstudio, project_id: int) -> list[str]:
    from annotation.client import LSHttp

    with LSHttp(labelstudio.conn) as http:
        return sorted(t["data"]["sample_id"] for page in http.iter_tasks(project_id) for t in page)


def _meta(res, node: str) -> dict:
    return {k: v.value for k, v in res.asset_materializations_for_node(node)[0].metadata.items()}


@pytest.mark.slow
@pytest.mark.labelstudio
def test_captured_rollouts_reach_label_studio_and_the_next_dataset(labelstudio, tiny_model_dir, server_token,
                                                                   monkeypatch):
    from pipelines.definitions import defs
    from sfreward import registry
    from sfreward.client import RewardClient

    ws = labelstudio.workspace
    registry.register_model(ws, tiny_model_dir, None, alias="production")
    port = _free_port()
    env = {**os.environ, "SFR_SERVER_TOKEN": server_token, "SFR_HOME": str(ws.home)}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port), "--model",
                             "production", "--device", "cpu", "--capture-rate", "1", "--capture-window", "4"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    # Budget 3 a day, at most 2 per batch: batch 1 gives 2, batch 2 only the 1 left.
    for k, v in {"DAILY_BUDGET": "3", "K_PER_BATCH": "2", "POLICY": "std", "PROJECT_KEY": PROJECT}.items():
        monkeypatch.setenv(f"SFR_FLYWHEEL_{k}", v)
    resources = {"workspace": WorkspaceResource(home=str(ws.home))}
    instance = dg.DagsterInstance.ephemeral()
    captured_rollouts_sensor = defs.resolve_sensor_def("captured_rollouts_sensor")   # as the code location loads it
    try:
        def healthy() -> bool:
            try:
                return httpx.get(url + "/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _wait(healthy, "the server", proc)
        client = RewardClient(url, token=server_token)
        requests_done, results, cursor = 0, [], None
        for name in ("chelsea", "coffee"):
            src = photo(name, 64)
            out = client.score_group(src, edits_of(src, 4, seed=len(name)), f"recolour the {name}",
                                     metadata={"category": "color_alter", "editor": "policy-step-1"})
            assert out["valid"] == [True] * 4
            requests_done += 1
            _wait(lambda: len(_manifests(ws)) == requests_done, "the capture to write its batch", proc)

            tick = _tick(captured_rollouts_sensor, instance, resources, cursor)
            assert isinstance(tick, dg.SensorResult)
            (req,) = tick.run_requests               # only the new batch, not the earlier one again
            (part,) = tick.dynamic_partitions_requests
            assert part.partition_keys == [req.partition_key]
            instance.add_dynamic_partitions(part.partitions_def_name, list(part.partition_keys))
            res = _run(req, instance, resources)
            assert res.success
            results.append((req, res))
            cursor = tick.cursor
        assert isinstance(_tick(captured_rollouts_sensor, instance, resources, cursor), dg.SkipReason)
    finally:
        proc.terminate()
        logs = proc.communicate(timeout=60)[0]
    assert server_token not in logs

    wh = Warehouse.open(ws)
    manifests = _manifests(ws)
    expected = []
    for (req, res), manifest, k in zip(results, manifests, (2, 1)):
        rows = [json.loads(line) for line in manifest.read_text().splitlines()]
        assert len(rows) == 4 and all(r["metadata"]["captured_by"] == "sfr-serve" for r in rows)
        # The policy's picks: top-k by the std the serving model predicted, ties by sample id.
        top = sorted(rows, key=lambda r: (-r["metadata"]["uncertainty"], r["sample_id"]))[:k]
        expected += [r["sample_id"] for r in top]
        assert _meta(res, "editing_samples")["ingested"] == 4
        assert _meta(res, "region_proposals")["groups"] == 1
        sel = _meta(res, "flywheel_selection")
        assert (sel["policy"], sel["selected"], sel["selected_ids"]) == ("std", k, [r["sample_id"] for r in top])
        tasks = _meta(res, "flywheel_tasks")
        assert (tasks["project_key"], tasks["imported"], tasks["without_regions"]) == (PROJECT, k, 0)
    pid = int(wh.query("SELECT ls_project_id FROM ls_projects WHERE project_key = ?", [PROJECT])[0][0])
    assert _ls_sample_ids(labelstudio, pid) == sorted(expected)
    assert wh.query("SELECT count(*) FROM samples WHERE batch_id IN (SELECT batch_id FROM flywheel_decisions)") == [(8,)]

    # A rerun of the first batch (the same run request) decides nothing new and pushes nothing twice.
    again = _run(results[0][0], instance, resources)
    assert _meta(again, "flywheel_selection")["recorded_before"] is True
    assert _meta(again, "flywheel_tasks")["imported"] == 0
    assert _ls_sample_ids(labelstudio, pid) == sorted(expected)

    _annotate_and_build_dataset(labelstudio, wh, instance, resources, pid, expected)


def _annotate_and_build_dataset(labelstudio, wh, instance, resources, pid, expected):
    """A simulated annotator rates the pushed tasks; sync and curation, materialized by Dagster,
    put exactly the selected rollouts into the next dataset version."""
    from annotation.simulate import BotConfig, run_bots
    from pipelines.defs.annotation import synced_annotations
    from pipelines.defs.curation import agreement_report, aggregated_labels, dataset_version
    from warehouse import masks

    truth = {}
    for sid, set_id in wh.query("SELECT sample_id, region_set_id FROM tasks WHERE project_key = ?", [PROJECT]):
        regions = [{"kind": kind, "mask": masks.from_json(rle),
                    "success": 20.0 if kind == "edit" else None, "preserve": 25.0,
                    "verdict": "correct_edit" if kind == "edit" else "fine"}
                   for kind, rle in wh.query("SELECT kind, rle FROM regions WHERE region_set_id = ? ORDER BY idx",
                                             [set_id])]
        truth[sid] = {"regions": regions, "overall": 18.75, "naturalness": 25.0, "artifacts": 25.0}
    bots = run_bots(labelstudio.workspace, PROJECT, truth, [BotConfig("flywheel-bot", rating_sd=0.0, seed=1)])
    assert bots.created == {"flywheel-bot": len(expected)} and not bots.errors

    before = {r[0] for r in wh.query("SELECT dataset_id FROM dataset_versions")}
    # Near-duplicate dedupe off: the 4 rollouts of a group are recolourings of one 64 px photo.
    curation = {"config": {"overrides_json": json.dumps({"dedupe_hamming": -1})}}
    res = dg.materialize([synced_annotations, aggregated_labels, agreement_report, dataset_version],
                         instance=instance, resources=resources,
                         run_config={"ops": {"agreement_report": curation, "dataset_version": curation}})
    assert res.success
    dataset_id = _meta(res, "dataset_version")["dataset_id"]
    assert dataset_id not in before
    rows = sorted(r[0] for r in wh.query("SELECT sample_id FROM dataset_rows WHERE dataset_id = ?", [dataset_id]))
    assert rows == sorted(expected)
