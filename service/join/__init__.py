"""The attribution join: impressions now, clicks later (issue 13), for the in-process
(memory) state store and one worker, and across the workers of a Redis state store.

- ``ids``: an impression's id as a 64-bit key, and the hash decisions taken from it;
- ``policies``: what is learned when (``wait``; ``fnw``, the fake-negative weights);
- ``pending``: the pending impressions, stored compactly, with their clocks and counters;
- ``bodies``: the request bodies of ``/v1/impressions`` and ``/v1/feedback``, checked;
- ``marks``: across Redis workers: clicks forwarded through a stream in Redis to the worker
  holding their impression, and the watermark the workers share.

The learner service (``learner.joining``) runs them under its learn lock and logs each
request in the write-ahead log first, so a restart rebuilds the pending impressions by
learning the log again.
"""

from .pending import JoinState
from .policies import POLICIES, Policy

__all__ = ["POLICIES", "JoinState", "Policy"]
