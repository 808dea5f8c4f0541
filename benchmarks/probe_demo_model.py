"""Offline probe behind benchmarks/results/demo_seeds.md (session 18:30 UTC): train with the given
overrides on a demo dataset export and compute the held-out reward check (region SRCC, localization
AUROC; sfreward.evaluate.region_metrics with the IoU matching of pipelines.demo.reward_check) against
labels and ground truth. Prints one JSON line (wall and CPU seconds, load average).

    PYTHONPATH=. .venv/bin/python benchmarks/probe_demo_model.py <dataset dir> <ground_truth.jsonl> key=value ...
"""
import json, os, sys, tempfile, time
import numpy as np, torch
import pyarrow.parquet as pq
from sfreward.train.config import load_config
from sfreward.train.trainer import train
from sfreward.model import SFRewardModel
from sfreward.evaluate import region_metrics
from sfreward.synthetic import read_ground_truth
from warehouse import masks
from warehouse.images import decode_rgb
from pipelines.demo import _f

def check(model, ds_dir, truth):
    rows = pq.read_table(f"{ds_dir}/hf/test-00000-of-00001.parquet").to_pylist()
    pred, lab, tru, sample = [], [], [], []
    bs = 32
    for i0 in range(0, len(rows), bs):
        rr = rows[i0:i0+bs]
        src = torch.stack([torch.from_numpy(decode_rgb(r["source"]["bytes"]).copy()).permute(2,0,1) for r in rr]).float()/255
        edt = torch.stack([torch.from_numpy(decode_rgb(r["edited"]["bytes"]).copy()).permute(2,0,1) for r in rr]).float()/255
        ms = [torch.from_numpy(np.stack([masks.decode(g["mask"]) for g in r["regions"]])) for r in rr]
        with torch.no_grad():
            out = model.predict(src, edt, [r["instruction"] for r in rr], ms, [[g["kind"] for g in r["regions"]] for r in rr])
        s, p = out["success"].numpy(), out["preserve"].numpy()
        k = 0
        for j, r in enumerate(rr):
            t = truth[r["sample_id"]]
            tm = [masks.decode(g["mask"]) for g in t["regions"]]
            for g in r["regions"]:
                pred.append([s[k], p[k]]); k += 1
                lab.append([_f(g.get("success")), _f(g.get("preserve"))])
                m = masks.decode(g["mask"])
                iou = [(m & x).sum() / max(1, (m | x).sum()) for x in tm]
                tg = t["regions"][int(np.argmax(iou))]
                tru.append([_f(tg.get("success")) if g["kind"] != "background" else float("nan"), _f(tg.get("preserve"))])
                sample.append(i0 + j)
    P, S = np.array(pred), np.array(sample)
    res = {}
    for name, tg in (("lab", lab), ("tru", tru)):
        m = region_metrics(P[:, 0], P[:, 1], np.array(tg, float), S)
        res[name] = (round(m["region_srcc_mean"], 3), round(m["region_srcc_success"], 3), round(m["region_srcc_preserve"], 3),
                     round(m["localization_auroc"], 3), m["n_localization"])
    return res

if __name__ == "__main__":
    ds_dir, truth_path = sys.argv[1], sys.argv[2]
    overrides = sys.argv[3:]
    truth = read_ground_truth(truth_path)
    out = tempfile.mkdtemp(prefix="sfr-probe-")
    cfg = load_config(None, [f"data_dir={ds_dir}", f"out_dir={out}", "ckpt_every=0", "eval_split=", "num_threads=2", "log_every=1000"] + overrides)
    t = time.perf_counter(); c0 = time.process_time()
    r = train(cfg)
    wall, cpu = time.perf_counter() - t, time.process_time() - c0
    model = SFRewardModel.from_pretrained(r.model_dir)
    res = check(model, ds_dir, truth)
    print(json.dumps({"ov": " ".join(overrides), "ds": ds_dir.split('/')[-1], "wall": round(wall), "cpu": round(cpu),
                      "load": round(os.getloadavg()[0], 1), **res}))
