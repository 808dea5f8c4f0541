"""Simulated annotators: bots that annotate real Label Studio tasks from known ground truth.

Each bot is its own Label Studio user (created through the users API, e-mail
`<name>@bots.sfreward.local`); the admin connection posts the bot's annotations with
`completed_by = <bot user id>` (the annotations API honours it in Label Studio 1.23 Community,
where an admin cannot obtain another user's token), so Label Studio, exports and `sync` all
attribute each annotation to its bot. In the warehouse every bot is an `annotators` row with
`is_simulated = true` and its noise profile as JSON, registered before any of its annotations
is synced (sync never overwrites an annotator row).

A bot starts from the task's prefilled prediction (one brush region per proposal), matches each
region to the ground-truth regions by mask IoU, and fills in what the labeling config asks
(annotation/README.md): brush label (the matched region's true kind); for edit regions success,
preserve and verdict; the "everything outside the edit preserved?" answer (yes when every other
region looks untouched to the bot, else no plus preserve/verdict of the regions it sees changed);
and whole-image overall / naturalness / artifacts.
Ratings are 1..5 stars from the 0..25 truth, inverting the one label scale (warehouse/scale.py:
1 star = 0, 5 stars = 25): stars = clip(round(reward_to_stars(truth) + bias + task_offset
+ N(0, rating_sd)), 1, 5), where task_offset ~ N(0, task_sd) is shared by all ratings of one
task (a bot's mood on that item: correlated disagreement). Mistakes: skipping a task
(`skip_prob`), a wrong verdict (`wrong_verdict_prob`), a sloppy mask edit (`mask_edit_prob`:
the region's mask dilated or eroded by `mask_edit_px`).
"""
from __future__ import annotations

import json
import logging
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import numpy as np
from scipy import ndimage

from annotation import config as C
from annotation.client import Connection, LSHttp, connection
from warehouse import masks as maskcodec
from warehouse.db import Warehouse
from warehouse.scale import STARS_MAX, STARS_MIN, reward_to_stars
from warehouse.workspace import Workspace

try:  # the fast codec when present; the official one otherwise
    from annotation.brush import mask_to_rle, rle_to_mask
except ImportError:  # pragma: no cover - until annotation/brush.py lands
    from label_studio_sdk.converter.brush import decode_rle as _decode_rle
    from label_studio_sdk.converter.brush import mask2rle as _mask2rle

    def mask_to_rle(mask: np.ndarray) -> list[int]:
        return _mask2rle(np.asarray(mask, dtype=np.uint8) * 255)

    def rle_to_mask(rle: list[int], height: int, width: int) -> np.ndarray:
        return np.asarray(_decode_rle(rle)).reshape(height, width, 4)[:, :, 3] > 0

log = logging.getLogger(__name__)
BOT_DOMAIN = "bots.sfreward.local"
MIN_IOU = 0.3   # below this a prefilled region matches no true region well; rate its overlaps


@dataclass
class BotConfig:
    """One simulated annotator. Noise is in stars (1..5 scale)."""
    name: str
    rating_sd: float = 0.4          # per-rating ordinal noise
    task_sd: float = 0.0            # per-task offset shared by its ratings
    bias: float = 0.0               # added to every rating (negative = harsh)
    skip_prob: float = 0.0          # skip the task (annotation with was_cancelled)
    wrong_verdict_prob: float = 0.0
    mask_edit_prob: float = 0.0     # per region: dilate or erode the prefilled mask
    mask_edit_px: int = 2
    coverage: float = 1.0           # fraction of tasks this bot is offered
    seed: int = 0

    @property
    def email(self) -> str:
        return f"{self.name}@{BOT_DOMAIN}"


def default_bots() -> list[BotConfig]:
    """Four annotators of different quality, best first."""
    return [
        BotConfig("sim-careful", rating_sd=0.3, skip_prob=0.0, wrong_verdict_prob=0.02, mask_edit_prob=0.05),
        BotConfig("sim-average", rating_sd=0.6, task_sd=0.2, skip_prob=0.03, wrong_verdict_prob=0.08,
                  mask_edit_prob=0.1),
        BotConfig("sim-harsh", rating_sd=0.6, bias=-0.8, skip_prob=0.03, wrong_verdict_prob=0.08, mask_edit_prob=0.1),
        BotConfig("sim-sloppy", rating_sd=1.2, task_sd=0.4, bias=0.3, skip_prob=0.1, wrong_verdict_prob=0.3,
                  mask_edit_prob=0.3, mask_edit_px=3),
    ]


@dataclass
class BotsSummary:
    project_id: int
    tasks_seen: int = 0
    without_truth: int = 0
    created: dict[str, int] = field(default_factory=dict)     # bot -> annotations created
    skipped: dict[str, int] = field(default_factory=dict)     # bot -> tasks skipped (cancelled)
    already_done: int = 0
    errors: dict[str, str] = field(default_factory=dict)      # "<bot>:<task id>" -> reason
    annotators: dict[str, str] = field(default_factory=dict)  # bot -> warehouse annotator_id

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def stars(score: float | None, noise: float) -> int | None:
    """0..25 truth plus noise (in stars) -> 1..5 stars; None stays None."""
    if score is None:
        return None
    return int(np.clip(np.rint(reward_to_stars(score) + noise), STARS_MIN, STARS_MAX))


def _rng(bot: BotConfig, key: str) -> np.random.Generator:
    return np.random.default_rng([bot.seed, zlib.crc32(bot.name.encode()), zlib.crc32(key.encode())])


def _match(mask: np.ndarray, truth: list[dict], decoded: list[np.ndarray]) -> dict:
    """The true region best matching `mask` by IoU; below MIN_IOU an overlap-weighted blend."""
    inter = np.array([(mask & t).sum() for t in decoded], float)
    union = np.array([(mask | t).sum() for t in decoded], float)
    iou = inter / np.maximum(union, 1)
    best = int(np.argmax(iou))
    if iou[best] >= MIN_IOU or inter.sum() == 0:
        return truth[best]
    w = inter / inter.sum()

    def blend(key):
        vals = [(wi, t[key]) for wi, t in zip(w, truth) if wi > 0 and t.get(key) is not None]
        return sum(wi * v for wi, v in vals) / sum(wi for wi, _ in vals) if vals else None

    top = truth[int(np.argmax(inter))]
    return {**top, "success": blend("success") if top["kind"] != "background" else None,
            "preserve": blend("preserve")}


def annotate_task(bot: BotConfig, task: dict, truth: dict) -> tuple[list[dict], bool]:
    """(result list, skipped) for one task from its prefilled prediction and ground truth.
    Pure: no I/O. Deterministic per (bot, sample_id)."""
    sid = str(task["data"]["sample_id"])
    rng = _rng(bot, sid)
    if rng.random() < bot.skip_prob:
        return [], True
    offset = bot.bias + (rng.normal(0, bot.task_sd) if bot.task_sd > 0 else 0.0)

    def noisy(score):
        return stars(score, offset + rng.normal(0, bot.rating_sd))

    pred = (task.get("predictions") or [{}])[0].get("result") or []
    decoded_truth = [maskcodec.decode(r["mask"]) for r in truth["regions"]]
    out: list[dict] = []
    outside: list[tuple[str, int, str]] = []   # (result id, preserve stars, verdict) of non-edit regions
    any_artifact = False
    for item in pred:
        if item.get("from_name") != C.BRUSH or item.get("type") != "brushlabels":
            continue
        h, w = int(item["original_height"]), int(item["original_width"])
        mask = rle_to_mask(item["value"]["rle"], h, w)
        if mask.shape != decoded_truth[0].shape:  # truth defined at another size: compare resized
            from PIL import Image
            th, tw = decoded_truth[0].shape
            small = Image.fromarray(mask.astype(np.uint8) * 255).resize((tw, th), Image.NEAREST)
            t = _match(np.asarray(small) > 127, truth["regions"], decoded_truth)
        else:
            t = _match(mask, truth["regions"], decoded_truth)
        value = dict(item["value"])
        value["brushlabels"] = [t["kind"]]
        if rng.random() < bot.mask_edit_prob:
            grow = rng.random() < 0.5
            edited = (ndimage.binary_dilation if grow else ndimage.binary_erosion)(mask, iterations=bot.mask_edit_px)
            if edited.any():
                value["rle"] = mask_to_rle(edited)
        rid = item["id"]
        out.append({"id": rid, "from_name": C.BRUSH, "to_name": C.EDITED, "type": "brushlabels",
                    "original_width": w, "original_height": h, "image_rotation": 0, "value": value})
        s = None
        if t["kind"] == "edit":
            s = noisy(t["success"] if t.get("success") is not None else t["preserve"])
        p = noisy(t["preserve"])
        verdict = t["verdict"]
        if rng.random() < bot.wrong_verdict_prob:
            verdict = str(rng.choice([v for v in C.VERDICTS if v not in (verdict, C.UNSURE)]))
        any_artifact |= verdict == "artifact"
        if t["kind"] == "edit":
            out += [_rating(rid, C.SUCCESS, s), _verdict(rid, verdict)]
            if p < C.MAX_RATING or verdict == "artifact":  # 5 is the default unless marked artifact
                out.append(_rating(rid, C.PRESERVE, p))
        else:
            outside.append((rid, p, verdict))
    # One answer for everything outside the edit: "yes" when the bot sees every other region
    # untouched (5 stars, fine); otherwise it rates only the regions it sees changed and the
    # rest count as preserved (annotation.config).
    changed = [(rid, p, v) for rid, p, v in outside if p < C.MAX_RATING or v != "fine"]
    for rid, p, v in changed:
        if p < C.MAX_RATING:
            out.append(_rating(rid, C.PRESERVE_OUTSIDE, p))
        if v != "fine":
            out.append(_verdict(rid, v))
    out.append({"id": "outside", "from_name": C.OUTSIDE, "to_name": C.EDITED, "type": "choices",
                "value": {"choices": [C.OUTSIDE_NO if changed else C.OUTSIDE_YES]}})
    for i, name in enumerate(C.IMAGE_RATINGS):
        v = noisy(truth[name])
        if name == C.ARTIFACTS and v == C.MAX_RATING and not any_artifact:
            continue  # the default: no region marked artifact, no artifacts
        out.append(_rating(f"{name[0]}{i}", name, v))
    return out, False


def _verdict(rid: str, verdict: str) -> dict:
    return {"id": rid, "from_name": C.VERDICT, "to_name": C.EDITED, "type": "choices",
            "value": {"choices": [verdict]}}


def _rating(rid: str, name: str, value: int) -> dict:
    return {"id": rid, "from_name": name, "to_name": C.EDITED, "type": "rating", "value": {"rating": int(value)}}


def ensure_users(http: LSHttp, bots: list[BotConfig]) -> dict[str, int]:
    """bot name -> Label Studio user id, creating users that do not exist yet."""
    users = {u.get("email"): int(u["id"]) for u in http.get("/api/users/")}
    out = {}
    for b in bots:
        if b.email not in users:
            u = http.post("/api/users/", {"email": b.email, "username": b.name, "first_name": "Simulated",
                                          "last_name": b.name})
            users[b.email] = int(u["id"])
        out[b.name] = users[b.email]
    return out


def register_annotators(ws: Workspace, base_url: str, bots: list[BotConfig], user_ids: dict[str, int]) -> dict[str, str]:
    """Warehouse `annotators` rows (is_simulated, profile) in sync's id format."""
    host = urlparse(base_url).netloc
    wh = Warehouse.open(ws)
    ids = {}
    with wh.write() as con:
        for b in bots:
            aid = f"ls:{user_ids[b.name]}@{host}"
            profile = json.dumps({"simulated": True, **asdict(b)}, sort_keys=True)
            con.execute("INSERT INTO annotators (annotator_id, email, is_simulated, profile) VALUES (?, ?, true, ?) "
                        "ON CONFLICT (annotator_id) DO UPDATE SET is_simulated = true, profile = excluded.profile, "
                        "email = excluded.email", [aid, b.email, profile])
            ids[b.name] = aid
    return ids


def _project_id(ws: Workspace | None, project: str | int) -> int:
    if isinstance(project, int):
        return project
    if ws is None:
        raise ValueError(f"project {project!r} is a project key; give a workspace or the Label Studio project id")
    row = Warehouse.open(ws).query("SELECT ls_project_id FROM ls_projects WHERE project_key = ?", [project])
    if not row:
        raise ValueError(f"project {project!r} is unknown in the warehouse of {ws.home}; push tasks to it first")
    return int(row[0][0])


def load_truth(ground_truth: str | Path | dict) -> dict[str, dict]:
    if isinstance(ground_truth, dict):
        return ground_truth
    from sfreward.synthetic.generator import read_ground_truth
    return read_ground_truth(ground_truth)


def run_bots(target: Workspace | Connection, project: str | int, ground_truth: str | Path | dict,
             bots: list[BotConfig] | None = None, max_per_task: int | None = None,
             progress: Callable[[int], None] | None = None) -> BotsSummary:
    """Let `bots` annotate every task of `project` that has ground truth.

    target: a Workspace (its Label Studio connection; bots are registered in its warehouse) or
        a Connection (no warehouse).
    project: a project key from the warehouse, or a Label Studio project id.
    max_per_task: annotators per task (default: the project's maximum_annotations); bots are
        offered a task in a per-task random order, each takes it with probability `coverage`.
    Idempotent: a bot never annotates a task twice (its earlier annotations are found by
    completed_by). One failing task is recorded in `errors` and the run goes on.
    """
    bots = bots if bots is not None else default_bots()
    if len({b.name for b in bots}) != len(bots):
        raise ValueError("bot names must be unique")
    ws = target if isinstance(target, Workspace) else None
    conn = connection(target) if ws is not None else target
    pid = _project_id(ws, project)
    truth = load_truth(ground_truth)
    summary = BotsSummary(pid, created={b.name: 0 for b in bots}, skipped={b.name: 0 for b in bots})
    with LSHttp(conn) as http:
        user_ids = ensure_users(http, bots)
        if ws is not None:
            summary.annotators = register_annotators(ws, conn.base_url, bots, user_ids)
        if max_per_task is None:
            max_per_task = int(http.get(f"/api/projects/{pid}").get("maximum_annotations") or 1)
        for page in http.iter_tasks(pid, all_fields=True):
            for task in page:
                summary.tasks_seen += 1
                sid = str((task.get("data") or {}).get("sample_id"))
                if sid not in truth:
                    summary.without_truth += 1
                    continue
                done_by = {a.get("completed_by") for a in task.get("annotations", [])}
                done_by = {d["id"] if isinstance(d, dict) else d for d in done_by}
                order = np.random.default_rng([zlib.crc32(sid.encode())]).permutation(len(bots))
                taken = 0
                for bi in order:
                    bot = bots[bi]
                    if taken >= max_per_task:
                        break
                    if _rng(bot, "offer:" + sid).random() >= bot.coverage:
                        continue
                    taken += 1
                    if user_ids[bot.name] in done_by:
                        summary.already_done += 1
                        continue
                    try:
                        result, skipped = annotate_task(bot, task, truth[sid])
                        body = {"result": result, "completed_by": user_ids[bot.name], "was_cancelled": skipped,
                                "lead_time": float(np.round(_rng(bot, "t:" + sid).gamma(4.0, 10.0), 1))}
                        pred = (task.get("predictions") or [{}])[0].get("id")
                        if pred is not None:
                            body["parent_prediction"] = int(pred)
                        http.post(f"/api/tasks/{int(task['id'])}/annotations/", body)
                        (summary.skipped if skipped else summary.created)[bot.name] += 1
                    except Exception as e:  # one bad task must not stop the run
                        summary.errors[f"{bot.name}:{task['id']}"] = f"{type(e).__name__}: {str(e)[:200]}"
                if progress:
                    progress(1)
    return summary
