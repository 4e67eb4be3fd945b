"""Adapter for EPyMARL (github uoe-agents/epymarl).

So far: install/uninstall/doctor and a plugin entry point that registers nothing yet
(docs/design/epymarl_host.md, issue #14). Importing this package does not import EPyMARL.
"""
