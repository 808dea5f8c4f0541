"""Synthetic editing samples with known per-region quality (see generator.py)."""
from sfreward.synthetic.generator import SynthConfig, build_scenes, generate, read_ground_truth

__all__ = ["SynthConfig", "build_scenes", "generate", "read_ground_truth"]
