"""The GPU path on a CPU-only machine: a learner update with every statistic logged, the IGM
diagnostics, RND and joint-greedy acting on a fake CUDA device (fake_cuda.py). Each fails
where a tensor we create stays on the CPU while the data is on the GPU."""

import pytest
import torch

from fake_cuda import FakeCuda, fake_cuda, to_fake_cuda
from fake_host import RecordingLogger, TinyAgent, make_args, random_batch, scheme
from pymarl_nonmono.hosts.pymarl_family import diagnostics as diag
from pymarl_nonmono.hosts.pymarl_family.registration import with_stock_additions
from pymarl_nonmono.hosts.pymarl2.controller import NonMonoMAC
from pymarl_nonmono.hosts.pymarl2.learner import NonMonoLearner


def test_the_fake_device_catches_a_cpu_tensor_meeting_a_cuda_one(monkeypatch):
    with fake_cuda(monkeypatch):
        x = torch.randn(3).cuda()
        assert isinstance(x, FakeCuda) and x.device.type == "cuda"
        assert (x + torch.tensor(1.0)).device.type == "cuda"  # a CPU scalar is allowed, as on a GPU
        assert torch.zeros(2, device=x.device).device.type == "cuda"
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            x + torch.ones(3)
        module = torch.nn.Linear(3, 2)
        weight = module.weight
        module.cuda()
        assert module.weight is weight and weight.device.type == "cuda"
        assert module(x.view(1, 3)).device.type == "cuda"


def cuda_batch(**kwargs):
    batch = random_batch(**kwargs)
    batch.data = {k: to_fake_cuda(v) for k, v in batch.data.items()}
    return batch


def matrix_args(alg, **overrides):
    return make_args(alg, n_agents=2, n_actions=3, env="matrix_game", use_cuda=True, device="cuda",
                     env_args={"preset": "qtran", "map_name": "m", "seed": 0}, **overrides)


@pytest.mark.parametrize("alg,overrides", [
    ("nonmono_qmix_rnd", {}),
    ("nonmono_qmix_sarsa", dict(igm_penalty=1.0, monotonicity_penalty=1.0, mixer_init="positive_bias")),
    ("nonmono_qmix", dict(td_bootstrap="expected_sarsa", action_selector="softmax")),
])
def test_a_logged_update_on_a_gpu_with_a_known_payoff(monkeypatch, alg, overrides):
    with fake_cuda(monkeypatch):
        torch.manual_seed(0)
        args = matrix_args(alg, **overrides)
        sch = scheme(n_actions=3)
        mac = NonMonoMAC(sch, {"agents": 2}, args, agent_builder=TinyAgent)
        logger = RecordingLogger()
        learner = NonMonoLearner(mac, sch, logger, args)
        learner.cuda()
        batch = cuda_batch(N=2, A=3)
        batch.data["avail_actions"][:] = 1
        for t in range(2):
            learner.train(batch, t_env=t, episode_num=t)
        assert {"payoff_max_abs_error", "q_tot_0_0", "igm_violation_rate", "worst_greedy_action_rate"} <= set(logger.stats)
        if alg.endswith("rnd"):
            assert "rnd_reward_mean" in logger.stats
        mac.joint_greedy = True
        mac.init_hidden(batch.batch_size)
        actions = mac.select_actions(batch, t_ep=0, t_env=0, test_mode=True)
        assert actions.device.type == "cuda"


def test_stock_learner_diagnostics_on_a_gpu(monkeypatch):
    from test_stock_diagnostics import FixedMAC, StockLearner, args, one_step_batch

    with fake_cuda(monkeypatch):
        logger = RecordingLogger()

        class CudaMAC(FixedMAC):
            def forward(self, batch, t):
                return super().forward(batch, t).cuda()

        learner = with_stock_additions(StockLearner)(CudaMAC(), {}, logger, args())
        batch = one_step_batch()
        batch.data = {k: to_fake_cuda(v) for k, v in batch.data.items()}
        learner.train(batch, 0, 0)
        assert {"payoff_max_abs_error", "igm_violation_rate"} <= set(logger.stats)


def test_the_sign_gauge_on_a_gpu(monkeypatch):
    """Signs, checks and flips (mixer rows, Adam's moments) with every parameter on the GPU."""
    with fake_cuda(monkeypatch):
        torch.manual_seed(0)
        args = matrix_args("nonmono_qmix_sarsa", sign_gauge="greedy_flip", sign_gauge_interval=1,
                           sign_gauge_margin=0.0, sign_gauge_patience=1)
        sch = scheme(n_actions=3)
        mac = NonMonoMAC(sch, {"agents": 2}, args, agent_builder=TinyAgent)
        logger = RecordingLogger()
        learner = NonMonoLearner(mac, sch, logger, args)
        learner.cuda()
        assert mac.agent_sign.device.type == "cuda" and learner.target_mac.agent_sign.device.type == "cuda"
        batch = cuda_batch(N=2, A=3)
        for t in range(3):
            learner.train(batch, t_env=t, episode_num=t)
        learner.flip_agent(1)
        learner.train(batch, t_env=3, episode_num=3)
        assert {"sign_flips", "negative_sign_share"} <= set(logger.stats)
        mac.init_hidden(batch.batch_size)
        assert mac.select_actions(batch, t_ep=0, t_env=0, test_mode=True).device.type == "cuda"
        assert mac.agent_sign.device.type == "cuda" and mac.agent_sign.tolist()[1] in (-1.0, 1.0)
