"""A small hypernetwork mixer for the numerics tests (sizes that keep loop references fast)."""

import torch

from pymarl_nonmono.numerics.mixers import make_mixer


def hyper(name="nonmono_qmix", n=3, s=5, seed=0):
    torch.manual_seed(seed)
    return make_mixer(name, n_agents=n, state_dim=s, embed_dim=8, hypernet_embed=16, hypernet_layers=2,
                      qmix_pos_func="abs", qmix_pos_func_beta=1.0, use_orthogonal=False)
