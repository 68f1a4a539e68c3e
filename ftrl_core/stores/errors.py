"""The state stores' exceptions: one base class, so callers catch one thing."""

from __future__ import annotations


class StateStoreError(Exception):
    """A state store that cannot be opened or used (bad URL, unreachable, refused)."""


class IdentityError(StateStoreError):
    """The store holds another model under this name (or another shard's state): a worker
    with a disagreeing config must not mix its deltas into that state."""


class FlushError(StateStoreError):
    """A flush that could not be applied after its retries; its deltas stay pending."""
