"""Region proposals: which parts of an edited image a reward should score separately.

Online (reward server, no warehouse): `propose_group(source, edits, config) -> list[Region]`.
Warehouse (Dagster, CLI): `propose_for_batch(ws, batch_id, config)`,
`propose_for_groups(ws, group_ids, config)`; read back with `load_regions(ws, sample_id)`.
`ProposerConfig()` without a SAM checkpoint selects the classical (weight-free) proposer.
"""
from sfreward.regions.base import ProposalError, ProposerConfig, Region, stack_masks
from sfreward.regions.group import propose_for_batch, propose_for_groups
from sfreward.regions.proposer import Proposer, propose_group, propose_sample
from sfreward.regions.sam import CheckpointError, load_sam, save_tiny_sam
from sfreward.regions.store import RegionsNotFound, load_regions

__all__ = [
    "CheckpointError", "ProposalError", "Proposer", "ProposerConfig", "Region", "RegionsNotFound",
    "load_regions", "load_sam", "propose_for_batch", "propose_for_groups", "propose_group",
    "propose_sample", "save_tiny_sam", "stack_masks",
]
