"""Our selectors on PyMARL2's action-selector protocol, for the host's own controllers.

Registered as ``softmax`` so stock algorithms (e.g. ``--config=qmix with
action_selector=softmax``) can be compared under the same Boltzmann exploration.
"""

from __future__ import annotations

from ...numerics.selection import make_selector
from .settings import ExplorationSettings, read_settings


class HostSelector:
    def __init__(self, args) -> None:
        settings = read_settings(ExplorationSettings, args, f"action_selector={args.action_selector}")
        self._selector = make_selector(
            settings.action_selector, schedule_kind=settings.selector_schedule, **settings.schedule_args()
        )

    def select_action(self, agent_inputs, avail_actions, t_env, test_mode=False):
        actions, _ = self._selector.select(agent_inputs, avail_actions, t_env, test_mode=test_mode)
        return actions

    @property
    def temperature(self):
        return getattr(self._selector, "temperature", None)
