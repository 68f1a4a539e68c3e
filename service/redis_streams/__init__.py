"""The Redis Streams transport: a consumer group's events learned exactly once into a shared
state store (``consumer`` has the protocol, ``seen`` the dedupe window); and an impressions
stream and a clicks stream fed into the attribution join (``joined``)."""

from __future__ import annotations

from .consumer import ConsumerError, Counts, StreamConsumer
from .joined import JoinConsumer, JoinCounts, JoinOptions
from .options import ConsumerOptions
from .runner import consume, consume_joined

__all__ = ["ConsumerError", "ConsumerOptions", "Counts", "JoinConsumer", "JoinCounts",
           "JoinOptions", "StreamConsumer", "consume", "consume_joined"]
