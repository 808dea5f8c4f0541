"""Reward functions over a real reward server on 127.0.0.1 (tiny SFReward, real HTTP): the GRPO
group reward and the Flow-GRPO `multi_score` drop-in, checked against in-process scoring."""
import numpy as np
import pytest
import torch
from PIL import Image

from sfreward.client import RewardClient, RewardServerError, make_multi_score_fn
from sfreward.grpo.rewards import inprocess_reward, server_reward
from tests.fixtures.serving import edits_of, photo


@pytest.fixture(scope="module")
def group():
    src = photo("astronaut", 64)
    eds = edits_of(src, 4, seed=1)
    return src, eds


def test_server_reward_matches_in_process(shared_server, server_token, tiny_scorer, group):
    src, eds = group
    t = torch.tensor(np.stack(eds), dtype=torch.float32).permute(0, 3, 1, 2) / 255
    with RewardClient(shared_server.url, token=server_token) as c:
        a = server_reward(c)(src, t, "make the helmet red")
    b = inprocess_reward(tiny_scorer)(src, t, "make the helmet red")
    assert a.region_rewards.shape == b.region_rewards.shape and a.region_rewards.shape[1] >= 2
    assert torch.equal(a.masks, b.masks)
    torch.testing.assert_close(a.region_rewards, b.region_rewards, rtol=1e-5, atol=1e-6)
    area = a.masks.flatten(1).sum(-1).float()
    torch.testing.assert_close(a.image_reward, (a.region_rewards * area).sum(-1) / area.sum())
    assert a.info["model_version"] == tiny_scorer.version


def test_multi_score_dropin_signature_and_values(shared_server, server_token, tiny_scorer, group):
    src, eds = group
    images = torch.tensor(np.stack(eds), dtype=torch.float32).permute(0, 3, 1, 2) / 255   # NCHW [0, 1]
    prompts = ["make the helmet red"] * 4
    with RewardClient(shared_server.url, token=server_token) as c:
        fn = make_multi_score_fn(c, weight=2.0)
        details, info = fn(images, prompts, [{} for _ in prompts], ref_images=[Image.fromarray(src)] * 4,
                           only_strict=True)
    assert set(details) == {"sfreward", "avg"} and len(details["sfreward"]) == 4
    assert details["avg"] == [2.0 * s for s in details["sfreward"]]
    ours = inprocess_reward(tiny_scorer)(src, images, prompts[0])
    np.testing.assert_allclose(details["sfreward"], ours.image_reward.numpy(), rtol=1e-5)
    assert len(info["region_rewards"][0]) == ours.region_rewards.shape[1] and all(info["valid"])
    np.testing.assert_allclose(info["region_rewards"], ours.region_rewards.numpy(), rtol=1e-5)


def test_multi_score_raises_instead_of_zeros(server_token, group):
    src, eds = group
    from sfreward.client import ClientConfig
    c = RewardClient("http://127.0.0.1:9", token=server_token, config=ClientConfig(retries=0, connect_timeout_s=1))
    fn = make_multi_score_fn(c)
    with pytest.raises(RewardServerError, match="failed after 1 tries"):
        fn([eds[0]], ["x"], [{}], ref_images=[src])
    with pytest.raises(ValueError, match="ref_images has 2 images for 1 prompts"):
        fn([eds[0]], ["x"], [{}], ref_images=[src, src])
    with pytest.raises(ValueError, match="no 'source' image"):
        fn([eds[0]], ["x"], [{}])
