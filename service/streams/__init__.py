"""The Redis Streams transport: a consumer group's events learned exactly once into a shared
state store (``consumer`` has the protocol, ``seen`` the dedupe window)."""

from __future__ import annotations

from .consumer import ConsumerError, Counts, StreamConsumer
from .options import ConsumerOptions
from .runner import consume

__all__ = ["ConsumerError", "ConsumerOptions", "Counts", "StreamConsumer", "consume"]
