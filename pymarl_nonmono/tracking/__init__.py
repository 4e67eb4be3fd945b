"""Experiment tracking for PyMARL2 runs: where a run's Sacred records go besides FileStorage.

:mod:`.urls` resolves and checks the MongoDB URL (and keeps credentials out of every
record and message); :mod:`.observers` is the ``pymarl2.observers`` entry point that
patch 0005 calls with each run's config.
"""
