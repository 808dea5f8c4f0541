"""Agreement (Krippendorff's alpha, ordinal) of the four default simulated annotators on
synthetic ground truth, through the labeling scheme of the code it imports (bots answer as the
config asks; sync's parser fills the recorded defaults). No Label Studio needed: the bots'
results are parsed directly. Run it against this code and a baseline checkout:

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sim_agreement.py 25
    PYTHONPATH=/tmp/annot/base .venv/bin/python benchmarks/bench_sim_agreement.py 25   # dbbcf43

Prints per dimension: units and alpha. Prefills are the true regions (the proposer is not
under test here).
"""
import json
import sys
import tempfile
from pathlib import Path
import numpy as np
from sfreward.synthetic.generator import generate, SynthConfig, read_ground_truth
from annotation.simulate import annotate_task, default_bots
from annotation.sync import parse_result
from annotation.push import brush_results
from warehouse.curation.agreement import krippendorff_alpha_ordinal
tmp = Path(tempfile.mkdtemp())
man = generate(tmp, SynthConfig(n_sources=int(sys.argv[1]), rollouts=4, image_size=96))
truth = read_ground_truth(tmp / "ground_truth.jsonl")
bots = default_bots()
units = {}
for sid, t in truth.items():
    regs = [(i, r["kind"], json.dumps(r["mask"]) if not isinstance(r["mask"], str) else r["mask"]) for i, r in enumerate(t["regions"])]
    task = {"data": {"sample_id": sid}, "predictions": [{"result": brush_results(regs, 128, 128)}]}
    for bi, b in enumerate(bots):
        res, skipped = annotate_task(b, task, t)
        if skipped: continue
        pa = parse_result(res, 128, 128, "rs")
        for r in pa.regions:
            for dim in ("success", "preserve"):
                v = getattr(r, dim)
                if v is not None: units.setdefault((sid, r.region_key, dim), {})[bi] = v
        for k, v in pa.ratings.items():
            if v is not None: units.setdefault((sid, k), {})[bi] = v
for dim in ("success", "preserve", "overall", "naturalness", "artifacts"):
    keys = [k for k in units if k[-1] == dim]
    m = np.full((len(bots), len(keys)), np.nan)
    for j, k in enumerate(keys):
        for bi, v in units[k].items(): m[bi, j] = v
    print(dim, len(keys), round(krippendorff_alpha_ordinal(m), 3))
