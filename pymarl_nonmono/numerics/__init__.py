"""Host-independent numerics: torch only, no host framework, no ``args`` namespace.

Tensor shapes follow the ``[B, T, ...]`` convention (batch, time) and are checked where
data enters each public function.
"""
