"""What PyMARL's descendants (PyMARL2, EPyMARL) share of our adapter: the learner, the
controller, the batch conversion, settings, selectors, IGM diagnostics and config-key checks.

The hosts differ in how their agents are called (:class:`.controller.AgentProtocol`), in
prioritised replay (PyMARL2 only: ``hosts/pymarl2/learner.py``) and in their env
protocol and start-up checks; each ``hosts/<host>/`` module injects its own. Importing
this package does not import a host.
"""
