"""SFReward: region proposals, the region-aware reward model (training, evaluation, registry,
inference), spatial credit assignment for GRPO trainers, the reward server, synthetic data."""


def __getattr__(name: str):
    # Lazy: `import sfreward` stays light (no torch import) until the scorer is asked for.
    if name == "load":
        from sfreward.inference import load

        return load
    raise AttributeError(f"module 'sfreward' has no attribute {name!r}")
