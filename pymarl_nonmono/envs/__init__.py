"""Environments we provide to host frameworks (registered by the host adapters, never at import)."""
