"""The GRPO side that consumes SFReward: Flow-GRPO's SDE step with per-token log-probs,
denoiser adapters for diffusers flow models, a trainer step with whole-image or region credit,
a small CPU image-editing policy, and a Flow-GRPO drop-in reward function (docs/grpo.md)."""
from sfreward.grpo.sde import flow_grpo_kl, sde_step_with_logprob, token_mean

__all__ = ["sde_step_with_logprob", "token_mean", "flow_grpo_kl"]
