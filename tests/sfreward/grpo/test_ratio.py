"""The first update of a GRPO step is on-policy: ratio exp(logp_new - logp_old) is 1, the
higher-reward rollout gets the positive advantage, and gradient clipping bounds the update."""
import torch

from sfreward.grpo.policy import EditPolicy, PolicyConfig
from sfreward.grpo.trainer import GRPOConfig, _rep, flow_sigmas, grpo_loss, grpo_step, make_credit, sample

P, G = 2, 3


def policy() -> EditPolicy:
    torch.manual_seed(0)
    return EditPolicy(PolicyConfig(image_size=16, patch=4, channels=(8, 16))).train()


def test_ratio_is_one_on_fresh_rollouts_with_the_editing_policy():
    pol = policy()
    src = torch.rand(P, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    cond = _rep(pol.condition(src, ["make the upper left red", "blur the sky"]), G)
    ro = sample(pol, cond, (P * G, 3, 16, 16), flow_sigmas(4), 0.7, torch.Generator().manual_seed(2))
    r = torch.tensor([[0.1, 0.5, 0.9], [0.8, 0.2, 0.4]])
    cr = make_credit(r[..., None], torch.ones(P, G, 1, dtype=torch.bool), r, torch.ones(P, 1, 4, 4),
                     GRPOConfig(group_size=G))
    # the best rollout of each group has the largest (positive) advantage, the worst a negative one
    assert cr.image_adv.view(P, G).argmax(1).tolist() == [2, 0]
    assert bool((cr.image_adv.view(P, G).min(1).values < 0).all())
    for mode in ("whole", "region"):
        cfg = GRPOConfig(mode=mode, group_size=G, num_steps=4, clip_eps=1e-4, beta=0.0)
        _, st = grpo_loss(pol, ro, cr, cfg)
        assert st["clip_frac"] == 0.0, mode      # |ratio - 1| <= 1e-4 for every rollout and step
    # a loss minimized along its gradient raises the log-prob of the positive-advantage rollouts
    cfg = GRPOConfig(mode="whole", group_size=G, num_steps=4, beta=0.0)
    loss, _ = grpo_loss(pol, ro, cr, cfg)
    assert float(loss.detach()) == float(loss.detach())   # finite
    torch.testing.assert_close(loss.detach(), -cr.image_adv.mean(), atol=1e-4, rtol=0)


def test_max_grad_norm_clips_the_update():
    def step(max_norm):
        pol = policy()
        before = [p.detach().clone() for p in pol.parameters()]
        opt = torch.optim.SGD(pol.parameters(), lr=1.0)
        src = torch.rand(P, 3, 16, 16, generator=torch.Generator().manual_seed(1))

        def reward(source, edits, instruction):
            from sfreward.grpo.trainer import GroupReward
            img = edits.mean((1, 2, 3))                     # brighter = better
            return GroupReward(img[:, None], torch.ones(1, 16, 16, dtype=torch.bool), img, {})

        cfg = GRPOConfig(group_size=G, num_steps=2, beta=0.0, max_grad_norm=max_norm)
        st = grpo_step(pol, opt, src, ["a", "b"], reward, cfg, torch.Generator().manual_seed(3))
        moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(pol.parameters(), before)]).norm()
        return float(moved), st

    free, st_free = step(None)
    clipped, st = step(1e-3)
    assert "grad_norm" not in st_free
    assert st["grad_norm"] > 1e-3                  # the raw gradient was larger than the bound
    assert abs(clipped - 1e-3) < 1e-5              # SGD lr 1: the step is the clipped gradient
    assert free > clipped
