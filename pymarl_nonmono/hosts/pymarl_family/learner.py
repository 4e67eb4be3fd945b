"""TD(λ) value-factorisation learner on the learner protocol of PyMARL2 and EPyMARL.

One update: per-agent Q-values from the controller, mixed into Q_tot by the mixer named
in ``mixer`` (from :data:`~pymarl_nonmono.numerics.mixers.MIXERS`), regressed on λ-returns
whose bootstrap is named in ``td_bootstrap`` (``q``, ``sarsa``, ``expected_sarsa``,
``q_lambda``). With ``use_rnd`` the extrinsic reward gets β·(normalised RND novelty of
the next state). Target networks are hard-copied every ``target_update_interval``
episodes, as in PyMARL2. Prioritised replay (PyMARL2 only) is added by
:class:`pymarl_nonmono.hosts.pymarl2.learner.NonMonoLearner`.
"""

from __future__ import annotations

import copy
import logging
import os

import torch

from ...numerics.gauge import make_sign_gauge, mirror_agent_
from ...numerics.igm import sample_states
from ...numerics.mixers import init_mixer_, make_mixer
from ...numerics.penalties import igm_hinge, monotonicity_hinge
from ...numerics.rnd import RND, combine_rewards
from ...numerics.schedules import make_schedule
from ...numerics.targets import (
    agent_bootstrap_utilities,
    lambda_returns,
    needs_behaviour_probs,
    q_lambda_returns,
    uses_q_lambda_correction,
)
from .batch import episodes_from_batch
from .checkpoint import global_rng_state, restore_global_rng_state, save_atomically
from .diagnostics import IGMDiagnostics
from .settings import LearnerSettings, RNDSettings, read_settings

log = logging.getLogger(__name__)


#: States of an update the sign gauge judges on (a uniform sample), as the IGM diagnostics.
GAUGE_STATES = 256
#: worst_greedy_action_rate above this at two consecutive logs is worth a warning (_watch_mirror).
MIRROR_WARNING_RATE = 0.5


def _gather(q: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return torch.gather(q, dim=-1, index=actions.unsqueeze(-1)).squeeze(-1)


class PymarlFamilyLearner:
    def __init__(self, mac, scheme, logger, args) -> None:
        self.args = args
        self.cfg: LearnerSettings = read_settings(LearnerSettings, args, "nonmono_learner")
        self.rnd_cfg: RNDSettings = read_settings(RNDSettings, args, "nonmono_learner")
        self.mac = mac
        self.logger = logger
        state_dim = int(torch.tensor(scheme["state"]["vshape"]).prod().item())
        self.mixer = make_mixer(
            self.cfg.mixer,
            n_agents=int(args.n_agents),
            state_dim=state_dim,
            embed_dim=self.cfg.mixing_embed_dim,
            hypernet_embed=self.cfg.hypernet_embed,
            hypernet_layers=int(self.cfg.hypernet_layers),
            qmix_pos_func=self.cfg.qmix_pos_func,
            qmix_pos_func_beta=self.cfg.qmix_pos_func_beta,
            use_orthogonal=self.cfg.use_orthogonal,
        )
        init_mixer_(self.mixer, self.cfg.mixer_init, self.cfg.mixer_init_bias)
        self.target_mixer = copy.deepcopy(self.mixer)
        self.gauge = make_sign_gauge(
            self.cfg.sign_gauge, n_agents=int(args.n_agents), interval=self.cfg.sign_gauge_interval,
            margin=self.cfg.sign_gauge_margin, patience=self.cfg.sign_gauge_patience,
            start=self.cfg.gauge_start,
        )
        if self.gauge is not None:
            mac.keep_agent_signs()  # before the target controller is copied from it
            # Its own stream, as the diagnostics': switching the gauge on does not shift the run's.
            self.gauge_generator = torch.Generator().manual_seed(int(args.seed) + 2)
        self.target_mac = copy.deepcopy(mac)
        # Joint-greedy tests (test_joint_greedy) act on the joint argmax of this mixer. Attached
        # after the copy: the target controller never acts, and a mixer of its own would be a
        # third one that nothing updates, saves or moves to the GPU.
        mac.attach_mixer(self.mixer)
        self.params = list(mac.parameters()) + list(self.mixer.parameters())
        if self.cfg.optimizer == "adam":
            self.optimiser = torch.optim.Adam(self.params, lr=self.cfg.lr)
        else:
            self.optimiser = torch.optim.RMSprop(
                self.params, lr=self.cfg.lr, alpha=self.cfg.optim_alpha, eps=self.cfg.optim_eps
            )
        self.rnd = None
        if self.rnd_cfg.use_rnd:
            rnd_dim = state_dim if self.rnd_cfg.rnd_input == "state" else int(scheme["obs"]["vshape"])
            self.rnd = RND(
                rnd_dim,
                self.rnd_cfg.rnd_hidden_dim,
                self.rnd_cfg.rnd_output_dim,
                self.rnd_cfg.rnd_layers,
                self.rnd_cfg.rnd_lr,
                # The bonus is scaled by the RMS of the discounted intrinsic return; with
                # the learner's discount that is the return its value function sees.
                gamma=self.cfg.gamma,
            )
            self.rnd_beta = make_schedule(
                "linear", self.rnd_cfg.rnd_beta_start, self.rnd_cfg.rnd_beta_finish,
                self.rnd_cfg.rnd_beta_anneal_time,
            )
        self.with_probs = needs_behaviour_probs(self.cfg.td_bootstrap)
        self.diagnostics = IGMDiagnostics(args.env, args.env_args, seed=int(args.seed))
        # Its own stream, as the diagnostics': switching a penalty on does not shift the run's.
        self.penalty_generator = torch.Generator().manual_seed(int(args.seed) + 1)
        self.episodes_since_target_update = self.last_episode_num = self.target_update_count = 0  # see _episodes_elapsed
        self.resumed = False
        self._mirror_logs, self._mirror_warned = 0, False  # see _watch_mirror
        self.log_stats_t = -self.cfg.learner_log_interval - 1
        log.info(
            "nonmono_learner: mixer=%s (%d parameters), td_bootstrap=%s, td_lambda=%s, rnd=%s",
            self.cfg.mixer, sum(p.numel() for p in self.mixer.parameters()),
            self.cfg.td_bootstrap, self.cfg.td_lambda, self.rnd_cfg.use_rnd,
        )

    # -- one update ---------------------------------------------------------------
    def train(self, batch, t_env: int, episode_num: int):
        self._update(batch, t_env, episode_num)

    def _update(self, batch, t_env: int, episode_num: int, episode_weights=None):
        """One gradient step; ``episode_weights`` ``[B]`` scale each episode's squared TD
        errors (importance weights of prioritised replay). Returns the masked TD errors
        ``[B, T]``, the mask and the episodes."""
        ep = episodes_from_batch(batch, with_probs=self.with_probs)
        mask = ep.mask
        self.mac.agent.train()
        q = self.mac.unroll(batch)  # [B, T+1, N, A]
        # RND's predictor takes its step here, on this batch's next states, before the targets use
        # the bonus of the states as it was before that step (docs/rnd.md).
        rewards, rnd_stats = self._rewards_and_rnd_step(ep, t_env)
        with torch.no_grad():
            self.target_mac.agent.train()
            targets = self.targets(ep, q.detach(), self.target_mac.unroll(batch), rewards)

        chosen = _gather(q[:, :-1], ep.actions[:, :-1])
        # Only real transitions are mixed: the rest is padding, multiplied by a zero mask below.
        q_tot = self.mixer(chosen, ep.state[:, :-1], rows=mask > 0)
        td_error = (q_tot - targets) * mask
        sq = 0.5 * td_error.pow(2)
        if episode_weights is not None:
            weights = torch.as_tensor(episode_weights, dtype=sq.dtype, device=sq.device).view(-1, 1)
            sq = sq * weights
        mask_sum = mask.sum().clamp(min=1.0)
        loss_td = sq.sum() / mask_sum
        loss, penalty_stats = self._with_penalties(loss_td, q, chosen, q_tot, ep)

        log_now = t_env - self.log_stats_t >= self.cfg.learner_log_interval
        # Before the step: the diagnostics and the gauge see the parameters that produced this loss.
        diagnostics = self.diagnostics(self.mixer, q.detach(), ep) if log_now else {}
        if "worst_greedy_action_rate" in diagnostics:
            self._watch_mirror(diagnostics["worst_greedy_action_rate"], t_env)
        flips = self._gauge_flips(q.detach(), ep, td_error.detach(), mask_sum, t_env) if self.gauge else []

        self.optimiser.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_norm_clip)
        self.optimiser.step()
        # A flip is a symmetry of the loss and of the optimiser's state: applied after the step,
        # it is the flip decided before it, and the step needed the graph of unflipped parameters.
        for agent in flips:
            self.flip_agent(agent)

        # Counted from the counter's steps, not its value: PyMARL2 restarts it at 0 on resume.
        self.episodes_since_target_update += self._episodes_elapsed(episode_num)
        if self.episodes_since_target_update >= self.cfg.target_update_interval:
            self._update_targets()

        if log_now:
            n = mask_sum.item()
            n_agents = int(self.args.n_agents)
            stats = {
                "loss_td": loss_td.item(),
                "grad_norm": float(grad_norm),
                # Names shared with PyMARL2's nq_learner carry its formulas, so `report` can put
                # runs side by side: its "td_error_abs" is the (PER-weighted) masked mean of
                # 0.5 * td_error^2, its Q means are divided by the number of agents.
                "td_error_abs": sq.abs().sum().item() / n,
                "q_taken_mean": (q_tot * mask).sum().item() / (n * n_agents),
                "target_mean": (targets * mask).sum().item() / (n * n_agents),
                # What those names suggest, under names of our own.
                "td_error_abs_mean": td_error.abs().sum().item() / n,
                "joint_q_taken_mean": (q_tot * mask).sum().item() / n,
                "joint_target_mean": (targets * mask).sum().item() / n,
                "target_update_count": float(self.target_update_count),
                **self._gauge_stats(),
                **rnd_stats,
                **penalty_stats,
                **diagnostics,
            }
            temperature = getattr(self.mac.action_selector, "temperature", None)
            if temperature is not None:
                stats["temperature"] = float(temperature)
            for key, value in stats.items():
                self.logger.log_stat(key, value, t_env)
            self.log_stats_t = t_env

        return td_error, mask, ep

    def _watch_mirror(self, worst_rate: float, t_env: int) -> None:
        """Say once, in the run's console, when most agents act on their worst action at two
        consecutive logs: the mixer may have learned the value while the agents play its mirror
        image (docs/sign_symmetry.md); nobody reads info.json while a run goes on."""
        self._mirror_logs = self._mirror_logs + 1 if worst_rate > MIRROR_WARNING_RATE else 0
        if self._mirror_logs < 2 or self._mirror_warned:
            return
        self._mirror_warned = True
        fix = ("the sign gauge is on and has not changed their side yet (sign_flips, "
               "negative_sign_share)" if self.gauge is not None else
               "sign_gauge=greedy_flip lets them act on what the mixer learned, without changing it")
        log.warning("at t_env=%d, %.0f%% of the agents' greedy actions are the action that gives the lowest Q_tot "
                    "(worst_greedy_action_rate, above %.0f%% at two logs in a row): the agents act on the mirror "
                    "image of the value function (docs/sign_symmetry.md); %s", t_env, 100 * worst_rate,
                    100 * MIRROR_WARNING_RATE, fix)

    # -- the sign gauge (numerics/gauge.py) ---------------------------------------------
    def _gauge_flips(self, q, ep, td_error, mask_sum, t_env: int) -> list[int]:
        """Agents the gauge flips at this update, judged on up to 256 of its states."""
        if not self.gauge.due(t_env):
            return []
        agent_q, states, avail = sample_states(q[:, :-1], ep.state[:, :-1], ep.avail_actions[:, :-1], ep.mask,
                                               GAUGE_STATES, self.gauge_generator)
        td_scale = (td_error.pow(2).sum() / mask_sum).sqrt().item()
        flips, evidence = self.gauge.decide(self.mixer, agent_q, states, avail, td_scale)
        for agent in flips:
            ev = evidence[agent]
            log.info("sign gauge: agent %d changes sides at t_env=%d (flip %d): playing its argmin raises Q_tot "
                     "by %.4g on average (threshold %.4g) and on %.0f%% of %d sampled states",
                     agent, t_env, self.gauge.flips[agent], ev.gain, ev.threshold, 100 * ev.share, ev.states)
        return flips

    def flip_agent(self, agent: int) -> None:
        """Change the side ``agent`` acts on, leaving every Q_tot, the loss and the optimiser's
        course unchanged: its sign in both controllers, its rows of both mixers, the optimiser's
        first moments of those rows."""
        self.mac.flip_agent_sign(agent)
        self.target_mac.flip_agent_sign(agent)
        mirror_agent_(self.mixer, agent, self.optimiser)
        mirror_agent_(self.target_mixer, agent)

    def _generators(self) -> dict:
        """This learner's private random streams, by name (saved with a checkpoint)."""
        out = {"diagnostics": self.diagnostics.generator, "penalty": self.penalty_generator}
        if self.gauge is not None:
            out["gauge"] = self.gauge_generator
        return out

    def _gauge_stats(self) -> dict:
        if self.gauge is None:
            return {}
        stats = {"sign_flips": float(self.gauge.total_flips),
                 "negative_sign_share": float((self.mac.agent_sign < 0).float().mean())}
        judged = [ev for ev in self.gauge.last_evidence if ev.states]
        if judged:
            # How close the latest check came to a flip: the largest mean gain of playing an agent's
            # argmin, the threshold it had to beat, and the largest share of states it was better on.
            stats["sign_gauge_gain"] = max(ev.gain for ev in judged)
            stats["sign_gauge_threshold"] = judged[0].threshold
            stats["sign_gauge_share"] = max(ev.share for ev in judged)
        return stats

    def _with_penalties(self, loss_td, q, chosen, q_tot, ep):
        """The loss with the symmetry-breaking penalties that are on, and their values."""
        loss, stats = loss_td, {}
        if self.cfg.monotonicity_penalty > 0:
            hinge = monotonicity_hinge(q_tot, chosen, ep.mask)
            loss = loss + self.cfg.monotonicity_penalty * hinge
            stats["monotonicity_hinge"] = hinge.item()
        if self.cfg.igm_penalty > 0:
            hinge = igm_hinge(self.mixer, q[:, :-1], ep.state[:, :-1], ep.avail_actions[:, :-1], ep.mask,
                              generator=self.penalty_generator)
            loss = loss + self.cfg.igm_penalty * hinge
            stats["igm_hinge"] = hinge.item()
        if stats:
            stats["loss_total"] = loss.item()
        return loss, stats

    def targets(self, ep, q, target_q, rewards):
        """λ-returns ``[B, T]`` for episodes ``ep`` given online and target agent Q-values
        ``[B, T+1, N, A]`` and the rewards ``[B, T]`` to learn from."""
        utilities = agent_bootstrap_utilities(
            self.cfg.td_bootstrap,
            target_q,
            online_q=q,
            actions=ep.actions,
            probs=ep.probs,
            avail_actions=ep.avail_actions,
            double_q=self.cfg.double_q,
        )
        # Bootstraps come from states an episode reached (written rows); padding is skipped.
        values = self.target_mixer(utilities, ep.state, rows=ep.written)
        if uses_q_lambda_correction(self.cfg.td_bootstrap):
            taken = self.target_mixer(_gather(target_q, ep.actions), ep.state, rows=ep.written)
            returns = q_lambda_returns(rewards, ep.terminated, ep.mask, values, taken, self.cfg.gamma, self.cfg.td_lambda)
        else:
            returns = lambda_returns(rewards, ep.terminated, ep.mask, values, self.cfg.gamma, self.cfg.td_lambda)
        return returns

    def _rewards_and_rnd_step(self, ep, t_env):
        """The rewards to learn from ``[B, T]`` and their statistics. With RND: the extrinsic
        reward plus beta times the novelty of each next state, and one step of RND's predictor
        (and its normalisers) on those states."""
        if self.rnd is None:
            return ep.reward, {}
        # Novelty of the state the transition leads to, as in RND.
        x = ep.state[:, 1:] if self.rnd_cfg.rnd_input == "state" else ep.obs[:, 1:]
        r_int, rnd_loss = self.rnd.reward_and_update(x, ep.mask)
        beta = self.rnd_beta.value(t_env)
        valid = r_int[ep.mask > 0]
        stats = {
            "rnd_reward_mean": valid.mean().item() if valid.numel() else 0.0,
            "rnd_reward_std": valid.std().item() if valid.numel() > 1 else 0.0,
            "rnd_loss": rnd_loss,
            "rnd_beta": beta,
        }
        return combine_rewards(ep.reward, r_int, beta), stats

    def _update_targets(self):
        self.target_mac.load_state(self.mac)
        self.target_mixer.load_state_dict(self.mixer.state_dict())
        # No log line: PyMARL2's console shows DEBUG, where a line per copy would bury the
        # rest of a run's output. `target_update_count` (a statistic) tells the story.
        self.episodes_since_target_update = 0
        self.target_update_count += 1

    def _episodes_elapsed(self, episode_num: int) -> int:
        """Episodes the host ran since the previous ``train``, from its counter ``episode_num``
        (the episodes before the batch this call trains after, as PyMARL2's and EPyMARL's run
        loops count them).

        After :meth:`load_models` the hosts restart the counter at 0, and their first ``train``
        comes after one more batch (``batch_size_run`` episodes), so the episodes since the
        checkpoint's last ``train`` are ``episode_num + batch_size_run``; a counter above the
        checkpoint's was kept counting instead. Without a load, a counter below the last one seen
        restarted at 0 and counts from there.
        """
        if self.resumed:
            self.resumed = False
            if episode_num <= self.last_episode_num:
                self.last_episode_num = -int(self.args.batch_size_run)
        elapsed = episode_num - self.last_episode_num
        if elapsed < 0:
            elapsed = episode_num
        self.last_episode_num = episode_num
        return elapsed

    # -- the hosts' learner protocol -------------------------------------------------
    def cuda(self):
        self.mac.cuda()
        self.target_mac.cuda()
        self.mixer.cuda()
        self.target_mixer.cuda()
        if self.rnd is not None:
            self.rnd.cuda()

    def save_models(self, path):
        """The controller's and the learner's files, written all or nothing (checkpoint.py)."""
        state = {
            "mixer": self.mixer.state_dict(),
            "target_mixer": self.target_mixer.state_dict(),
            "target_agent": self.target_mac.agent.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            # The target schedule, counter-independent (see _episodes_elapsed).
            "episodes_since_target_update": self.episodes_since_target_update,
            "last_episode_num": self.last_episode_num,
            "target_update_count": self.target_update_count,
        }
        if self.rnd is not None:
            state["rnd"] = self.rnd.full_state_dict()
        if self.gauge is not None:
            state["sign_gauge"] = self.gauge.state_dict()
        # A resumed run continues these streams where this one stands (docs/benchmarking.md, "Resuming").
        state["rng"] = {"global": global_rng_state(), **{name: g.get_state() for name, g in self._generators().items()}}
        save_atomically({**self.mac.checkpoint_files(path), os.path.join(path, "nonmono_learner.th"): state})

    def load_models(self, path):
        self.mac.load_models(path)
        # Flips apply to both controllers at once and target copies copy the signs: they are equal.
        self.target_mac.load_state(self.mac)
        state = torch.load(os.path.join(path, "nonmono_learner.th"), map_location="cpu")
        self.mixer.load_state_dict(state["mixer"])
        self.target_mixer.load_state_dict(state["target_mixer"])
        self.target_mac.agent.load_state_dict(state["target_agent"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.episodes_since_target_update = state["episodes_since_target_update"]
        self.target_update_count = state["target_update_count"]
        log.info("loaded %s: target networks copied %d episodes before the checkpoint, next copy in %d episodes",
                 path, self.episodes_since_target_update,
                 max(self.cfg.target_update_interval - self.episodes_since_target_update, 0))
        if self.rnd is not None:
            if "rnd" not in state:
                raise ValueError(f"{path} has no RND state but use_rnd=True; it was saved by a run without RND")
            self.rnd.load_full_state_dict(state["rnd"])
        if self.gauge is not None and "sign_gauge" in state:
            self.gauge.load_state_dict(state["sign_gauge"])
        if "rng" in state:
            restore_global_rng_state(state["rng"]["global"])
            for name, generator in self._generators().items():
                if name in state["rng"]:
                    generator.set_state(state["rng"][name])
        self.last_episode_num = state.get("last_episode_num", 0)
        self.resumed = True  # see _episodes_elapsed
