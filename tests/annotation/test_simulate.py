"""Simulated annotators on a real Label Studio: attribution, config-valid results, and noise
statistics that match each bot's configuration."""
from __future__ import annotations

import json

import numpy as np
import pytest

from annotation import config as C
from annotation.client import LSHttp
from annotation.push import push_batch
from annotation.simulate import BotConfig, annotate_task, run_bots, stars
from annotation.sync import sync_project
from sfreward.synthetic import SynthConfig, generate, read_ground_truth
from warehouse import masks
from warehouse.db import Warehouse
from warehouse.scale import reward_to_stars
from warehouse.ingest import ingest_path

pytestmark = pytest.mark.labelstudio

PROJECT = "sim-bots"
BOTS = [
    BotConfig("bot-good", rating_sd=0.2, seed=1),
    BotConfig("bot-mid", rating_sd=0.6, seed=2, wrong_verdict_prob=0.1),
    BotConfig("bot-bad", rating_sd=1.2, seed=3, skip_prob=0.15, wrong_verdict_prob=0.5, mask_edit_prob=0.5),
    BotConfig("bot-harsh", rating_sd=0.3, bias=-1.0, seed=4),
]


def insert_truth_regions(ws, truth: dict[str, dict]) -> None:
    """One region set per group from the generator's masks (what a perfect proposer returns)."""
    wh = Warehouse.open(ws)
    src = {r[0]: r[1] for r in wh.query("SELECT group_id, source_sha256 FROM samples")}
    first = {}
    for rec in truth.values():
        first.setdefault(rec["group_id"], rec)
    with wh.write() as con:
        for gid, rec in first.items():
            set_id = f"rs-{gid}"
            con.execute("INSERT INTO region_sets (region_set_id, group_id, proposer, config_hash, config, image_sha256, "
                        "height, width, n_regions) VALUES (?, ?, 'truth', 't0', '{}', ?, ?, ?, ?)",
                        [set_id, gid, src[gid], rec["height"], rec["width"], len(rec["regions"])])
            for r in rec["regions"]:
                con.execute("INSERT INTO regions (region_id, region_set_id, idx, kind, rle, x1, y1, x2, y2, area, "
                            "proposed_on) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'source')",
                            [f"{set_id}:{r['index']}", set_id, r["index"], r["kind"], masks.to_json(r["mask"]),
                             *r["bbox"], r["area"]])


@pytest.fixture(scope="module")
def annotated(labelstudio, tmp_path_factory):
    ws = labelstudio.workspace
    manifest = generate(tmp_path_factory.mktemp("synth"), SynthConfig(n_sources=4, rollouts=3, image_size=64))
    gt_path = manifest.parent / "ground_truth.jsonl"
    truth = read_ground_truth(gt_path)
    batch = ingest_path(ws, manifest).batch_id
    insert_truth_regions(ws, truth)
    push = push_batch(ws, PROJECT, batch_id=batch, overlap=len(BOTS), conn=labelstudio.conn)
    assert push.imported == len(truth) and not push.errors
    summary = run_bots(ws, PROJECT, gt_path, BOTS)
    sync_project(ws, PROJECT, conn=labelstudio.conn)
    return {"ws": ws, "truth": truth, "summary": summary, "gt_path": gt_path, "conn": labelstudio.conn,
            "batch": batch}


def test_each_bot_is_its_own_user_and_registered_as_simulated(annotated):
    s = annotated["summary"]
    assert not s.errors
    with LSHttp(annotated["conn"]) as http:
        users = {u["email"]: u["id"] for u in http.get("/api/users/")}
        pid = s.project_id
        tasks = [t for page in http.iter_tasks(pid, all_fields=True) for t in page]
    bot_ids = {users[b.email] for b in BOTS}
    assert len(bot_ids) == len(BOTS)
    for t in tasks:
        by = sorted(a["completed_by"] if isinstance(a["completed_by"], int) else a["completed_by"]["id"]
                    for a in t["annotations"])
        assert sorted(by) == sorted(bot_ids), f"task {t['id']} annotated by {by}"
    rows = Warehouse.open(annotated["ws"]).query_dicts(
        "SELECT annotator_id, email, is_simulated, profile FROM annotators ORDER BY email")
    sim = {r["email"]: r for r in rows if r["is_simulated"]}
    assert set(sim) == {b.email for b in BOTS}
    assert json.loads(sim["bot-bad@bots.sfreward.local"]["profile"])["rating_sd"] == 1.2
    n_ann = Warehouse.open(annotated["ws"]).query(
        "SELECT a.annotator_id, count(*) FROM annotations a JOIN annotators u USING (annotator_id) "
        "WHERE u.is_simulated GROUP BY 1")
    assert sum(n for _, n in n_ann) == len(annotated["truth"]) * len(BOTS)
    # The platform's API user writes each bot's annotations for it (updated_by != completed_by):
    # that is the one case of a foreign last editor that sync does not flag.
    assert Warehouse.open(annotated["ws"]).query(
        "SELECT count(*) FILTER (edited_by_other), count(DISTINCT updated_by), count(*) FILTER (updated_by = annotator_id) "
        "FROM annotations WHERE project_key = ?", [PROJECT]) == [(0, 1, 0)]


def test_results_fit_the_labeling_config(annotated):
    wh = Warehouse.open(annotated["ws"])
    rows = wh.query_dicts("SELECT a.valid, a.invalid_reason, a.was_cancelled, u.email FROM annotations a "
                          "JOIN annotators u USING (annotator_id)")
    done = [r for r in rows if not r["was_cancelled"]]
    assert done and all(r["valid"] for r in done), [r["invalid_reason"] for r in done if not r["valid"]][:3]
    skipped = sum(r["was_cancelled"] for r in rows)
    assert skipped == sum(annotated["summary"].skipped.values())
    bad = wh.query("SELECT count(*) FROM annotation_regions WHERE NOT valid")[0][0]
    assert bad == 0
    # Background regions carry no success rating; every other region does.
    kinds = wh.query("SELECT kind, count(success), count(*) FROM annotation_regions GROUP BY kind")
    for kind, n_success, n in kinds:
        assert n_success == (0 if kind == "background" else n), kind


def _errors(annotated) -> dict[str, dict]:
    """Per bot: rating - reward_to_stars(truth) (continuous) for every region rating and whole-image rating."""
    wh = Warehouse.open(annotated["ws"])
    truth = annotated["truth"]
    out = {b.email: {"err": [], "truth": [], "verdict_ok": [], "mask_iou": []} for b in BOTS}
    for r in wh.query_dicts(
            "SELECT u.email, a.sample_id, ar.region_id, ar.success, ar.preserve, ar.verdict, ar.rle "
            "FROM annotation_regions ar JOIN annotations a USING (project_key, ls_annotation_id) "
            "JOIN annotators u USING (annotator_id)"):
        gt = truth[r["sample_id"]]
        idx = int(r["region_id"].rsplit(":", 1)[1])
        t = gt["regions"][idx]
        d = out[r["email"]]
        for name in ("success", "preserve"):
            if r[name] is not None:
                score = t[name] if t[name] is not None else t["preserve"]
                d["err"].append(r[name] - reward_to_stars(score))
                d["truth"].append(reward_to_stars(score))
        d["verdict_ok"].append(r["verdict"] == t["verdict"])
        m, tm = masks.decode(r["rle"]), masks.decode(t["mask"])
        d["mask_iou"].append((m & tm).sum() / (m | tm).sum())
    for r in wh.query_dicts("SELECT u.email, a.sample_id, a.overall, a.naturalness, a.artifacts FROM annotations a "
                            "JOIN annotators u USING (annotator_id) WHERE NOT a.was_cancelled"):
        for name in C.IMAGE_RATINGS:
            out[r["email"]]["err"].append(r[name] - reward_to_stars(truth[r["sample_id"]][name]))
            out[r["email"]]["truth"].append(reward_to_stars(truth[r["sample_id"]][name]))
    return out


def _expected_mae(true_stars: np.ndarray, bot: BotConfig, draws: int = 4000) -> tuple[float, float]:
    """Mean and standard error of the MAE a bot with this configuration would show on these
    true values (Monte Carlo, independent of the bot code)."""
    rng = np.random.default_rng(123)
    noise = rng.normal(bot.bias, np.hypot(bot.rating_sd, bot.task_sd), (draws, true_stars.size))
    obs = np.clip(np.rint(true_stars + noise), 1, 5)
    mae = np.abs(obs - true_stars).mean(1)
    return float(mae.mean()), float(mae.std())


def test_noise_matches_configuration(annotated):
    errs = _errors(annotated)
    mae = {}
    for b in BOTS:
        e, t = np.asarray(errs[b.email]["err"]), np.asarray(errs[b.email]["truth"])
        assert e.size > 60, f"{b.name}: only {e.size} ratings"
        mae[b.name] = float(np.abs(e).mean())
        exp, se = _expected_mae(t, b)
        assert abs(mae[b.name] - exp) < 4 * se + 0.03, (b.name, mae[b.name], exp, se)
    assert mae["bot-good"] < mae["bot-mid"] < mae["bot-bad"], mae
    harsh = np.asarray(errs["bot-harsh@bots.sfreward.local"]["err"])
    assert harsh.mean() < -0.6, harsh.mean()
    good = np.asarray(errs["bot-good@bots.sfreward.local"]["err"])
    assert abs(good.mean()) < 0.2


def test_mistakes_follow_configuration(annotated):
    errs = _errors(annotated)
    good, bad = errs["bot-good@bots.sfreward.local"], errs["bot-bad@bots.sfreward.local"]
    assert np.mean(good["verdict_ok"]) == 1.0
    assert 0.25 < 1 - np.mean(bad["verdict_ok"]) < 0.75
    # Truth regions were prefilled: untouched masks are exact, sloppy edits are not.
    assert min(good["mask_iou"]) == 1.0
    sloppy = np.mean(np.asarray(bad["mask_iou"]) < 1.0)
    assert 0.25 < sloppy < 0.75, sloppy
    assert annotated["summary"].skipped["bot-good"] == 0


def test_rerun_adds_nothing(annotated):
    again = run_bots(annotated["ws"], PROJECT, annotated["gt_path"], BOTS)
    assert sum(again.created.values()) == 0 and sum(again.skipped.values()) == 0
    assert again.already_done == len(annotated["truth"]) * len(BOTS)


def test_annotate_task_is_deterministic_and_rounds_truth():
    assert stars(25.0, 0.0) == 5 and stars(0.0, 0.0) == 1 and stars(12.6, 0.0) == 3 and stars(None, 0.3) is None
    assert stars(6.25, 0.0) == 2 and stars(18.75, 0.0) == 4   # the one scale: 1 star = 0, 5 stars = 25
    m = np.zeros((8, 8), bool)
    m[:4] = True
    truth = {"regions": [{"index": 0, "kind": "edit", "mask": masks.encode(m), "success": 25.0, "preserve": 20.0,
                          "verdict": "correct_edit"},
                         {"index": 1, "kind": "background", "mask": masks.encode(~m), "success": None,
                          "preserve": 25.0, "verdict": "fine"}],
             "overall": 22.0, "naturalness": 25.0, "artifacts": 25.0}
    from annotation.simulate import mask_to_rle
    task = {"data": {"sample_id": "s1"}, "predictions": [{"result": [
        {"id": f"p{i}", "from_name": "region", "to_name": "edited", "type": "brushlabels", "original_width": 8,
         "original_height": 8, "image_rotation": 0, "value": {"format": "rle", "rle": mask_to_rle(mm),
                                                             "brushlabels": ["context"]}}
        for i, mm in enumerate([m, ~m])]}]}
    bot = BotConfig("exact", rating_sd=0.0)
    res, skipped = annotate_task(bot, task, truth)
    assert not skipped and res == annotate_task(bot, task, truth)[0]
    by = {(r["id"], r["from_name"]): r["value"] for r in res}
    assert by[("p0", "region")]["brushlabels"] == ["edit"]          # kind corrected from the truth
    assert by[("p0", "success")]["rating"] == 5 and by[("p0", "preserve")]["rating"] == 4
    # Everything outside the edit is untouched: one "yes" instead of the background's ratings.
    assert ("p1", "success") not in by and ("p1", "preserve") not in by and ("p1", "preserve_outside") not in by
    assert by[("outside", "outside")]["choices"] == [C.OUTSIDE_YES]
    # A damaged background: "no", and only that region rated.
    truth["regions"][1].update(preserve=6.25, verdict="artifact")   # 6.25 = 2 stars on the one scale
    by = {(r["id"], r["from_name"]): r["value"] for r in annotate_task(bot, task, truth)[0]}
    assert by[("outside", "outside")]["choices"] == [C.OUTSIDE_NO]
    assert by[("p1", "preserve_outside")]["rating"] == 2 and by[("p1", "verdict")]["choices"] == ["artifact"]
    # Artifacts 5 with no region marked artifact is the default (left out); marked: given.
    image = {r["from_name"] for r in res if r["type"] == "rating" and not r["id"].startswith("p")}
    assert image == {C.OVERALL, C.NATURALNESS}
    assert ("a2", C.ARTIFACTS) in by


def test_overlap_caps_annotators_per_task(annotated):
    """With the project's maximum_annotations = 2, each task gets two bots, spread across bots."""
    ws = annotated["ws"]
    push = push_batch(ws, "sim-bots-2", batch_id=annotated["batch"], overlap=2, conn=annotated["conn"])
    assert push.imported == len(annotated["truth"])
    s = run_bots(ws, "sim-bots-2", annotated["gt_path"], BOTS)
    assert not s.errors
    per_bot = {b: s.created[b] + s.skipped[b] for b in s.created}
    assert sum(per_bot.values()) == 2 * len(annotated["truth"])
    assert sum(n > 0 for n in per_bot.values()) >= 3, per_bot
    with LSHttp(annotated["conn"]) as http:
        tasks = [t for page in http.iter_tasks(s.project_id, all_fields=True) for t in page]
    assert all(len(t["annotations"]) == 2 for t in tasks)
