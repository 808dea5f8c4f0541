"""Pull annotations from Label Studio into the warehouse, incrementally.

Every annotation save or delete touches its task's `updated_at`, so a sync asks the data
manager only for tasks updated after the cursor (keyset paging, oldest first) instead of
exporting the project. For each changed task it compares Label Studio's annotations with
the warehouse's current rows:

- new or changed annotation -> a new row in `annotation_versions` (history, never rewritten)
  and the current state rewritten in `annotations` / `annotation_regions`;
- an annotation the warehouse knows but the task no longer has -> a deletion version, the
  current row marked `is_deleted`, its regions removed;
- unchanged (re-seen in the overlap window behind the cursor) -> nothing.

Results are parsed against the labeling config (annotation.config): brush masks are joined
with their per-region ratings and verdict by result id, decoded from Label Studio's brush RLE
and stored as COCO RLE (warehouse.masks). Results that do not fit (missing ratings, unknown
labels, empty masks, RLE of the wrong size, ratings for regions that do not exist) are stored
with valid = false and the reason. One warehouse transaction per page of tasks; the cursor
moves in the same transaction, so a crash repeats at most one page, harmlessly.

Who last changed an annotation (Label Studio's `updated_by`) is recorded next to its author
(`completed_by`). In Label Studio Community every member can edit anyone's annotation, so an
annotation whose last editor is not its author is flagged (`edited_by_other`) and curation leaves
it out. The one exception is the simulator's bots: their annotations are written by the
platform's own API user on their behalf.

Deleted tasks do not show up as updated: when the project has fewer tasks than the warehouse
knows, the task ids are listed (narrowed fields) and annotations of vanished tasks are marked
deleted.
"""
from __future__ import annotations

import functools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import urlparse


from annotation import config as C
from annotation.client import Connection, LabelStudioError, LSHttp, connection, updated_since_query
from warehouse import masks
from warehouse.db import Warehouse, insert_rows
from warehouse.workspace import Workspace

from annotation.brush import rle_to_mask

log = logging.getLogger(__name__)


class SyncError(RuntimeError):
    pass


@dataclass
class SyncConfig:
    page_size: int = 100          # tasks per full (annotations) request and per warehouse transaction
    list_page_size: int = 1000    # tasks per narrowed listing request
    overlap_s: float = 5.0        # re-scan this far behind the cursor (commits that raced the last sync)


@dataclass
class SyncSummary:
    project_key: str
    tasks_seen: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    invalid: int = 0
    foreign_tasks: int = 0        # tasks without a sample_id (not made by push)
    edited_by_other: int = 0      # annotations whose last editor is not their author (flagged)
    cursor: str | None = None
    full_task_check: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# ------------------------------------------------------------------------------- parsing
@dataclass
class ParsedRegion:
    region_key: str
    region_id: str | None
    kind: str | None = None
    rle: str | None = None
    bbox: tuple[int, int, int, int] | None = None
    area: int | None = None
    success: int | None = None
    preserve: int | None = None
    verdict: str | None = None
    reasons: list[str] = field(default_factory=list)
    # Which values came from a recorded default rather than a click (annotation.config).
    success_default: bool = False
    preserve_default: bool = False
    verdict_default: bool = False


@dataclass
class ParsedAnnotation:
    ratings: dict[str, int | None]
    regions: list[ParsedRegion]
    reasons: list[str]
    outside_preserved: bool | None = None   # the "everything outside preserved?" answer (None: not asked)
    image_defaults: list[str] = field(default_factory=list)   # whole-image ratings filled by a default

    @property
    def valid(self) -> bool:
        return not self.reasons and all(not r.reasons for r in self.regions)

    @property
    def invalid_reason(self) -> str | None:
        parts = list(self.reasons) + [f"region {r.region_key}: {', '.join(r.reasons)}"
                                      for r in self.regions if r.reasons]
        return "; ".join(parts)[:2000] or None


def _rating(value: Any, max_rating: int = C.MAX_RATING) -> tuple[int | None, str | None]:
    v = (value or {}).get("rating") if isinstance(value, dict) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        return None, f"rating {v!r} is not a whole number"
    if not 1 <= int(v) <= max_rating:
        return None, f"rating {int(v)} outside 1..{max_rating}"
    return int(v), None


def parse_result(result: list[dict], width: int, height: int, region_set_id: str | None) -> ParsedAnnotation:
    """Parse one annotation's result list against the labeling config.

    width, height: the edited image's size in pixels (brush masks must match it).
    region_set_id: the task's proposal set; prefilled results `p<idx>` map to
    `<region_set_id>:<idx>`, anything else was drawn by the annotator (region_id None).
    """
    reasons: list[str] = []
    regions: dict[str, ParsedRegion] = {}
    per_region: dict[str, dict[str, Any]] = {}
    ratings: dict[str, int | None] = {k: None for k in C.IMAGE_RATINGS}
    outside: bool | None = None
    defaults: list[str] = []   # whole-image ratings filled by a default
    if not isinstance(result, list):
        return ParsedAnnotation(ratings, [], [f"result is {type(result).__name__}, not a list"])
    for item in result:
        if not isinstance(item, dict):
            reasons.append("result item is not an object")
            continue
        name, rid, value = item.get("from_name"), str(item.get("id", "")), item.get("value") or {}
        if name == C.BRUSH:
            idx = C.parse_prefill_result_id(rid)
            reg = ParsedRegion(rid, f"{region_set_id}:{idx}" if idx is not None and region_set_id else None)
            regions[rid] = reg
            _parse_brush(reg, item, value, width, height)
        elif name in C.REGION_RATINGS or name in (C.VERDICT, C.PRESERVE_OUTSIDE):
            per_region.setdefault(rid, {})[name] = value
        elif name == C.OUTSIDE:
            choices = value.get("choices") if isinstance(value, dict) else None
            if choices == [C.OUTSIDE_YES]:
                outside = True
            elif choices == [C.OUTSIDE_NO]:
                outside = False
            else:
                reasons.append(f"outside: {choices!r} is not one of {[C.OUTSIDE_YES, C.OUTSIDE_NO]}")
        elif name in C.IMAGE_RATINGS:
            r, err = _rating(value)
            ratings[name] = r
            if err:
                reasons.append(f"{name}: {err}")
        else:
            reasons.append(f"unknown control {name!r}")
    for rid, values in per_region.items():
        reg = regions.get(rid)
        if reg is None:
            reasons.append(f"ratings for region {rid!r} that has no mask")
            continue
        if C.PRESERVE_OUTSIDE in values and C.PRESERVE not in values:
            values[C.PRESERVE] = values[C.PRESERVE_OUTSIDE]
        for name in C.REGION_RATINGS:
            if name in values:
                r, err = _rating(values[name])
                setattr(reg, name, r)
                if err:
                    reg.reasons.append(f"{name} {err}")
        if C.VERDICT in values:
            choices = values[C.VERDICT].get("choices") if isinstance(values[C.VERDICT], dict) else None
            if not choices or len(choices) != 1 or choices[0] not in C.VERDICTS:
                reg.reasons.append(f"verdict {choices!r} is not one of {list(C.VERDICTS)}")
            else:
                reg.verdict = choices[0]
    if outside is not None:
        _apply_defaults(list(regions.values()), outside, reasons)
        if ratings[C.ARTIFACTS] is None and not any(r.verdict == "artifact" for r in regions.values()) \
                and not any(x.startswith(C.ARTIFACTS) for x in reasons):
            ratings[C.ARTIFACTS] = C.MAX_RATING
            defaults.append(C.ARTIFACTS)
    for reg in regions.values():
        if reg.verdict == C.UNSURE:  # cannot judge: its stars are not ratings (curation sees them missing)
            reg.success = reg.preserve = None
            reg.success_default = reg.preserve_default = False
            continue
        if reg.preserve is None and not any(s.startswith("preserve") for s in reg.reasons):
            reg.reasons.append("missing preserve rating")
        if reg.kind != "background" and reg.success is None and not any(s.startswith("success") for s in reg.reasons):
            reg.reasons.append("missing success rating")
    for name in C.IMAGE_RATINGS:
        if ratings[name] is None and not any(s.startswith(name) for s in reasons):
            reasons.append(f"missing {name} rating")
    if not regions:
        reasons.append("no regions")
    return ParsedAnnotation(ratings, list(regions.values()), reasons, outside, defaults)


def _apply_defaults(regions: list[ParsedRegion], outside: bool, reasons: list[str]) -> None:
    """Fill what the labeling config lets an annotator leave (annotation.config), marking each
    filled value as a default. Edit regions: verdict from success. Context/background: preserve 5
    and verdict 'fine' unless rated; a context region's success is its preserve (it was asked to
    stay as it is); an edit region's preserve is 5 unless its verdict is artifact. Answered "no"
    but no region marked as changed: contradictory, invalid."""
    outside_regions = [r for r in regions if r.kind in ("context", "background")]
    if not outside and outside_regions and not any(
            (r.preserve is not None and r.preserve < C.MAX_RATING) or (r.verdict not in (None, "fine"))
            for r in outside_regions):
        reasons.append("answered that something outside the edit changed, but rated no context/background "
                       "region below 5 stars or with a verdict")
    for r in regions:
        if r.verdict == C.UNSURE:
            continue
        if r.kind == "edit":
            if r.verdict is None and r.success is not None:
                r.verdict, r.verdict_default = C.default_edit_verdict(r.success), True
            if r.preserve is None and r.verdict != "artifact":
                r.preserve, r.preserve_default = C.MAX_RATING, True
        elif r.kind in ("context", "background"):
            if r.preserve is None:
                r.preserve, r.preserve_default = C.MAX_RATING, True
            if r.verdict is None:
                r.verdict, r.verdict_default = "fine", True
            if r.kind == "context" and r.success is None:
                r.success, r.success_default = r.preserve, True


def _parse_brush(reg: ParsedRegion, item: dict, value: dict, width: int, height: int) -> None:
    labels = value.get("brushlabels") or []
    if len(labels) != 1 or labels[0] not in C.REGION_KINDS:
        reg.reasons.append(f"unknown label {labels!r}; expected one of {list(C.REGION_KINDS)}")
    else:
        reg.kind = labels[0]
    if item.get("to_name", C.EDITED) != C.EDITED:
        reg.reasons.append(f"region drawn on the {item.get('to_name')!r} image; regions belong on the edited image")
        return
    ow, oh = item.get("original_width"), item.get("original_height")
    if (ow, oh) != (width, height):
        reg.reasons.append(f"mask drawn on a {ow}x{oh} image, the edited image is {width}x{height}")
        return
    if value.get("format") != "rle" or not isinstance(value.get("rle"), list):
        reg.reasons.append("mask is not brush RLE")
        return
    try:
        summary = _brush_summary(tuple(value["rle"]), height, width)
    except Exception as e:  # a malformed RLE is this region's problem, not the batch's
        reg.reasons.append(f"wrong-size or malformed brush RLE ({e})")
        return
    if summary is None:
        reg.reasons.append("empty mask")
        return
    reg.rle, reg.bbox, reg.area = summary


@functools.lru_cache(maxsize=128)
def _brush_summary(rle: tuple, height: int, width: int) -> tuple[str, tuple[int, int, int, int], int] | None:
    """Brush RLE -> (warehouse RLE JSON, bbox xyxy, area in pixels), None for an empty mask.
    Cached by content: the annotators of one task mostly keep the prefilled masks, so a sync
    sees each mask about three times (a third of a sync's CPU was decoding them again). The
    annotations of one task are parsed together, so a small cache catches the repeats; its size
    bounds the memory it holds (an RLE of a large image can take megabytes)."""
    m = rle_to_mask(list(rle), height, width)
    if not m.any():
        return None
    return masks.to_json(masks.encode(m)), masks.bbox_xyxy(m), int(m.sum())


# ------------------------------------------------------------------------------- sync
def _parse_ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _iso(dt: datetime) -> str:
    # Label Studio parses filter datetimes with '%Y-%m-%dT%H:%M:%S.%fZ' only: always write the
    # microseconds (isoformat drops them when they are 0, e.g. an HTTP Date header's time).
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canon(result: Any) -> str:
    return json.dumps(result, sort_keys=True, separators=(",", ":"))


def load_cursor(wh: Warehouse, project_key: str) -> dict:
    row = wh.query("SELECT cursor FROM sync_state WHERE project_key = ?", [project_key])
    return json.loads(row[0][0]) if row else {}


def sync_project(ws: Workspace, project_key: str, conn: Connection | None = None,
                 config: SyncConfig | None = None, progress: Callable[[int], None] | None = None) -> SyncSummary:
    """Pull what changed in project `project_key` since the last sync. Returns counts."""
    cfg = config or SyncConfig()
    conn = conn or connection(ws)
    host = urlparse(conn.base_url).netloc
    wh = Warehouse.open(ws)
    with wh.read() as con:  # everything the sync needs from the warehouse up front: one connection
        row = con.execute("SELECT ls_project_id FROM ls_projects WHERE project_key = ?", [project_key]).fetchall()
        cur_row = con.execute("SELECT cursor FROM sync_state WHERE project_key = ?", [project_key]).fetchall()
        n_known = con.execute("SELECT count(*) FROM tasks WHERE project_key = ?", [project_key]).fetchone()[0]
        prefix = "ls:"
        simulated = {r[0] for r in con.execute(
            "SELECT annotator_id FROM annotators WHERE is_simulated").fetchall()}
        known_users = {int(r[0][len(prefix):].split("@", 1)[0]) for r in con.execute(
            "SELECT annotator_id FROM annotators WHERE annotator_id LIKE ?", [f"{prefix}%@{host}"]).fetchall()
            if r[0][len(prefix):].split("@", 1)[0].isdigit()}
    if not row:
        raise SyncError(f"project {project_key!r} is unknown in this warehouse; push tasks to it first")
    pid = int(row[0][0])
    cursor = json.loads(cur_row[0][0]) if cur_row else {}
    if cursor.get("ls_project_id") != pid:
        cursor = {}
    summary = SyncSummary(project_key)
    with LSHttp(conn) as http:
        users: dict[int, str | None] = {}
        # The platform's own API user: it writes the simulated annotators' annotations for them.
        trust = _Editors(int(http.get("/api/current-user/whoami")["id"]), simulated)
        after = cursor.get("updated_at")
        # Tasks already synced at exactly this updated_at inside the overlap window: skipped
        # without fetching their annotations again.
        done: dict[str, str] = dict(cursor.get("recent", {}))
        newest = after
        start = _window_start(after, cursor.get("listed_at"), cfg.overlap_s)
        seen: set[int] = set()
        listed_at = None
        page = 1
        while True:
            out = _get_page(http, pid, start, page, cfg.list_page_size)
            if listed_at is None:
                listed_at = _server_time(http.last_date)
            listed = [t for t in out if int(t["id"]) not in seen]
            if not listed:
                if len(out) < cfg.list_page_size:
                    break
                page += 1  # a full page of one timestamp: step through it by page number
                continue
            seen.update(int(t["id"]) for t in listed)
            page_newest = max((t["updated_at"] for t in listed), key=_parse_ts)
            fresh = [t for t in listed if done.get(str(t["id"])) != t["updated_at"]]
            chunks = [fresh[i:i + cfg.page_size] for i in range(0, len(fresh), cfg.page_size)]
            # One transaction per page_size tasks. The next chunk's annotations are fetched in a
            # second thread while this one is parsed and written: Label Studio serializes while
            # we decode, instead of taking turns. One HTTP request is in flight at a time.
            with ThreadPoolExecutor(1, thread_name_prefix="sfr-sync-fetch") as fetcher:
                pending = fetcher.submit(_attach_annotations, http, pid, chunks[0], cfg.page_size) if chunks else None
                for k, chunk in enumerate(chunks):
                    pending.result()
                    need = {int(a["completed_by"]) for t in chunk for a in t.get("annotations", [])
                            if isinstance(a.get("completed_by"), int)}
                    if need - known_users - users.keys():
                        users = {int(u["id"]): u.get("email") for u in http.get("/api/users/")}
                    if k + 1 < len(chunks):
                        pending = fetcher.submit(_attach_annotations, http, pid, chunks[k + 1], cfg.page_size)
                    chunk_newest = max((t["updated_at"] for t in chunk), key=_parse_ts)
                    newest = chunk_newest if newest is None or _parse_ts(chunk_newest) > _parse_ts(newest) else newest
                    done.update((str(t["id"]), t["updated_at"]) for t in chunk)
                    # Saved with the data: only tasks already applied count as done after a crash.
                    _apply_page(wh, project_key, chunk, users, host, summary, trust,
                                {"ls_project_id": pid, "updated_at": newest, "listed_at": listed_at,
                                 "recent": _recent(done, newest, cfg.overlap_s)})
            summary.tasks_seen += len(fresh)
            if progress:
                progress(len(fresh))
            if len(out) < cfg.list_page_size:
                break
            # Keyset paging: the next page starts at the newest timestamp seen (inclusive).
            start, page = _iso(_parse_ts(page_newest) - timedelta(microseconds=1)), 1
        summary.cursor = newest
        _check_deleted_tasks(http, wh, project_key, pid, summary, n_known)
    return summary


def _window_start(after: str | None, listed_at: str | None, overlap_s: float) -> str | None:
    """Where the next listing starts. A task hidden from the previous listing (its transaction
    still open) has updated_at >= previous listing time - overlap; so re-read from
    min(cursor, previous listing time - overlap), which is just the cursor when nothing
    changed in the overlap before the previous listing."""
    if not after:
        return None
    lag = _parse_ts(after) - timedelta(seconds=overlap_s)
    if listed_at:
        lag = max(lag, min(_parse_ts(after), _parse_ts(listed_at) - timedelta(seconds=overlap_s)))
    return _iso(lag)


def _server_time(date_header: str | None) -> str | None:
    if not date_header:
        return None
    from email.utils import parsedate_to_datetime

    # The Date header has 1 s resolution: round down.
    return _iso(parsedate_to_datetime(date_header) - timedelta(seconds=1))


def _recent(done: dict[str, str], newest: str, overlap_s: float) -> dict[str, str]:
    horizon = _parse_ts(newest) - timedelta(seconds=overlap_s)
    return {k: v for k, v in done.items() if _parse_ts(v) >= horizon}


def _save_cursor(con, project_key: str, cursor: dict) -> None:
    con.execute("INSERT INTO sync_state (project_key, cursor, updated_at) VALUES (?, ?, now()) "
                "ON CONFLICT (project_key) DO UPDATE SET cursor = excluded.cursor, updated_at = now()",
                [project_key, json.dumps(cursor)])


def _get_page(http: LSHttp, pid: int, start: str | None, page: int, page_size: int) -> list[dict]:
    try:
        # Narrowed listing (no annotations or predictions serialized): ids, data, updated_at.
        out = http.get("/api/tasks", project=pid, page=page, page_size=page_size,
                       query=json.dumps(updated_since_query(start)))
    except LabelStudioError as e:
        if "HTTP 404" in str(e):  # past the last page
            return []
        raise
    return out.get("tasks", [])


_CURRENT_SQL = (
    "SELECT a.ls_annotation_id, a.version, a.task_key, a.is_deleted, a.was_cancelled, v.result, a.updated_by "
    "FROM annotations a JOIN annotation_versions v ON v.project_key = a.project_key "
    "AND v.ls_annotation_id = a.ls_annotation_id AND v.version = a.version "
    "WHERE a.project_key = ? AND a.task_key IN (SELECT unnest(?))")


def _current(con, project_key: str, keys: list[str]) -> dict[int, tuple]:
    """ls_annotation_id -> (version, task_key, is_deleted, was_cancelled, result JSON, updated_by) of
    current rows."""
    if not keys:
        return {}
    return {int(r[0]): (int(r[1]), r[2], bool(r[3]), bool(r[4]), r[5], r[6])
            for r in con.execute(_CURRENT_SQL, [project_key, keys]).fetchall()}


def _attach_annotations(http: LSHttp, pid: int, tasks: list[dict], page_size: int) -> None:
    """Fetch the full annotations of the tasks that have any (by `annotations_ids`); the rest get [].

    Through the project's export endpoint restricted to these task ids (`ids[]`, every task,
    skipped annotations included): its annotations carry the same fields as the data manager's
    `fields=all` listing, which serializes far more per task (drafts, computed columns) and was
    2.5x slower per task (benchmarks/results/scale.md)."""
    with_ann = [int(t["id"]) for t in tasks if t.get("annotations_ids") or t.get("total_annotations")
                or t.get("cancelled_annotations")]
    full: dict[int, list] = {}
    for i in range(0, len(with_ann), page_size):
        ids = with_ann[i:i + page_size]
        out = http.get(f"/api/projects/{pid}/export", exportType="JSON", download_all_tasks="true",
                       **{"ids[]": ids})
        full.update({int(t["id"]): t.get("annotations", []) for t in out})
    for t in tasks:
        t["annotations"] = full.get(int(t["id"]), [])


@dataclass
class _Editors:
    api_user: int                 # Label Studio user id behind the sync's API key
    simulated: set[str]           # annotator ids of simulated annotators

    def edited_by_other(self, author: str | None, editor_id: Any, author_id: Any) -> bool:
        """Whether the last editor differs from the author (unknown editor: not flagged)."""
        if not isinstance(editor_id, int) or editor_id == author_id:
            return False
        return not (author in self.simulated and editor_id == self.api_user)


def _user_id(v: Any) -> int | None:
    """A user id from Label Studio's `completed_by` / `updated_by` (an id, or an expanded object)."""
    if isinstance(v, dict):
        v = v.get("id")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _apply_page(wh: Warehouse, project_key: str, tasks: list[dict], users: dict,
                host: str, summary: SyncSummary, trust: _Editors, cursor: dict) -> None:
    """Compare, parse and write one page of changed tasks in ONE warehouse transaction (parsing
    only what changed keeps it short; one connection per page keeps small syncs fast)."""
    by_key = _tasks_by_key(project_key, tasks, summary)
    with wh.write() as con:
        current = _current(con, project_key, list(by_key))
        live, parsed = _parse_changed(con, by_key, current, host, summary)
        rows = _page_rows(project_key, parsed, current, users, host, trust, summary)
        _write_page(con, project_key, rows)
        # Annotations the warehouse has for these tasks that Label Studio no longer has.
        gone = [(ann_id, v) for ann_id, v in current.items() if not v[2] and ann_id not in live]
        for ann_id, v in gone:
            _mark_deleted(con, project_key, ann_id, v[0] + 1, v[1])
            summary.deleted += 1
        # The cursor (and the tasks done inside the overlap window) moves with the data: a crash
        # repeats at most this page, harmlessly.
        _save_cursor(con, project_key, cursor)


def _tasks_by_key(project_key: str, tasks: list[dict], summary: SyncSummary) -> dict[str, dict]:
    """task_key -> task for the page's tasks that carry one of our sample ids (others counted
    as foreign)."""
    by_key: dict[str, dict] = {}
    for t in tasks:
        sid = (t.get("data") or {}).get("sample_id")
        if sid is None:
            summary.foreign_tasks += 1
            continue
        by_key[f"{project_key}:{sid}"] = t
    return by_key


def _parse_changed(con, by_key: dict[str, dict], current: dict, host: str, summary: SyncSummary
                   ) -> tuple[set[int], dict[int, tuple[str, dict, ParsedAnnotation, str]]]:
    """(ids of every annotation Label Studio still has, ann_id -> (task_key, annotation, parsed,
    canonical result text) for those new or changed since the warehouse's current version)."""
    sizes = _edited_sizes(con, [str(t["data"]["sample_id"]) for t in by_key.values()])
    live: set[int] = set()
    parsed: dict[int, tuple[str, dict, ParsedAnnotation, str]] = {}
    for key, t in by_key.items():
        sid = str(t["data"]["sample_id"])
        w, h = sizes.get(sid, (None, None))
        for a in t.get("annotations", []):
            ann_id = int(a["id"])
            live.add(ann_id)
            result_text = _canon(a.get("result") or [])
            cur = current.get(ann_id)
            editor = _annotator_id(_user_id(a.get("updated_by")), host)
            if (cur and not cur[2] and cur[4] == result_text and cur[3] == bool(a.get("was_cancelled"))
                    and (editor is None or cur[5] == editor)):
                summary.unchanged += 1
                continue
            if w is None:
                pa = ParsedAnnotation({k: None for k in C.IMAGE_RATINGS}, [],
                                      [f"sample {sid!r} is not in the warehouse"])
            else:
                pa = parse_result(a.get("result") or [], w, h, t["data"].get("region_set_id"))
            if a.get("was_cancelled"):
                pa.reasons.insert(0, "skipped by the annotator")
            parsed[ann_id] = (key, a, pa, result_text)
    return live, parsed


@dataclass
class _PageRows:
    """Rows of one page for annotation_versions, annotations, annotation_regions and annotators."""
    versions: list[tuple] = field(default_factory=list)
    currents: list[tuple] = field(default_factory=list)
    regions: list[tuple] = field(default_factory=list)
    annotators: dict[str, str | None] = field(default_factory=dict)


def _page_rows(project_key: str, parsed: dict, current: dict, users: dict, host: str, trust: _Editors,
               summary: SyncSummary) -> _PageRows:
    """The warehouse rows of the parsed annotations (each a new version of its annotation)."""
    rows = _PageRows()
    for ann_id, (key, a, pa, result_text) in parsed.items():
        cur = current.get(ann_id)
        version = cur[0] + 1 if cur else 1
        author_id, editor_id = _user_id(a.get("completed_by")), _user_id(a.get("updated_by"))
        annotator, editor = _annotator_id(author_id, host), _annotator_id(editor_id, host)
        flagged = trust.edited_by_other(annotator, editor_id, author_id)
        summary.edited_by_other += flagged
        if annotator:
            rows.annotators[annotator] = users.get(author_id)
        upd = _parse_ts(a["updated_at"]).replace(tzinfo=None) if a.get("updated_at") else None
        cancelled = bool(a.get("was_cancelled"))
        rows.versions.append((ann_id, project_key, version, key, annotator, upd, cancelled, False,
                              a.get("lead_time"), result_text, editor))
        rows.currents.append((ann_id, project_key, key, key.split(":", 1)[1], annotator, version, upd, cancelled,
                              False, pa.valid, pa.invalid_reason, pa.ratings[C.OVERALL], pa.ratings[C.NATURALNESS],
                              pa.ratings[C.ARTIFACTS], editor, flagged, pa.outside_preserved,
                              C.ARTIFACTS in pa.image_defaults))
        rows.regions += [(project_key, ann_id, r.region_key, r.region_id, r.kind, r.rle,
                          *(r.bbox or (None, None, None, None)), r.area, r.success, r.preserve, r.verdict,
                          not r.reasons, ", ".join(r.reasons) or None,
                          r.success_default, r.preserve_default, r.verdict_default) for r in pa.regions]
        if cur:
            summary.updated += 1
        else:
            summary.created += 1
        if not pa.valid:
            summary.invalid += 1
    return rows


def _write_page(con, project_key: str, rows: _PageRows) -> None:
    """Replace the changed annotations' current rows and append their versions."""
    changed = [v[0] for v in rows.versions]
    if changed:
        for table in ("annotations", "annotation_regions"):
            con.execute(f"DELETE FROM {table} WHERE project_key = ? AND ls_annotation_id IN (SELECT unnest(?))",
                        [project_key, changed])
    # Never overwrite annotators: the simulators register their bots (is_simulated, profile) first.
    insert_rows(con, "annotators", ["annotator_id", "email", "is_simulated"],
                [(k, v, False) for k, v in rows.annotators.items()], on_conflict="ON CONFLICT DO NOTHING")
    insert_rows(con, "annotation_versions", ["ls_annotation_id", "project_key", "version", "task_key",
                                             "annotator_id", "updated_at", "was_cancelled", "is_deleted",
                                             "lead_time", "result", "updated_by"], rows.versions)
    insert_rows(con, "annotations", ["ls_annotation_id", "project_key", "task_key", "sample_id", "annotator_id",
                                     "version", "updated_at", "was_cancelled", "is_deleted", "valid",
                                     "invalid_reason", "overall", "naturalness", "artifacts", "updated_by",
                                     "edited_by_other", "outside_preserved", "artifacts_default"], rows.currents)
    insert_rows(con, "annotation_regions", ["project_key", "ls_annotation_id", "region_key", "region_id", "kind",
                                            "rle", "x1", "y1", "x2", "y2", "area", "success", "preserve",
                                            "verdict", "valid", "invalid_reason", "success_default",
                                            "preserve_default", "verdict_default"], rows.regions)


def _mark_deleted(con, project_key: str, ann_id: int, version: int, task_key: str) -> None:
    con.execute("INSERT INTO annotation_versions (ls_annotation_id, project_key, version, task_key, annotator_id, "
                "updated_at, was_cancelled, is_deleted, lead_time, result, updated_by) SELECT ls_annotation_id, project_key, ?, "
                "task_key, annotator_id, updated_at, was_cancelled, true, NULL, NULL, updated_by FROM annotations "
                "WHERE project_key = ? AND ls_annotation_id = ?", [version, project_key, ann_id])
    con.execute("UPDATE annotations SET is_deleted = true, version = ? WHERE project_key = ? AND ls_annotation_id = ?",
                [version, project_key, ann_id])
    con.execute("DELETE FROM annotation_regions WHERE project_key = ? AND ls_annotation_id = ?", [project_key, ann_id])


def _annotator_id(user_id: Any, host: str) -> str | None:
    return f"ls:{user_id}@{host}" if isinstance(user_id, int) else None


def _edited_sizes(con, sample_ids: list[str]) -> dict[str, tuple[int, int]]:
    if not sample_ids:
        return {}
    rows = con.execute("SELECT s.sample_id, i.width, i.height FROM samples s JOIN images i "
                       "ON i.sha256 = s.edited_sha256 WHERE s.sample_id IN (SELECT unnest(?))",
                       [sample_ids]).fetchall()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def _check_deleted_tasks(http: LSHttp, wh: Warehouse, project_key: str, pid: int, summary: SyncSummary,
                         n_known: int) -> None:
    """Tasks deleted in Label Studio never appear as updated; catch them when the counts say so."""
    n_ls = int(http.get("/api/tasks", project=pid, page_size=1).get("total") or 0)
    if n_ls >= n_known:
        return
    known = wh.query("SELECT ls_task_id, task_key FROM tasks WHERE project_key = ?", [project_key])
    summary.full_task_check = True
    alive = {int(t["id"]) for page in http.iter_tasks(pid, page_size=1000) for t in page}
    gone_keys = [k for tid, k in known if int(tid) not in alive]
    with wh.write() as con:
        rows = con.execute("SELECT ls_annotation_id, version, task_key FROM annotations WHERE project_key = ? "
                           "AND NOT is_deleted AND task_key IN (SELECT unnest(?))", [project_key, gone_keys]).fetchall()
        for ann_id, version, task_key in rows:
            _mark_deleted(con, project_key, int(ann_id), int(version) + 1, task_key)
            summary.deleted += 1


__all__ = ["ParsedAnnotation", "ParsedRegion", "SyncConfig", "SyncError", "SyncSummary", "load_cursor",
           "parse_result", "sync_project"]
