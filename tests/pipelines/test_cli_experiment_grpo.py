"""`sfr experiment grpo`'s flags map onto GRPOExperimentConfig fields, and bad values are refused
before anything is pretrained or served."""
import pytest

from pipelines.cli import CLIError, build_parser
from pipelines.cli.experiment import grpo_config_from_args
from sfreward.experiments.grpo import GRPOExperimentConfig


def _cfg(*flags):
    return grpo_config_from_args(build_parser().parse_args(["experiment", "grpo", *flags]))


def test_defaults_are_the_config_defaults():
    assert _cfg() == GRPOExperimentConfig()
    assert _cfg("--quick") == GRPOExperimentConfig.quick()


def test_sweep_flags_set_their_fields():
    cfg = _cfg("--group-size", "10", "--sampler-steps", "6", "--prompts", "5", "--inner-steps", "3",
               "--noise-level", "0.4", "--lr", "2e-4", "--threads", "1", "--steps", "7", "--pretrain-steps", "50", "--seeds", "3,4")
    assert (cfg.group_size, cfg.num_steps, cfg.n_train, cfg.inner_steps) == (10, 6, 5, 3)
    assert (cfg.noise_level, cfg.lr, cfg.rl_steps, cfg.pretrain_steps, cfg.seeds) == (0.4, 2e-4, 7, 50, [3, 4])
    assert cfg.threads == 1
    assert cfg.grpo("region").group_size == 10 and cfg.grpo("region").num_steps == 6


@pytest.mark.parametrize("flags, word", [(("--group-size", "1"), "group_size"), (("--sampler-steps", "0"), "num_steps"),
                                         (("--prompts", "0"), "n_train"), (("--noise-level", "0"), "noise_level"),
                                         (("--threads", "0"), "threads"),
                                         (("--seeds", "a,b"), "--seeds")])
def test_bad_values_are_refused_with_the_field_named(flags, word):
    with pytest.raises(CLIError, match=word):
        _cfg(*flags)
