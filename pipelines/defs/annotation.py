"""Annotation in Dagster: push each batch's samples to Label Studio (`annotation_tasks`, per
batch), pull annotations back (`synced_annotations`), and a sensor that polls Label Studio
cheaply (one narrowed task query per project) and requests a sync when something changed.

Label Studio: LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY for a team server, else the workspace's
local server (started on demand by the assets; the sensor never starts one).
"""

import json

import dagster as dg
from pydantic import Field

from annotation.client import Connection, LabelStudioError, LSHttp, connection, updated_since_query
from annotation.push import PushConfig, push_batch
from annotation.server import ensure_server
from annotation.store import projects, validity_counts
from annotation.sync import load_cursor, sync_project
from pipelines.configs import dagster_config, from_dagster
from pipelines.partitions import BATCHES
from pipelines.resources import LABELSTUDIO_POOL, WorkspaceResource
from warehouse.db import Warehouse
from warehouse.workspace import Workspace

DEFAULT_PROJECT = "sfreward-v1"


class AnnotationTasksConfig(dagster_config(PushConfig, ("overlap",))):
    project_key: str = Field(default=DEFAULT_PROJECT, description="Label Studio project key")
    gold_sample_ids: list[str] = Field(default=[], description="sample ids pushed as gold tasks")


class SyncRunConfig(dg.Config):
    project_keys: list[str] = []       # empty: every project this warehouse pushed to


def _conn(ws: Workspace) -> Connection:
    url, key = ensure_server(ws)
    return Connection(url, key)


@dg.asset(
    partitions_def=BATCHES,
    deps=[dg.AssetKey("region_proposals")],
    group_name="annotation",
    kinds={"labelstudio", "duckdb"},
    owners=["team:data-eng"],
    code_version="1",
    pool=LABELSTUDIO_POOL,
    description="The batch's samples as Label Studio tasks with prefilled proposal regions "
                "(idempotent: keyed by sample id).",
)
def annotation_tasks(context: dg.AssetExecutionContext, config: AnnotationTasksConfig,
                     workspace: WorkspaceResource) -> dg.MaterializeResult:
    ws = workspace.workspace()
    s = push_batch(ws, config.project_key, batch_id=context.partition_key, gold=config.gold_sample_ids,
                   config=from_dagster(PushConfig, config), conn=_conn(ws))
    if s.errors:
        context.log.warning(f"{len(s.errors)} samples were not pushed: {dict(list(s.errors.items())[:5])}")
    return dg.MaterializeResult(metadata={
        "project_key": s.project_key, "ls_project_id": s.ls_project_id, "requested": s.requested,
        "imported": s.imported, "already_pushed": s.already_pushed, "adopted": s.adopted,
        "without_regions": s.without_regions, "errors": dg.MetadataValue.json(s.errors)})


@dg.asset(
    deps=[annotation_tasks, dg.AssetKey("flywheel_tasks")],   # the serving domain's flywheel pushes too
    group_name="annotation",
    kinds={"labelstudio", "duckdb"},
    owners=["team:data-eng"],
    code_version="1",
    pool=LABELSTUDIO_POOL,
    description="Annotations pulled incrementally from Label Studio: every version in "
                "annotation_versions, the current one parsed into annotations/annotation_regions.",
)
def synced_annotations(context: dg.AssetExecutionContext, config: SyncRunConfig,
                       workspace: WorkspaceResource) -> dg.MaterializeResult:
    ws = workspace.workspace()
    keys = config.project_keys or project_keys(ws)
    conn = _conn(ws) if keys else None
    totals: dict[str, dict] = {}
    for key in keys:
        totals[key] = sync_project(ws, key, conn=conn).as_dict()
    n = validity_counts(Warehouse.open(ws))
    return dg.MaterializeResult(metadata={
        "projects": dg.MetadataValue.json(totals), "current_annotations": int(n[0]),
        "invalid_annotations": int(n[1])})


@dg.asset_check(asset=synced_annotations, description="Share of current annotations that are invalid stays "
                "under 50% (a config mismatch would make nearly all invalid).")
def annotations_mostly_valid(workspace: WorkspaceResource) -> dg.AssetCheckResult:
    total, bad = validity_counts(workspace.warehouse(), include_cancelled=False)
    return dg.AssetCheckResult(passed=total == 0 or bad / total < 0.5,
                               metadata={"current": int(total), "invalid": int(bad)})


def project_keys(ws: Workspace) -> list[str]:
    return [key for key, _ in projects(Warehouse.open(ws))]


def changed_projects(ws: Workspace, conn: Connection) -> dict[str, str]:
    """project_key -> newest task updated_at in Label Studio, for projects changed since their
    sync cursor (plain function behind the sensor: one page_size=1 query per project)."""
    wh = Warehouse.open(ws)
    rows = projects(wh)
    out = {}
    with LSHttp(conn, timeout_s=20) as http:
        for key, pid in rows:
            cur = load_cursor(wh, key)
            after = cur.get("updated_at") if cur.get("ls_project_id") == pid else None
            q = updated_since_query(after)
            q["ordering"] = ["-tasks:updated_at"]
            res = http.get("/api/tasks", project=pid, page_size=1, query=json.dumps(q))
            if res.get("tasks"):
                out[key] = res["tasks"][0]["updated_at"]
    return out


@dg.sensor(minimum_interval_seconds=60, asset_selection=[synced_annotations],
           default_status=dg.DefaultSensorStatus.STOPPED,
           description="Polls Label Studio for tasks updated after each project's sync cursor and "
                       "requests a sync run.")
def labelstudio_changes_sensor(context: dg.SensorEvaluationContext,
                               workspace: WorkspaceResource) -> dg.SensorResult | dg.SkipReason:
    ws = workspace.workspace()
    try:
        conn = connection(ws)  # never starts a server
        changed = changed_projects(ws, conn)
    except LabelStudioError as e:
        return dg.SkipReason(f"Label Studio not reachable: {e}")
    last = json.loads(context.cursor) if context.cursor else {}
    new = {k: v for k, v in changed.items() if last.get(k) != v}
    if not new:
        return dg.SkipReason("no annotation changes since the last sync")
    cursor = {**last, **new}
    run_key = "sync-" + "-".join(f"{k}@{v}" for k, v in sorted(new.items()))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, asset_selection=[synced_annotations.key],
                                    run_config={"ops": {"synced_annotations": {"config": {
                                        "project_keys": sorted(new)}}}})],
        cursor=json.dumps(cursor, sort_keys=True))


defs = dg.Definitions(assets=[annotation_tasks, synced_annotations], asset_checks=[annotations_mostly_valid],
                      sensors=[labelstudio_changes_sensor])
