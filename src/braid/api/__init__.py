"""Typed specs of braid's custom resources and the path catalog (pydantic, no I/O)."""
