"""Our learner on PyMARL2: :class:`..pymarl_family.learner.PymarlFamilyLearner` plus PyMARL2's
prioritised replay (``use_per``): ``train`` takes the buffer's importance weights and
returns one priority per episode, under the key ``nq_learner`` uses."""

from __future__ import annotations

from ..pymarl_family import learner as _family
from ..pymarl_family.settings import read_settings
from .settings import PERSettings


class NonMonoLearner(_family.PymarlFamilyLearner):
    def __init__(self, mac, scheme, logger, args) -> None:
        super().__init__(mac, scheme, logger, args)
        self.per: PERSettings = read_settings(PERSettings, args, "nonmono_learner")
        self._priority_range = [float("inf"), float("-inf")]  # min, max seen (return_priority)

    def train(self, batch, t_env: int, episode_num: int, per_weight=None):
        td_error, mask, ep = self._update(batch, t_env, episode_num, per_weight if self.per.use_per else None)
        if not self.per.use_per:
            return {}
        return {"td_errors_abs": self._priorities(td_error, mask, ep.reward)}

    def _priorities(self, td_error, mask, reward):
        if self.per.return_priority:
            # Same normalised-return priority as PyMARL2's nq_learner offers.
            ret = reward.sum(1).detach().cpu()
            lo, hi = self._priority_range
            lo, hi = min(lo, ret.min().item()), max(hi, ret.max().item())
            self._priority_range = [lo, hi]
            return (ret - lo) / (hi - lo + 1e-5)
        return (td_error.abs().sum(1) / mask.sum(1).clamp(min=1.0).sqrt()).detach().cpu()
