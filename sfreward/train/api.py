"""Plain functions shared by the CLI and Dagster: train on a dataset version, register the
result as `candidate`, evaluate it (and production, for the gate) on the test split."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sfreward import registry
from sfreward.train.config import TrainConfig
from warehouse.datasets import open_version
from warehouse.workspace import Workspace

log = logging.getLogger(__name__)
# A runner trains per config and returns (model directory, metrics); the default runs the
# trainer in this process, the `sfreward_model` Dagster asset passes one that launches
# `python -m sfreward.train` through Dagster Pipes (pipelines.defs.training.PipesTrainer).
Runner = Callable[[TrainConfig], tuple[Path, dict]]


def in_process_runner(cfg: TrainConfig) -> tuple[Path, dict]:
    from sfreward.train.trainer import train
    result = train(cfg)
    if result.model_dir is None:
        raise RuntimeError(f"training stopped at step {result.step} before max_steps={cfg.max_steps}")
    return result.model_dir, result.metrics


def prepare_config(ws: Workspace, dataset_id: str, cfg: TrainConfig) -> tuple[TrainConfig, str | None]:
    """Point cfg at the dataset and a fresh run directory; resolve `init_from` when it names a
    registered model (id or alias). Returns (config, parent model id)."""
    parent = None
    init_from = cfg.init_from
    if init_from and not Path(init_from).is_dir():
        parent = registry.resolve(ws, init_from)
        init_from = str(registry.verify(ws, parent))
    out_dir = cfg.out_dir
    if out_dir == TrainConfig().out_dir:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
        out_dir = str(ws.models / "_runs" / f"{dataset_id}-{stamp}")
    return replace(cfg, data_dir=str(open_version(ws, dataset_id)), out_dir=out_dir, init_from=init_from), parent


def evaluate_and_record(ws: Workspace, ref: str, dataset_id: str, split: str = "test") -> dict:
    from sfreward.evaluate import evaluate
    model_id = registry.resolve(ws, ref)
    metrics = evaluate(registry.load_model(ws, model_id), open_version(ws, dataset_id), split)
    registry.record_evaluation(ws, model_id, dataset_id, split, metrics)
    return metrics


def ensure_production_evaluated(ws: Workspace, dataset_id: str, split: str = "test") -> dict | None:
    """Evaluate production on the same split if it has no such evaluation yet (for the gate)."""
    try:
        prod = registry.resolve(ws, "production")
    except registry.RegistryError:
        return None
    return registry.get_evaluation(ws, prod, dataset_id, split) or evaluate_and_record(ws, prod, dataset_id, split)


def train_and_register(ws: Workspace, dataset_id: str, cfg: TrainConfig,
                       runner: Runner | None = None, eval_split: str = "test", reuse: bool = False) -> str:
    """Train on `dataset_id`, register the model as `candidate`, evaluate it on `eval_split`
    (and production too, so the promotion gate can compare; '' skips evaluation). Returns the
    new model id. With `reuse`, a model already trained on this dataset with the same settings
    by the same code (find_trained) becomes `candidate` instead, without training."""
    cfg, parent = prepare_config(ws, dataset_id, cfg)
    if reuse and (existing := find_trained(ws, dataset_id, cfg)) is not None:
        registry.set_alias(ws, "candidate", existing)
        log.info("reusing %s: already trained on %s with this config", existing, dataset_id)
        return existing
    model_dir, metrics = (runner or in_process_runner)(cfg)
    model_id = registry.register_model(ws, model_dir, dataset_id, train_config=cfg.to_dict(),
                                       metrics=metrics, parent_model_id=parent)
    log.info("registered %s from %s", model_id, model_dir)
    if eval_split:
        evaluate_and_record(ws, model_id, dataset_id, eval_split)
        ensure_production_evaluated(ws, dataset_id, eval_split)
    return model_id


def write_config(cfg: TrainConfig) -> Path:
    """Write cfg as YAML into its run directory (the launched trainer reads it)."""
    import yaml
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train_config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=True))
    return path


def trainer_command(cfg: TrainConfig, nproc: int = 1) -> list[str]:
    """Command line that runs the trainer in a separate process (torchrun when nproc > 1)."""
    import sys
    cfg_path = write_config(cfg)
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                "-m", "sfreward.train", "--config", str(cfg_path)]
    return [sys.executable, "-m", "sfreward.train", "--config", str(cfg_path)]


def read_run(cfg: TrainConfig) -> tuple[Path, dict]:
    """(model directory, metrics) written by a finished trainer process."""
    out = Path(cfg.out_dir)
    model_dir = out / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise RuntimeError(f"the trainer finished without writing {model_dir}; see its log")
    metrics_path = out / "metrics.json"
    return model_dir, json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}


def subprocess_runner(nproc: int = 1) -> Runner:
    """A runner that launches `python -m sfreward.train` (or torchrun) and waits."""
    import subprocess

    def run(cfg: TrainConfig) -> tuple[Path, dict]:
        proc = subprocess.run(trainer_command(cfg, nproc), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"trainer exited with {proc.returncode}: {proc.stderr[-2000:]}")
        return read_run(cfg)
    return run


def find_trained(ws: Workspace, dataset_id: str, cfg: TrainConfig) -> str | None:
    """The newest registered model trained on `dataset_id` with the same settings (run folder
    aside) by the same code, so reruns of a pipeline reuse it instead of training again."""
    want = {k: v for k, v in cfg.to_dict().items() if k != "out_dir"}
    for model_id, stored in registry.trained_on(ws, dataset_id, registry.code_version()):
        if {k: v for k, v in stored.items() if k != "out_dir"} == want:
            return model_id
    return None
