"""The demo's whole pipeline, end to end, on a handful of samples against a real Label Studio
(the session fixture's server), real DuckDB and real Dagster materializations."""
import json

import dagster as dg

from pipelines.demo import DemoConfig, run_demo
from warehouse.db import Warehouse


def test_demo_runs_end_to_end(labelstudio, monkeypatch, capfd):
    ws = labelstudio.workspace
    monkeypatch.setenv("DAGSTER_HOME", str(ws.dagster_home))
    cfg = DemoConfig(n_sources=6, groups_per_source=1, rollouts=3, image_size=64, annotators_per_task=2,
                     project_key="demo-test", split_fractions=(0.34, 0.33, 0.33),
                     curation_overrides={"dedupe_hamming": -1},
                     train_overrides=["max_steps=3", "batch_size=2", "warmup_steps=1", "ckpt_every=0"],
                     n_pictures=2)
    report = run_demo(ws.home, cfg)
    text = report.read_text()
    instance = dg.DagsterInstance.get()
    wh = Warehouse.open(ws)
    assert wh.query("SELECT count(*) FROM samples") == [(18,)]
    assert wh.query("SELECT count(*) FROM tasks WHERE project_key = 'demo-test'") == [(18,)]
    n_ann = wh.query("SELECT count(*) FROM annotations WHERE project_key = 'demo-test'")[0][0]
    assert 18 <= n_ann <= 36   # 2 simulated annotators per task, some may skip
    assert wh.query("SELECT count(*) FROM annotators WHERE is_simulated") >= [(2,)]
    (model_id, dataset_id), = wh.query("SELECT m.model_id, m.dataset_id FROM models m JOIN model_aliases a "
                                       "USING (model_id) WHERE a.alias = 'candidate'")
    assert model_id in text and dataset_id in text
    assert (ws.reports / "heldout" / "heldout_scores.png").stat().st_size > 10_000
    # The reward check: computed on the test split against the labels and the ground truth, with n.
    check = json.loads((ws.reports / "heldout" / "reward_check.json").read_text())
    n_test = wh.query("SELECT count(*) FROM dataset_rows WHERE dataset_id = ? AND split = 'test'", [dataset_id])[0][0]
    assert check["n_samples"] == n_test > 0
    n_regions = wh.query("SELECT count(*) FROM dataset_regions g JOIN dataset_rows r USING (dataset_id, sample_id) "
                         "WHERE dataset_id = ? AND r.split = 'test'", [dataset_id])[0][0]
    assert check["n_regions"] == n_regions
    for side in ("vs_labels", "vs_truth"):
        assert {"region_srcc_mean", "localization_auroc", "n_localization"} <= set(check[side])
    assert "Does the model work as a reward?" in text and "n_localization" in text
    # Test sources are never near-duplicates of training sources (the blocking check passed).
    assert instance.get_latest_materialization_event(dg.AssetKey("dataset_export_hf")) is not None
    assert "Krippendorff" in text and "Label Studio:" in text and "dagster dev" in text
    for key in ("editing_samples", "region_proposals", "annotation_tasks", "simulated_annotations",
                "synced_annotations", "dataset_version", "sfreward_model", "model_evaluation", "heldout_scores"):
        assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None, key
    # Secrets stay out of everything the run wrote or printed: the report, the Dagster event logs
    # and run metadata, the process output.
    secret = labelstudio.api_key
    assert secret not in text
    for run in instance.get_runs():
        for event in instance.all_logs(run.run_id):
            assert secret not in str(event), event
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err
    # A rerun reuses everything: same dataset id, no new samples or tasks.
    run_demo(ws.home, cfg)
    assert wh.query("SELECT count(*) FROM samples") == [(18,)]
    assert wh.query("SELECT count(*) FROM tasks WHERE project_key = 'demo-test'") == [(18,)]
    assert wh.query("SELECT dataset_id FROM dataset_versions ORDER BY created_at DESC LIMIT 1") == [(dataset_id,)]
    assert wh.query("SELECT count(*) FROM models") == [(1,)]  # the model is reused, not retrained
