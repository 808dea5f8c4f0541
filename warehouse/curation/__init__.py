"""Curation: aggregated labels, agreement, filters, leakage-free splits, versioned datasets and
their exports. Plain functions over the warehouse; Dagster (`pipelines.defs.curation`) and the
CLI (`sfr dataset`) are thin layers over them.

    from warehouse.curation import CurationConfig, build_dataset, export_hf
    version = build_dataset(ws, CurationConfig(seed=0))
    path = export_hf(ws, version.dataset_id)
"""
from warehouse.curation.config import CurationConfig
from warehouse.curation.dataset import DatasetVersion, build_dataset, get_version, list_versions
from warehouse.curation.exports import export_all, export_hf, export_reward_json, export_sft

__all__ = [
    "CurationConfig", "DatasetVersion", "build_dataset", "get_version", "list_versions",
    "export_hf", "export_reward_json", "export_sft", "export_all",
]
