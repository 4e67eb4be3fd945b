"""Adapter for PyMARL2 (github hijkzzz/pymarl2).

Importing this package does not import PyMARL2; the host's modules are imported only
inside :func:`plugin.activate`, which PyMARL2's patched ``main.py`` calls.
"""
