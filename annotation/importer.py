"""Import annotations from a Label Studio JSON export, with provenance.

`import_export(ws, path, project_key)` reads an export (Label Studio's "JSON" format: a list of
tasks, each with `data` and `annotations`) made with this platform's labelling config
(annotation.config), or with an older config mapped onto ours by a small YAML file
(`ImportMapping`). The annotations land in the warehouse as sync would store them: the same
parsing (annotation.sync.parse_result), the same rows in `annotation_versions`, `annotations`
and `annotation_regions`, plus `tasks` rows for tasks the warehouse did not know; the
`annotations` rows are marked `source = 'imported'` with the export file's sha256.

- Idempotent: a file is recorded in `annotation_imports` by its sha256; importing it again
  changes nothing. An annotation already stored with the same result is left as it is; one
  whose result changed gets a new version (as sync does).
- Rows that do not fit are reported with the reason and left out, the rest go in: tasks
  without a sample id or whose sample is not in the warehouse, regions that are not in the
  task's proposal set, malformed brush RLE, ratings out of range, unknown labels. (Sync keeps
  such annotations with `valid = false` because they can still be fixed in the live project;
  an export cannot.) Skipped annotations are stored as sync stores them.
- Everything is written in one transaction, so a crash leaves nothing half-imported.
- A project key that sync pulls from a live Label Studio is refused: annotation ids of two
  servers could collide. Import into a key of its own (e.g. `legacy-2024`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from annotation import config as C
from annotation.sync import (ParsedAnnotation, _annotator_id, _canon, _current, _edited_sizes, _parse_ts, _user_id,
                             parse_result)
from warehouse.db import Warehouse, insert_rows
from warehouse.workspace import Workspace

OURS = (C.BRUSH, C.SUCCESS, C.PRESERVE, C.VERDICT, *C.IMAGE_RATINGS)


class ImportFileError(ValueError):
    """The export (or its mapping, or the target project) cannot be imported at all."""


@dataclass
class ImportMapping:
    """An older labelling config mapped onto ours. YAML keys (all optional):

        from_name: {quality: overall, mask: region, ...}   # their control names -> ours
        to_name: {image: edited}                            # their image tag -> ours
        labels: {Changed: edit, Kept: context}              # brush labels -> region kinds
        choices: {good: correct_edit}                       # verdict choices -> ours
        data: {sample_id: sid}                              # our task data keys -> theirs
    """

    from_name: dict[str, str] = field(default_factory=dict)
    to_name: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = sorted(v for v in self.from_name.values() if v not in OURS)
        if bad:
            raise ImportFileError(f"mapping: from_name targets {bad} are not ours; use {list(OURS)}")
        bad = sorted(v for v in self.labels.values() if v not in C.REGION_KINDS)
        if bad:
            raise ImportFileError(f"mapping: labels {bad} are not region kinds {list(C.REGION_KINDS)}")
        bad = sorted(v for v in self.choices.values() if v not in C.VERDICTS)
        if bad:
            raise ImportFileError(f"mapping: choices {bad} are not verdicts {list(C.VERDICTS)}")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ImportMapping":
        import yaml

        try:
            d = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ImportFileError(f"{path}: cannot read the mapping ({e})") from None
        known = {"from_name", "to_name", "labels", "choices", "data"}
        if not isinstance(d, dict) or set(d) - known or not all(isinstance(v, dict) for v in d.values()):
            raise ImportFileError(f"{path}: a mapping is a YAML object with sections {sorted(known)}, "
                                  "each {theirs: ours}")
        return cls(**{k: {str(a): str(b) for a, b in v.items()} for k, v in d.items()})

    def result(self, items: Any) -> Any:
        """Their result list -> ours (unknown names stay, and parsing reports them)."""
        if not isinstance(items, list):
            return items
        out = []
        for it in items:
            if not isinstance(it, dict):
                out.append(it)
                continue
            it = dict(it)
            it["from_name"] = self.from_name.get(it.get("from_name"), it.get("from_name"))
            if "to_name" in it:
                it["to_name"] = self.to_name.get(it["to_name"], it["to_name"])
            v = it.get("value")
            if isinstance(v, dict):
                v = dict(v)
                if isinstance(v.get("brushlabels"), list):
                    v["brushlabels"] = [self.labels.get(x, x) for x in v["brushlabels"]]
                if isinstance(v.get("choices"), list):
                    v["choices"] = [self.choices.get(x, x) for x in v["choices"]]
                it["value"] = v
            out.append(it)
        return out


@dataclass
class ImportSummary:
    project_key: str
    sha256: str
    file: str
    tasks: int = 0
    annotations: int = 0
    imported: int = 0
    unchanged: int = 0
    rejected: list[dict] = field(default_factory=list)   # {task, annotation, reason}
    already_imported: bool = False

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["n_rejected"] = len(self.rejected)
        return d


def _load(path: Path) -> tuple[bytes, list[dict]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ImportFileError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        tasks = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImportFileError(f"{path}: not JSON ({e}); export the project as 'JSON' from Label Studio") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ImportFileError(f"{path}: a Label Studio JSON export is a list of tasks; this is "
                              f"{type(tasks).__name__}. Export the project as 'JSON' (not JSON_MIN or CSV)")
    return raw, tasks


def import_export(ws: Workspace, path: str | Path, project_key: str, mapping: ImportMapping | None = None,
                  ls_url: str | None = None) -> ImportSummary:
    """Import one export file into `project_key`. `ls_url`: the Label Studio the export came from
    (annotator ids are `ls:<user id>@<its host>`, as sync writes them); default: the project's
    server when this warehouse pushed to it, else the host `imported`."""
    path = Path(path).expanduser()
    raw, tasks = _load(path)
    digest = hashlib.sha256(raw).hexdigest()
    mapping = mapping or ImportMapping()
    summary = ImportSummary(project_key, digest, str(path), tasks=len(tasks))
    wh = Warehouse.open(ws)
    with wh.read() as con:
        done = con.execute("SELECT project_key, n_annotations, n_imported, n_unchanged, rejected FROM "
                           "annotation_imports WHERE sha256 = ?", [digest]).fetchone()
        synced = con.execute("SELECT 1 FROM sync_state WHERE project_key = ?", [project_key]).fetchone()
        base = con.execute("SELECT base_url FROM ls_projects WHERE project_key = ?", [project_key]).fetchone()
    if done:
        summary.project_key, summary.annotations, summary.imported, summary.unchanged = done[:4]
        summary.rejected, summary.already_imported = json.loads(done[4]), True
        return summary
    if synced:
        raise ImportFileError(f"project {project_key!r} is synced from a live Label Studio; import the export "
                              f"into a project key of its own (e.g. {project_key}-imported)")
    host = urlparse(ls_url).netloc if ls_url else (urlparse(base[0]).netloc if base else "imported")
    plan = _plan(wh, tasks, project_key, mapping, host, summary)
    _write(wh, project_key, digest, path.name, plan, summary)
    return summary


def _task_data(task: dict, mapping: ImportMapping, key: str) -> Any:
    return (task.get("data") or {}).get(mapping.data.get(key, key))


def _plan(wh: Warehouse, tasks: list[dict], project_key: str, mapping: ImportMapping, host: str,
          summary: ImportSummary) -> dict:
    """Parse and check everything (read-only); returns the rows to write."""
    sids = [str(s) for t in tasks if (s := _task_data(t, mapping, "sample_id")) is not None]
    keys = [f"{project_key}:{s}" for s in sids]
    with wh.read() as con:
        sizes = _edited_sizes(con, sids)
        current = _current(con, project_key, keys)
        known_tasks = {r[0] for r in con.execute("SELECT task_key FROM tasks WHERE project_key = ?",
                                                 [project_key]).fetchall()}
        rsids = sorted({str(r) for t in tasks if (r := _task_data(t, mapping, "region_set_id"))})
        regions = {r[0] for r in con.execute("SELECT region_id FROM regions WHERE region_set_id IN "
                                             "(SELECT unnest(?))", [rsids]).fetchall()}
        known_sets = {r[0] for r in con.execute("SELECT region_set_id FROM region_sets WHERE region_set_id IN "
                                                "(SELECT unnest(?))", [rsids]).fetchall()}
    plan: dict[str, list] = {"versions": [], "currents": [], "regions": [], "annotators": {}, "tasks": []}
    seen: set[int] = set()
    for t in tasks:
        anns = [a for a in (t.get("annotations") or []) if isinstance(a, dict)]
        summary.annotations += len(anns)
        sid, rsid = _task_data(t, mapping, "sample_id"), _task_data(t, mapping, "region_set_id")

        def reject(a: dict | None, reason: str) -> None:
            summary.rejected.append({"task": t.get("id"), "annotation": a.get("id") if a else None, "reason": reason})

        problem = None
        if sid is None:
            problem = "task has no sample_id in its data (map it with `data: {sample_id: ...}`)"
        elif str(sid) not in sizes:
            problem = f"sample {sid!r} is not in the warehouse; ingest it first"
        elif rsid and str(rsid) not in known_sets:
            problem = f"region set {rsid!r} is not in the warehouse (proposals from another warehouse?)"
        elif not isinstance(t.get("id"), int):
            problem = "task has no integer id"
        if problem:
            for a in anns:
                reject(a, problem)
            continue
        sid, key = str(sid), f"{project_key}:{sid}"
        if key not in known_tasks:
            known_tasks.add(key)
            plan["tasks"].append((key, project_key, sid, str(rsid) if rsid else None, int(t["id"])))
        w, h = sizes[sid]
        for a in anns:
            if not isinstance(a.get("id"), int) or a["id"] in seen:
                reject(a, "annotation without an integer id, or listed twice")
                continue
            seen.add(a["id"])
            result = mapping.result(a.get("result") or [])
            result_text = _canon(result)
            cancelled = bool(a.get("was_cancelled"))
            cur = current.get(int(a["id"]))
            if cur and cur[1] != key:
                reject(a, f"annotation id {a['id']} is already stored for task {cur[1]!r}")
                continue
            if cur and not cur[2] and cur[4] == result_text and cur[3] == cancelled:
                summary.unchanged += 1
                continue
            pa = parse_result(result, w, h, str(rsid) if rsid else None)
            for r in pa.regions:
                if r.region_id is not None and r.region_id not in regions:
                    r.reasons.append(f"unknown region: the task's proposal set has no region {r.region_key!r}")
            if cancelled:
                pa.reasons.insert(0, "skipped by the annotator")
            elif not pa.valid:
                reject(a, pa.invalid_reason or "invalid")
                continue
            _add(plan, project_key, key, sid, a, pa, result_text, cur, host)
            summary.imported += 1
    return plan


def _add(plan: dict, project_key: str, key: str, sid: str, a: dict, pa: ParsedAnnotation, result_text: str,
         cur: tuple | None, host: str) -> None:
    """The rows sync would write for this annotation (annotation.sync._apply_page)."""
    ann_id = int(a["id"])
    version = cur[0] + 1 if cur else 1
    by = a.get("completed_by")
    user = by.get("id") if isinstance(by, dict) else by
    annotator = _annotator_id(user, host)
    if annotator:
        plan["annotators"][annotator] = by.get("email") if isinstance(by, dict) else None
    upd = _parse_ts(a["updated_at"]).replace(tzinfo=None) if a.get("updated_at") else None
    cancelled = bool(a.get("was_cancelled"))
    # Who last changed it, as sync records it; an annotation last changed by someone other than
    # its author is flagged so that curation leaves it out (the exporting server's own API user
    # is unknown here, so there is no exception for simulated annotators).
    editor_id = _user_id(a.get("updated_by"))
    editor = _annotator_id(editor_id, host)
    flagged = isinstance(editor_id, int) and editor_id != _user_id(by)
    plan["versions"].append((ann_id, project_key, version, key, annotator, upd, cancelled, False,
                             a.get("lead_time"), result_text, editor))
    plan["currents"].append((ann_id, project_key, key, sid, annotator, version, upd, cancelled, False, pa.valid,
                             pa.invalid_reason, pa.ratings[C.OVERALL], pa.ratings[C.NATURALNESS],
                             pa.ratings[C.ARTIFACTS], editor, flagged, pa.outside_preserved,
                             C.ARTIFACTS in pa.image_defaults))
    plan["regions"] += [(project_key, ann_id, r.region_key, r.region_id, r.kind, r.rle,
                         *(r.bbox or (None, None, None, None)), r.area, r.success, r.preserve, r.verdict,
                         not r.reasons, ", ".join(r.reasons) or None,
                         r.success_default, r.preserve_default, r.verdict_default) for r in pa.regions]


def _write(wh: Warehouse, project_key: str, digest: str, name: str, plan: dict, summary: ImportSummary) -> None:
    """Everything in one transaction, the file's record included: all or nothing."""
    changed = [v[0] for v in plan["versions"]]
    with wh.write() as con:
        if con.execute("SELECT 1 FROM annotation_imports WHERE sha256 = ?", [digest]).fetchone():
            summary.already_imported = True   # another process imported it meanwhile
            return
        if changed:
            for table in ("annotations", "annotation_regions"):
                con.execute(f"DELETE FROM {table} WHERE project_key = ? AND ls_annotation_id IN (SELECT unnest(?))",
                            [project_key, changed])
        insert_rows(con, "tasks", ["task_key", "project_key", "sample_id", "region_set_id", "ls_task_id"],
                    plan["tasks"], on_conflict="ON CONFLICT DO NOTHING")
        insert_rows(con, "annotators", ["annotator_id", "email", "is_simulated"],
                    [(k, v, False) for k, v in plan["annotators"].items()], on_conflict="ON CONFLICT DO NOTHING")
        insert_rows(con, "annotation_versions", ["ls_annotation_id", "project_key", "version", "task_key",
                                                 "annotator_id", "updated_at", "was_cancelled", "is_deleted",
                                                 "lead_time", "result", "updated_by"], plan["versions"])
        insert_rows(con, "annotations", ["ls_annotation_id", "project_key", "task_key", "sample_id", "annotator_id",
                                         "version", "updated_at", "was_cancelled", "is_deleted", "valid",
                                         "invalid_reason", "overall", "naturalness", "artifacts", "updated_by",
                                         "edited_by_other", "outside_preserved", "artifacts_default", "source",
                                         "import_sha256"],
                    [c + ("imported", digest) for c in plan["currents"]])
        insert_rows(con, "annotation_regions", ["project_key", "ls_annotation_id", "region_key", "region_id", "kind",
                                                "rle", "x1", "y1", "x2", "y2", "area", "success", "preserve",
                                                "verdict", "valid", "invalid_reason", "success_default",
                                                "preserve_default", "verdict_default"], plan["regions"])
        con.execute("INSERT INTO annotation_imports (sha256, project_key, file_name, n_tasks, n_annotations, "
                    "n_imported, n_unchanged, n_rejected, rejected) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [digest, project_key, name, summary.tasks, summary.annotations, summary.imported,
                     summary.unchanged, len(summary.rejected), json.dumps(summary.rejected)])
