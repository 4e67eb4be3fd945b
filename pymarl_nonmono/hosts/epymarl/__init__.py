"""Adapter for EPyMARL (github uoe-agents/epymarl): install/uninstall/doctor, and a plugin
(``plugin.activate``) registering the PyMARL-family learner and controller
(:mod:`..pymarl_family`) with EPyMARL's agent protocol (``agents``) and our envs behind
EPyMARL's env protocol (``envs``). Importing this package does not import EPyMARL.
"""
