"""Model registry: versioned artifact directories under <home>/models/<model_id>/ recorded in
the warehouse (tables models, model_aliases, evaluations; migration 005).

An artifact directory holds model.safetensors, config.json, train_config.json and
model_card.json (data version, parent model, code version, metrics, sha256 of the weights).
Loading re-hashes the weights against the warehouse record and the card and refuses a
mismatch. Promotion to `production` is gated: the candidate must not be worse than the
current production model on the same evaluation (same dataset version and split).
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sfreward.model import ArtifactError, SFRewardModel, sha256_file  # noqa: F401 (re-exported)
from sfreward.model.model import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE
from warehouse.curation.dataset import label_scale_of
from warehouse.db import Warehouse
from warehouse.workspace import Workspace

ALIASES = ("candidate", "production")
# Metrics compared by the promotion gate (higher is better); missing ones are skipped.
GATE_METRICS = ("localization_auroc", "region_srcc_mean", "pairwise_accuracy", "image_plcc_overall")


class RegistryError(RuntimeError):
    pass


def code_version() -> str:
    """The git commit of this checkout (suffix '+dirty' with local changes), else the
    installed package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version
        try:
            return "sfreward-platform==" + version("sfreward-platform")
        except PackageNotFoundError:
            return "unknown"


def _clean(obj):
    """JSON-safe: NaN/inf -> None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def register_model(ws: Workspace, model_dir: str | Path, dataset_id: str | None,
                   train_config: dict | None = None, metrics: dict | None = None,
                   parent_model_id: str | None = None, alias: str | None = "candidate") -> str:
    """Copy a trained model directory into the registry and record it. Returns model_id."""
    src = Path(model_dir)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (src / name).is_file():
            raise RegistryError(f"cannot register {src}: no {name} (is it a trained model directory?)")
    sha = sha256_file(src / WEIGHTS_FILE)
    base = f"sfr-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{sha[:8]}"
    model_id, n = base, 1
    while (ws.models / model_id).exists():  # same weights registered twice within a second
        n += 1
        model_id = f"{base}-{n}"
    dest = ws.models / model_id
    if train_config is None and (src / "train_config.json").is_file():
        train_config = json.loads((src / "train_config.json").read_text())
    model_config = json.loads((src / CONFIG_FILE).read_text())
    from safetensors import safe_open
    with safe_open(str(src / WEIGHTS_FILE), "pt") as f:
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    card = _clean({
        "model_id": model_id, "weights_sha256": sha, "dataset_id": dataset_id,
        "parent_model_id": parent_model_id, "code_version": code_version(),
        "preset": (train_config or {}).get("preset") or None,
        "backbone_source": model_config.get("backbone_source"), "text_source": model_config.get("text_source"),
        "created_at": datetime.now(timezone.utc).isoformat(), "n_params": n_params,
        "metrics": metrics or {}, "train_config": train_config or {}, "model_config": model_config,
        "proposer": dataset_proposer(ws, dataset_id),
        "label_scale": label_scale_of(ws, dataset_id),   # the scale of its training labels
    })
    tmp = ws.models / f".tmp-{model_id}"
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(CARD_FILE))
    (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True))
    (tmp / "README.md").write_text(_card_markdown(card))
    tmp.rename(dest)  # the registry only ever shows complete directories
    wh = Warehouse.open(ws)
    with wh.write() as con:
        con.execute(
            "INSERT INTO models (model_id, path, weights_sha256, dataset_id, parent_model_id, train_config,"
            " model_config, code_version, metrics, n_params) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [model_id, ws.relative(dest), sha, dataset_id, parent_model_id,
             json.dumps(card["train_config"]), json.dumps(model_config), card["code_version"],
             json.dumps(card["metrics"]), n_params])
        if alias:
            _set_alias(con, alias, model_id)
    return model_id


def dataset_proposer(ws: Workspace, dataset_id: str | None) -> dict | None:
    """The region proposer config(s) a dataset's regions came from, for the model card:
    {"proposer", "config_hash", "config"} of the most used one, plus "all_hashes" when the
    dataset mixes several. None without a dataset or without proposed regions."""
    if not dataset_id:
        return None
    rows = Warehouse.open(ws).query(
        "SELECT s.proposer, s.config_hash, any_value(s.config), count(*) AS n FROM dataset_regions d"
        " JOIN regions r USING (region_id) JOIN region_sets s USING (region_set_id)"
        " WHERE d.dataset_id = ? GROUP BY s.proposer, s.config_hash ORDER BY n DESC, s.config_hash", [dataset_id])
    if not rows:
        return None
    proposer, chash, config, _ = rows[0]
    out = {"proposer": proposer, "config_hash": chash, "config": json.loads(config)}
    if len(rows) > 1:
        out["all_hashes"] = [r[1] for r in rows]
    return out


def trained_proposer(ws: Workspace, ref: str) -> dict | None:
    """The proposer record of a registered model's card (see dataset_proposer); None when the
    card has none (trained without proposed regions, or registered before it was recorded)."""
    rec = get_model(ws, ref)
    card = ws.absolute(rec["path"]) / CARD_FILE
    try:
        return json.loads(card.read_text()).get("proposer")
    except (OSError, json.JSONDecodeError):
        return None


def _card_markdown(card: dict) -> str:
    """A human-readable model card (the JSON card is the one the code reads)."""
    mc = card["model_config"]
    lines = [f"# SFReward model {card['model_id']}", "",
             f"- trained on dataset version: `{card['dataset_id']}`",
             f"- parent model: `{card['parent_model_id'] or 'none'}`",
             f"- code version: `{card['code_version']}`",
             f"- created: {card['created_at']}",
             f"- backbone: {mc.get('backbone')} ({mc.get('backbone_config', {}).get('hidden_size')} wide, "
             f"{mc.get('backbone_config', {}).get('num_hidden_layers')} layers), {mc.get('image_size')} px, "
             f"{card['n_params']:,} parameters",
             f"- preset: `{card.get('preset') or 'none'}`; text encoder: {mc.get('text_encoder', 'hash')}",
             f"- pretrained backbone: {_source_line(card.get('backbone_source'))}",
             f"- pretrained text encoder: {_source_line(card.get('text_source'))}",
             f"- weights sha256: `{card['weights_sha256']}`",
             f"- region proposer at training: {_proposer_line(card.get('proposer'))}", "",
             "Scores are on the 0..25 scale (see docs/architecture.md, model interface), trained on "
             f"labels of scale `{card.get('label_scale') or 'unknown'}` (docs/architecture.md, \"Scales\").", "",
             "## Metrics at registration", ""]
    lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}"
              for k, v in sorted(card["metrics"].items())] or ["- none recorded"]
    return "\n".join(lines) + "\n"


def _source_line(src: dict | None) -> str:
    if not src:
        return "none (random init)"
    shas = ", ".join(f"{k} sha256 `{v}`" for k, v in sorted(src.get("weights_sha256", {}).items()))
    return f"`{src.get('path')}` ({src.get('model_type')}; {shas})"


def _proposer_line(p: dict | None) -> str:
    return "not recorded" if not p else f"{p['proposer']} (config hash `{p['config_hash']}`)"


def _set_alias(con, alias: str, model_id: str) -> None:
    prev = con.execute("SELECT model_id FROM model_aliases WHERE alias = ?", [alias]).fetchone()
    con.execute("DELETE FROM model_aliases WHERE alias = ?", [alias])
    con.execute("INSERT INTO model_aliases (alias, model_id, previous_model_id) VALUES (?, ?, ?)",
                [alias, model_id, prev[0] if prev else None])


def set_alias(ws: Workspace, alias: str, model_id: str) -> None:
    """Point `alias` at a registered model (no gate: use `promote` for production)."""
    with Warehouse.open(ws).write() as con:
        _set_alias(con, alias, model_id)


def resolve(ws: Workspace, ref: str) -> str:
    """A model id from an id or an alias ('candidate', 'production')."""
    wh = Warehouse.open(ws)
    rows = wh.query("SELECT model_id FROM model_aliases WHERE alias = ?", [ref])
    if rows:
        return rows[0][0]
    if wh.query("SELECT 1 FROM models WHERE model_id = ?", [ref]):
        return ref
    known = [r[0] for r in wh.query("SELECT alias FROM model_aliases ORDER BY alias")]
    raise RegistryError(f"no model or alias {ref!r} in the registry (aliases set: {known or 'none'})")


def get_model(ws: Workspace, ref: str) -> dict:
    """The warehouse record of a model (JSON columns decoded) plus its aliases and evaluations."""
    model_id = resolve(ws, ref)
    wh = Warehouse.open(ws)
    rec = wh.query_dicts("SELECT * FROM models WHERE model_id = ?", [model_id])[0]
    for k in ("train_config", "model_config", "metrics"):
        rec[k] = json.loads(rec[k]) if rec[k] else None
    rec["label_scale"] = label_scale_of(wh, rec["dataset_id"])   # older cards lack it: from the dataset
    rec["aliases"] = [r[0] for r in wh.query("SELECT alias FROM model_aliases WHERE model_id = ? ORDER BY alias", [model_id])]
    rec["evaluations"] = [dict(e, metrics=json.loads(e["metrics"])) for e in wh.query_dicts(
        "SELECT dataset_id, split, metrics, created_at FROM evaluations WHERE model_id = ? ORDER BY created_at", [model_id])]
    return rec


def list_models(ws: Workspace) -> list[dict]:
    wh = Warehouse.open(ws)
    rows = wh.query_dicts(
        "SELECT m.model_id, m.dataset_id, m.parent_model_id, m.code_version, m.n_params, m.created_at,"
        " string_agg(a.alias, ',' ORDER BY a.alias) AS aliases FROM models m LEFT JOIN model_aliases a"
        " USING (model_id) GROUP BY ALL ORDER BY m.created_at")
    return rows


def trained_on(ws: Workspace, dataset_id: str, code: str) -> list[tuple[str, dict]]:
    """(model_id, train_config) of the models trained on `dataset_id` by code version `code`,
    newest first."""
    rows = Warehouse.open(ws).query("SELECT model_id, train_config FROM models WHERE dataset_id = ? AND "
                                    "code_version = ? ORDER BY created_at DESC", [dataset_id, code])
    return [(model_id, json.loads(stored or "{}")) for model_id, stored in rows]


def newest_model(ws: Workspace | Warehouse) -> dict | None:
    """The most recently registered model: model_id, dataset_id, n_params and `test_metrics`
    (its test-split evaluation as a dict, {} when not evaluated); None when none is registered."""
    wh = ws if isinstance(ws, Warehouse) else Warehouse.open(ws)
    rows = wh.query_dicts("SELECT m.model_id, m.dataset_id, m.n_params, e.metrics FROM models m "
                          "LEFT JOIN evaluations e ON e.model_id = m.model_id AND e.split = 'test' "
                          "ORDER BY m.created_at DESC LIMIT 1")
    if not rows:
        return None
    rec = rows[0]
    rec["test_metrics"] = json.loads(rec.pop("metrics") or "{}")
    return rec


def verify(ws: Workspace, ref: str) -> Path:
    """Check a registered artifact's weights against the warehouse sha256; returns its dir."""
    rec = get_model(ws, ref)
    path = ws.absolute(rec["path"])
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"model {rec['model_id']}: {weights} is missing")
    actual = sha256_file(weights)
    if actual != rec["weights_sha256"]:
        raise ArtifactError(
            f"model {rec['model_id']}: weights sha256 {actual[:12]}... does not match the registry "
            f"({rec['weights_sha256'][:12]}...); the artifact at {path} is corrupt or was modified")
    return path


def load_model(ws: Workspace, ref: str, device: str = "cpu") -> SFRewardModel:
    """Load a registered model by id or alias, verifying its sha256 first."""
    return SFRewardModel.from_pretrained(verify(ws, ref), device=device)


def record_evaluation(ws: Workspace, model_id: str, dataset_id: str, split: str, metrics: dict) -> str:
    eid = f"{model_id}:{dataset_id}:{split}"
    wh = Warehouse.open(ws)
    with wh.write() as con:
        con.execute("DELETE FROM evaluations WHERE evaluation_id = ?", [eid])
        con.execute("INSERT INTO evaluations (evaluation_id, model_id, dataset_id, split, metrics, code_version)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [eid, model_id, dataset_id, split, json.dumps(_clean(metrics)), code_version()])
    return eid


def get_evaluation(ws: Workspace, model_id: str, dataset_id: str, split: str) -> dict | None:
    rows = Warehouse.open(ws).query(
        "SELECT metrics FROM evaluations WHERE model_id = ? AND dataset_id = ? AND split = ?",
        [model_id, dataset_id, split])
    return json.loads(rows[0][0]) if rows else None


@dataclass
class GateResult:
    passed: bool
    reason: str
    candidate: str
    production: str | None
    comparison: dict


def promotion_gate(ws: Workspace, candidate: str = "candidate", dataset_id: str | None = None,
                   split: str = "test", tolerance: float = 0.0) -> GateResult:
    """Is `candidate` not worse than production on the same evaluation? Each GATE_METRICS value
    present in both must satisfy cand >= prod - tolerance. Without a production model the
    gate passes. Without a shared evaluation it fails (nothing to compare)."""
    cand = resolve(ws, candidate)
    try:
        prod = resolve(ws, "production")
    except RegistryError:
        return GateResult(True, "no production model yet", cand, None, {})
    if prod == cand:
        return GateResult(True, "candidate is already production", cand, prod, {})
    wh = Warehouse.open(ws)
    q = ("SELECT a.dataset_id, a.split, a.metrics, b.metrics FROM evaluations a JOIN evaluations b"
         " ON a.dataset_id = b.dataset_id AND a.split = b.split WHERE a.model_id = ? AND b.model_id = ?")
    params = [cand, prod]
    if dataset_id:
        q += " AND a.dataset_id = ? AND a.split = ?"
        params += [dataset_id, split]
    rows = wh.query(q + " ORDER BY a.created_at DESC", params)
    if not rows:
        return GateResult(False, f"no evaluation shared by candidate {cand} and production {prod}"
                          f"{' on ' + dataset_id + '/' + split if dataset_id else ''}; evaluate both "
                          "on the same dataset split first", cand, prod, {})
    ds, sp, cm, pm = rows[0]
    cm, pm = json.loads(cm), json.loads(pm)
    comparison, worse = {}, []
    for k in GATE_METRICS:
        c, p = cm.get(k), pm.get(k)
        if c is None or p is None:
            continue
        comparison[k] = {"candidate": c, "production": p, "delta": c - p}
        if c < p - tolerance:
            worse.append(f"{k} {c:.4f} < {p:.4f}")
    if not comparison:
        return GateResult(False, f"evaluations on {ds}/{sp} share no gate metric", cand, prod, comparison)
    if worse:
        return GateResult(False, f"candidate is worse than production on {ds}/{sp}: " + "; ".join(worse),
                          cand, prod, comparison)
    return GateResult(True, f"candidate not worse than production on {ds}/{sp}", cand, prod, comparison)


def promote(ws: Workspace, ref: str = "candidate", alias: str = "production", force: bool = False,
            dataset_id: str | None = None, split: str = "test", tolerance: float = 0.0) -> GateResult:
    """Point `alias` at a model. For 'production' the promotion gate must pass unless force."""
    model_id = resolve(ws, ref)
    gate = GateResult(True, "not gated", model_id, None, {})
    if alias == "production" and not force:
        gate = promotion_gate(ws, model_id, dataset_id, split, tolerance)
        if not gate.passed:
            raise RegistryError(f"promotion of {model_id} to production refused: {gate.reason}")
    verify(ws, model_id)  # never promote a corrupt artifact
    with Warehouse.open(ws).write() as con:
        _set_alias(con, alias, model_id)
    return gate
