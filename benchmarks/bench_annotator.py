"""Annotator effort in the real Label Studio editor: clicks + key presses and seconds per
complete, correct annotation.

A person is played by headless Chromium (Debian's /usr/bin/chromium) driven by Playwright:
it logs in, opens each task, selects regions in the Regions panel, clicks stars and verdicts
and presses Submit. Nothing is posted through the API. What it enters comes from an answer key
derived from the synthetic ground truth (sfreward.synthetic): every prefilled region is matched
to the true regions by mask IoU (as the simulated annotators do) and gets the true ratings in
stars, the true verdict, and the whole-image ratings. The driver enters what the labeling
config of the code under test asks for and nothing more; after Submit the saved annotation is
read back through the API, parsed by that code's sync parser, and compared with the key:
an annotation counts only when it is valid and every keyed value matches.

The same script runs against today's code and a baseline checkout (it reads the labeling
config and proposer defaults of whatever `annotation` / `sfreward` it imports):

    git worktree add /tmp/sfr-base dbbcf43
    cp benchmarks/bench_annotator.py /tmp/sfr-base/benchmarks/
    (cd /tmp/sfr-base && .venv/bin/python benchmarks/bench_annotator.py --label baseline \
        --out <repo>/benchmarks/results/annotator_baseline.json)
    .venv/bin/python benchmarks/bench_annotator.py --label new      # writes annotator.md

Target: clicks + keys per complete annotation <= 1/3 of the baseline's.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotation import config as C  # noqa: E402
from annotation import server  # noqa: E402
from annotation.brush import rle_to_mask  # noqa: E402
from annotation.client import LSHttp  # noqa: E402
from annotation.push import push_batch  # noqa: E402
from annotation.simulate import _match, stars  # noqa: E402
from annotation.sync import parse_result  # noqa: E402
from sfreward.regions import ProposerConfig  # noqa: E402
from sfreward.regions.group import propose_for_batch  # noqa: E402
from sfreward.synthetic.generator import SynthConfig, generate, read_ground_truth  # noqa: E402
from tests.fixtures.labelstudio import start_copy  # noqa: E402
from warehouse import masks as maskcodec  # noqa: E402
from warehouse.ingest import ingest_path  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
RESULTS = ROOT / "benchmarks" / "results"
NEW = hasattr(C, "OUTSIDE")  # the labeling config with the "everything outside preserved?" question


# ----------------------------------------------------------------------------- answer key
def answer_key(task: dict, truth: dict) -> dict:
    """What a careful annotator enters for one task: per prefilled region (in prediction order)
    its kind, success/preserve stars and verdict; the whole-image stars."""
    pred = (task.get("predictions") or [{}])[0].get("result") or []
    decoded = [maskcodec.decode(r["mask"]) for r in truth["regions"]]
    regions = []
    for item in pred:
        if item.get("from_name") != C.BRUSH:
            continue
        m = rle_to_mask(item["value"]["rle"], int(item["original_height"]), int(item["original_width"]))
        t = _match(m, truth["regions"], decoded)
        kind = item["value"]["brushlabels"][0]
        succ = t.get("success") if t.get("success") is not None else t["preserve"]
        regions.append({"id": item["id"], "kind": kind,
                        "success": stars(succ, 0.0) if kind != "background" else None,
                        "preserve": stars(t["preserve"], 0.0), "verdict": t["verdict"]})
    image = {name: stars(truth[name], 0.0) for name in C.IMAGE_RATINGS}
    return {"regions": regions, "image": image}


def keyed_verdict(r: dict) -> str | None:
    """Verdicts the key insists on: every edit region's, and any region's that is not 'fine'."""
    return r["verdict"] if r["kind"] == "edit" or r["verdict"] != "fine" else None


# ----------------------------------------------------------------------------- the person
class Person:
    """Counts every click and key press it makes."""

    def __init__(self, page):
        self.page, self.clicks, self.keys = page, 0, 0

    def click(self, locator) -> None:
        locator.click()
        self.clicks += 1

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)
        self.keys += 1

    def rating(self, hint: str, n: int) -> None:
        xp = (f"xpath=//*[self::h4 or self::h5 or self::h6][normalize-space()={json.dumps(hint)}]"
              "/following-sibling::div[1]//ul[contains(@class,'ant-rate')]")
        ul = self.page.locator(xp).filter(visible=True).first
        self.click(ul.locator("li").nth(n - 1).locator("div[role=radio]"))

    def choice(self, value: str) -> None:
        lab = self.page.locator("label").filter(visible=True).filter(has_text=re.compile(rf"^{re.escape(value)}(\[|$)"))
        self.click(lab.first)

    def select_region(self, idx: int, rid: str) -> None:
        """The Regions panel lists regions in result order; the final check against the key
        catches any mismatch."""
        from playwright.sync_api import expect

        node = self.page.locator("[class*=tree-node-content-wrapper]").nth(idx)
        self.click(node)
        expect(node).to_have_class(re.compile("tree-node-selected"))


def hint(name: str) -> str:
    return C._HINTS[name]


def annotate(person: Person, key: dict) -> None:
    """Enter `key` the way the code under test's config asks for it."""
    regions = key["regions"]
    if NEW:
        outside = [r for r in regions if r["kind"] != "edit"]
        changed = [r for r in outside if r["preserve"] != C.MAX_RATING or r["verdict"] != "fine"]
        for i, r in enumerate(regions):
            if r["kind"] == "edit":
                person.select_region(i, r["id"])
                person.rating(hint(C.SUCCESS), r["success"])
                if r["preserve"] != C.MAX_RATING or r["verdict"] == "artifact":
                    person.rating(hint(C.PRESERVE), r["preserve"])
                if r["verdict"] != C.default_edit_verdict(r["success"]):
                    person.choice(r["verdict"])
            elif r in changed:
                person.select_region(i, r["id"])
                if r["preserve"] != C.MAX_RATING:
                    person.rating(hint(C.PRESERVE_OUTSIDE), r["preserve"])
                if r["verdict"] != "fine":
                    person.choice(r["verdict"])
        person.choice(C.OUTSIDE_NO if changed else C.OUTSIDE_YES)
        artifact_marked = any(r["verdict"] == "artifact" for r in regions)
        for name in C.IMAGE_RATINGS:
            if name != C.ARTIFACTS or key["image"][name] != C.MAX_RATING or artifact_marked:
                person.rating(hint(name), key["image"][name])
        return
    else:
        for i, r in enumerate(regions):
            person.select_region(i, r["id"])
            if r["kind"] != "background":
                person.rating(hint(C.SUCCESS), r["success"])
            person.rating(hint(C.PRESERVE), r["preserve"])
            if keyed_verdict(r):
                person.choice(r["verdict"])
    for name in C.IMAGE_RATINGS:
        person.rating(hint(name), key["image"][name])


def check(result: list, key: dict, width: int, height: int) -> list[str]:
    """Differences between the saved annotation (parsed by the code under test) and the key."""
    pa = parse_result(result, width, height, "rs")
    errs = [] if pa.valid else [f"invalid: {pa.invalid_reason}"]
    by_key = {r.region_key: r for r in pa.regions}
    for r in key["regions"]:
        got = by_key.get(r["id"])
        if got is None:
            errs.append(f"{r['id']} missing")
            continue
        want = {"preserve": r["preserve"]}
        if r["kind"] == "edit":
            want["success"] = r["success"]
        if keyed_verdict(r):
            want["verdict"] = r["verdict"]
        for f, v in want.items():
            if getattr(got, f) != v:
                errs.append(f"{r['id']}.{f} = {getattr(got, f)!r}, key {v!r}")
    for name, v in key["image"].items():
        if pa.ratings[name] != v:
            errs.append(f"{name} = {pa.ratings[name]!r}, key {v!r}")
    return errs


# ----------------------------------------------------------------------------- run
def run(n_sources: int, rollouts: int, size: int, shots: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="sfr-bench-annot-"))
    h = start_copy(tmp / "home")
    try:
        man = generate(tmp / "synth", SynthConfig(n_sources=n_sources, rollouts=rollouts, image_size=size))
        truth = read_ground_truth(man.parent / "ground_truth.jsonl")
        batch = ingest_path(h.workspace, man).batch_id
        pcfg = ProposerConfig()
        propose_for_batch(h.workspace, batch, pcfg)
        s = push_batch(h.workspace, "bench-annotator", batch_id=batch, conn=h.conn)
        with LSHttp(h.conn) as http:
            tasks = [t for page in http.iter_tasks(s.ls_project_id, all_fields=True) for t in page]
        tasks.sort(key=lambda t: int(t["id"]))
        rows = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 2600})
            page.set_default_timeout(20_000)
            page.goto(h.base_url + "/user/login")
            page.fill("#email", h.email)
            page.fill("#password", h.password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/user/login" not in url)
            for n, t in enumerate(tasks):
                key = answer_key(t, truth[t["data"]["sample_id"]])
                page.goto(f"{h.base_url}/projects/{s.ls_project_id}/data?task={t['id']}")
                page.wait_for_selector("[class*=tree-node]")
                page.wait_for_selector("text=Overall quality of the edit")
                person = Person(page)
                t0 = time.perf_counter()
                annotate(person, key)
                if shots and n == 0:
                    page.screenshot(path=str(shots / f"annotator_{'new' if NEW else 'baseline'}.png"))
                with page.expect_response(lambda r: r.request.method == "POST" and "/annotations" in r.url
                                          and r.status == 201):
                    person.click(page.locator("button:has-text('Submit')").first)
                secs = time.perf_counter() - t0
                with LSHttp(h.conn) as http:
                    anns = http.get(f"/api/tasks/{t['id']}/annotations/")
                res = anns[-1]["result"]
                errs = check(res, key, size, size)
                rows.append({"task": int(t["id"]), "regions": len(key["regions"]), "clicks": person.clicks,
                             "keys": person.keys, "seconds": round(secs, 2), "errors": errs})
                print(f"task {t['id']}: {len(key['regions'])} regions, {person.clicks} clicks + {person.keys} "
                      f"keys, {secs:.1f} s, {'OK' if not errs else errs}", flush=True)
            browser.close()
    finally:
        server.stop(h.paths)
        shutil.rmtree(tmp, ignore_errors=True)
    ok = [r for r in rows if not r["errors"]]
    actions = [r["clicks"] + r["keys"] for r in ok]
    return {"n_tasks": len(rows), "n_correct": len(ok), "max_regions": pcfg.max_regions,
            "regions_per_task": statistics.mean(r["regions"] for r in rows),
            "actions_per_annotation": statistics.mean(actions) if actions else None,
            "clicks_per_annotation": statistics.mean(r["clicks"] for r in ok) if ok else None,
            "keys_per_annotation": statistics.mean(r["keys"] for r in ok) if ok else None,
            "seconds_per_annotation": statistics.mean(r["seconds"] for r in ok) if ok else None,
            "label_config_hash": C.LabelConfig().hash(), "tasks": rows}


def write_md(new: dict, base: dict | None, cmd: str, base_cmd: str | None) -> Path:
    lines = ["# Annotator effort in the Label Studio editor (Playwright + Chromium)", "",
             f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
             f"{platform.python_version()}; {new['n_tasks']} synthetic tasks (6 source photos x 4 rollouts, "
             "256 px, classical proposer), answer key from the synthetic ground truth.", "",
             "Commands:", "", "```", *( [base_cmd] if base_cmd else []), cmd, "```", "",
             "| code | max_regions | regions / task | correct | clicks | keys | clicks + keys | s / annotation |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in (("baseline (dbbcf43)", base), ("this branch", new)):
        if r:
            lines.append(f"| {label} | {r['max_regions']} | {r['regions_per_task']:.1f} | "
                         f"{r['n_correct']}/{r['n_tasks']} | {r['clicks_per_annotation']:.1f} | "
                         f"{r['keys_per_annotation']:.1f} | {r['actions_per_annotation']:.1f} | "
                         f"{r['seconds_per_annotation']:.1f} |")
    if base and new.get("actions_per_annotation") and base.get("actions_per_annotation"):
        ratio = new["actions_per_annotation"] / base["actions_per_annotation"]
        sratio = new["seconds_per_annotation"] / base["seconds_per_annotation"]
        lines += ["", f"Ratio clicks + keys, this branch / baseline: **{ratio:.2f}** (target <= 0.33); "
                      f"seconds (the scripted person's, page load excluded): {sratio:.2f}."]
    lines += ["", "Navigation to the next task is not counted (the labeling stream opens it after Submit). "
                  "Seconds are the scripted person's wall time from a loaded task to the saved annotation: "
                  "they measure the editor's responsiveness, not human reading time."]
    out = RESULTS / "annotator.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="new")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default benchmarks/results/annotator_<label>.json)")
    ap.add_argument("--sources", type=int, default=6)
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--baseline", type=Path, default=RESULTS / "annotator_baseline.json")
    ap.add_argument("--screenshots", type=Path, default=None)
    a = ap.parse_args()
    if a.screenshots:
        a.screenshots.mkdir(parents=True, exist_ok=True)
    res = run(a.sources, a.rollouts, a.size, a.screenshots)
    res["label"] = res_label = a.label
    res["command"] = "python " + " ".join(sys.argv)
    out = a.out or RESULTS / f"annotator_{res_label}.json"
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "tasks"}, indent=1))
    if res_label != "baseline":
        base = json.loads(a.baseline.read_text()) if a.baseline.exists() else None
        print("wrote", write_md(res, base, res["command"], base.get("command") if base else None))


if __name__ == "__main__":
    main()
