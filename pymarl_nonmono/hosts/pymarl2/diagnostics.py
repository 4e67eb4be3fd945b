"""Moved to :mod:`..pymarl_family.diagnostics` (shared with EPyMARL); kept for its import path."""

from ..pymarl_family.diagnostics import (  # noqa: F401
    KNOWN_PAYOFFS,
    MAX_TABLE_ENTRIES,
    MAX_UTILITY_ENTRIES,
    STOCK_Q_TOT,
    IGMDiagnostics,
    attach_to_stock_learner,
    payoff_of,
    payoff_stats,
    stock_payoff_stats,
    with_stock_diagnostics,
)
