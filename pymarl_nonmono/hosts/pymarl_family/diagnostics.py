"""IGM diagnostics the learner logs with its other statistics.

Every run gets ``igm_violation_rate_lower_bound`` on its training batch, and
``igm_violation_rate`` where it is exact (A^N <= 4096; see
:mod:`pymarl_nonmono.numerics.igm`). Single-state games whose
payoff is known get the full picture at their one state: the recovered Q_tot table,
its largest error against the payoff, the agents' greedy joint action, and whether it
is IGM-consistent and optimal. Which environments have a known payoff is this module's
registry, so the learner holds no environment-specific code.

Stock learners (qmix, vdn, qplex, ...) get the known-payoff statistics too, computed from
outside after their own ``train``: :func:`attach_to_stock_learner` reads their agents'
Q-values and evaluates their mixer on every joint action, through :data:`STOCK_Q_TOT`,
which says how each stock mixer class computes Q_tot. Mixers it does not list (QTRAN's
joint network, which takes the whole batch) get none, and the run logs that once.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Mapping, Optional

import torch
import torch.nn.functional as F

from ...envs.matrix import payoff_of_env_args, resolve_payoff
from ...errors import check_shape
from ...numerics.igm import igm_summary, igm_violation_rates, joint_actions, joint_q_table
from ...registry import Registry
from .batch import transition_mask

log = logging.getLogger(__name__)

MAX_TABLE_ENTRIES = 64  # log the Q_tot table entry by entry up to this size
MAX_UTILITY_ENTRIES = 64  # log the agents' utilities (N x A values) entry by entry up to this size

PayoffSource = Callable[[Mapping], torch.Tensor]
KNOWN_PAYOFFS: Registry[PayoffSource] = Registry("env with a known payoff")
KNOWN_PAYOFFS.register("matrix_game", lambda env_args: torch.as_tensor(payoff_of_env_args(env_args)))
# PyMARL2's own one_step_matrix_game hard-codes this payoff.
KNOWN_PAYOFFS.register("one_step_matrix_game", lambda env_args: torch.as_tensor(resolve_payoff("pymarl2")))


def payoff_of(env: str, env_args: Optional[Mapping]) -> Optional[torch.Tensor]:
    return KNOWN_PAYOFFS.get(env)(env_args or {}) if env in KNOWN_PAYOFFS else None


def payoff_stats(mixer, agent_q: torch.Tensor, state: torch.Tensor, avail: torch.Tensor,
                 payoff: torch.Tensor) -> dict:
    """The known-payoff statistics at one state; ``mixer(qs [1, K, N], states [1, K, S])``.

    ``agent_q`` ``[N, A]``: the agents' utilities at that state, logged as ``q_agent_<i>_<a>``
    (agent ``i``'s Q-value of its action ``a``, for the actions the payoff gives it) beside the
    ``q_tot_<a_1>_..._<a_N>`` table: the layout of the paper's Table 1 (utilities on the margins).
    Both only while they stay small (:data:`MAX_TABLE_ENTRIES`, :data:`MAX_UTILITY_ENTRIES`).
    """
    check_shape("agent_q", agent_q, (payoff.dim(), None))
    table = joint_q_table(mixer, agent_q, state)
    summary = igm_summary(table, agent_q, avail, payoff.to(device=table.device, dtype=table.dtype))
    stats = dict(
        igm_consistent=float(summary["igm_consistent"]),
        greedy_optimal=float(summary["greedy_optimal"]),
        payoff_max_abs_error=summary["payoff_max_abs_error"],
        greedy_joint_index=float(summary["greedy_joint_index"]),
    )
    if table.numel() <= MAX_TABLE_ENTRIES:
        sub = table[tuple(slice(0, s) for s in payoff.shape)]
        for idx in torch.cartesian_prod(*[torch.arange(s) for s in sub.shape]).view(-1, sub.dim()).tolist():
            stats["q_tot_" + "_".join(map(str, idx))] = float(sub[tuple(idx)])
    if sum(payoff.shape) <= MAX_UTILITY_ENTRIES:
        for i, n_actions in enumerate(payoff.shape):
            for a in range(n_actions):
                stats[f"q_agent_{i}_{a}"] = float(agent_q[i, a])
    return stats


class IGMDiagnostics:
    def __init__(self, env: str, env_args: Optional[Mapping], seed: int = 0) -> None:
        self.payoff = payoff_of(env, env_args)
        # A private generator: sampling states for the diagnostic must not shift the
        # training run's random stream.
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, mixer, q: torch.Tensor, ep) -> dict:
        """``q``: agent Q-values ``[B, T+1, N, A]`` of the batch ``ep`` (detached).

        ``igm_violation_rate`` only where it is exact (every joint action checked);
        ``igm_violation_rate_lower_bound`` (single-agent deviations) always, on the same
        sampled states, so the two are comparable where both exist and large games still
        get a number whose name says what it is; ``negative_mixing_gradient_rate`` and
        ``worst_greedy_action_rate`` on the same states, over the agents that have a choice.
        """
        stats = self.rates(mixer, q, ep.state, ep.avail_actions, ep.mask)
        if self.payoff is not None:
            stats.update(payoff_stats(mixer, q[0, 0], ep.state[0, 0], ep.avail_actions[0, 0], self.payoff))
        return stats

    def rates(self, mixer, q: torch.Tensor, state: torch.Tensor, avail: torch.Tensor, mask: torch.Tensor) -> dict:
        """The batch-level statistics of :meth:`__call__`: ``q``, ``avail`` ``[B, T+1, N, A]``,
        ``state`` ``[B, T+1, ...]``, ``mask`` ``[B, T]``; ``mixer`` needs ``q_tot_of_candidates``."""
        state = state.reshape(state.shape[0], state.shape[1], -1)
        rates = igm_violation_rates(mixer, q[:, :-1], state[:, :-1], avail[:, :-1], mask, generator=self.generator)
        stats = {
            "igm_violation_rate_lower_bound": rates.unilateral,
            "negative_mixing_gradient_rate": rates.negative_gradient,
            "worst_greedy_action_rate": rates.worst_greedy,
        }
        if rates.exact is not None:
            stats["igm_violation_rate"] = rates.exact
        return stats


# ----------------------------------------------------------------- stock learners, from outside

# How a stock mixer computes Q_tot of given agent values: (mixer, qs [1, K, N], states [1, K, S],
# joint actions [K, N], agent Q-values [N, A], available actions [N, A]) -> [1, K, 1]. Keyed by
# the mixer's class name.
QTotFn = Callable[..., torch.Tensor]
STOCK_Q_TOT: Registry[QTotFn] = Registry("stock mixer with a computable Q_tot")


def _plain(mixer, qs, states, joint, agent_q, avail):
    return mixer(qs, states)


def _dueling(mixer, qs, states, joint, agent_q, avail):
    # QPLEX: Q_tot = V + A, as dmaq_qatten_learner combines its two mixer calls. Its advantage
    # is each agent's gap to its best *available* action (the learner masks unavailable actions
    # before taking max_q_i); an unmasked max would measure it from an action the agent cannot take.
    check_shape("avail_actions", avail, tuple(agent_q.shape))
    onehot = F.one_hot(joint, agent_q.shape[-1]).to(qs.dtype).unsqueeze(0)
    max_q = agent_q.masked_fill(avail == 0, float("-inf")).max(-1).values.expand_as(qs)
    return mixer(qs, states, is_v=True).view(1, -1, 1) + mixer(
        qs, states, actions=onehot, max_q_i=max_q, is_v=False).view(1, -1, 1)


for _name in ("Mixer", "QMixer", "VDNMixer", "QattenMixer"):  # nmix, qmix, vdn, qatten
    STOCK_Q_TOT.register(_name, _plain)
STOCK_Q_TOT.register("DMAQer", _dueling)


class StockCandidates:
    """A stock mixer called as ``mixer(utilities [B, T, N], states [B, T, S])`` (nmix, QMIX, VDN,
    Qatten), seen through our mixers' ``q_tot_of_candidates`` so the batch diagnostics apply."""

    def __init__(self, mixer) -> None:
        self.mixer = mixer

    def q_tot_of_candidates(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        m, k, _ = agent_qs.shape
        # Stock mixers reshape with .view: hand them contiguous tensors.
        states = states.reshape(m, 1, -1).expand(m, k, -1).contiguous()
        return self.mixer(agent_qs.contiguous(), states).reshape(m, k)


# Stock mixer classes (by name) that StockCandidates can call; QPLEX's DMAQer needs the agents'
# maxima and actions as well, QTRAN's joint network the whole batch.
BATCH_DIAGNOSABLE = ("Mixer", "QMixer", "VDNMixer", "QattenMixer")


def stock_agent_q(mac, batch) -> torch.Tensor:
    """A stock controller's Q-values over a whole batch: ``[B, T+1, N, A]``, step by step as
    its own learner computes them."""
    # The runner re-initialises the shared controller's hidden state before its next episode.
    mac.init_hidden(batch.batch_size)
    return torch.stack([mac.forward(batch, t=t) for t in range(batch.max_seq_length)], dim=1)


def stock_batch_stats(learner, batch, diagnostics: IGMDiagnostics) -> dict:
    """The batch-level IGM statistics of a stock learner with a plain mixer, after its update."""
    with torch.no_grad():
        q = stock_agent_q(learner.mac, batch).detach().float()
    return diagnostics.rates(StockCandidates(learner.mixer), q, batch["state"], batch["avail_actions"],
                             transition_mask(batch))


def stock_payoff_stats(learner, batch, payoff: torch.Tensor) -> dict:
    """Known-payoff statistics of a stock learner at the first state of ``batch``."""
    fn = STOCK_Q_TOT.get(type(learner.mixer).__name__)
    mac = learner.mac
    with torch.no_grad():
        # The runner re-initialises the shared controller's hidden state before its next episode.
        mac.init_hidden(batch.batch_size)
        agent_q = mac.forward(batch, t=0)[0].detach().float()  # [N, A]
    joint = joint_actions(*agent_q.shape, device=agent_q.device)
    state, avail = batch["state"][0, 0], batch["avail_actions"][0, 0]
    mixer = functools.partial(fn, learner.mixer, joint=joint, agent_q=agent_q, avail=avail)
    return payoff_stats(mixer, agent_q, state, avail, payoff)


def attach_to_stock_learner(learner, args):
    """Log our IGM statistics after ``learner.train`` every ``learner_log_interval`` env steps:
    the batch-level rates where the stock mixer can score candidate joint actions
    (:data:`BATCH_DIAGNOSABLE`), the known-payoff statistics on games with a known payoff
    (:data:`STOCK_Q_TOT`). Both after the learner's step: one parameter version. Only for learners
    whose agents output Q-values (the hosts' ``agent_output_type: q``): a policy-gradient learner's
    mixer (VMIX, DOP) mixes critic values, and its agents' outputs are policies. Returns the learner."""
    output = vars(args).get("agent_output_type")
    if output != "q":
        log.info("IGM diagnostics: not for learner %s, whose agents output %s, not Q-values",
                 type(learner).__name__, output or "what agent_output_type would say (it is not set)")
        return learner
    payoff = payoff_of(args.env, args.env_args)
    mixer = getattr(learner, "mixer", None)
    name = type(mixer).__name__
    on_batch = mixer is not None and name in BATCH_DIAGNOSABLE
    on_payoff = payoff is not None and mixer is not None and name in STOCK_Q_TOT
    if not (on_batch or on_payoff):
        # A warning where the payoff tables were expected, a note elsewhere (policy-gradient learners).
        log.log(logging.WARNING if payoff is not None else logging.INFO,
                "IGM diagnostics: not available for learner %s (mixer %s cannot score joint actions)",
                type(learner).__name__, name if mixer is not None else "none")
        return learner
    diagnostics = IGMDiagnostics(args.env, args.env_args, seed=int(args.seed))
    interval = args.learner_log_interval
    train = learner.train
    last = [-interval - 1]

    @functools.wraps(train)
    def train_and_diagnose(batch, t_env, episode_num, *rest, **kwargs):
        out = train(batch, t_env, episode_num, *rest, **kwargs)
        if t_env - last[0] >= interval:
            stats = stock_batch_stats(learner, batch, diagnostics) if on_batch else {}
            if on_payoff:
                stats.update(stock_payoff_stats(learner, batch, payoff))
            for key, value in stats.items():
                learner.logger.log_stat(key, value, t_env)
            last[0] = t_env
        return out

    learner.train = train_and_diagnose
    return learner
