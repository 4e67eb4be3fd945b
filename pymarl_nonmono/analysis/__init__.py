"""Analyses of the paper's theory (arXiv 2511.09792) that run without a host framework.

:mod:`.dynamics` is the numerics of the single-state gradient-flow analysis (loss, full
and semi-gradient vector fields, flow integration, zero-loss points and their spectra);
:mod:`.dynamics_cli` is the ``pymarl-nonmono dynamics`` command built on it.
"""
