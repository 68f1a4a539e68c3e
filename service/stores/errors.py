"""The state stores' exceptions: one hierarchy, raised by the stores and nothing else.

Store errors are domain errors. Driver errors (redis-py's, ``OSError`` of the data
directory) are wrapped where they happen, in the store's transport or log; the HTTP layer
maps the classes below to problems in one handler (``service.errors``), and the command
line prints their message on one line.

::

    StoreError                 a state store that cannot be opened or used
    ├── StoreConfigError       a URL, model name, data directory or option that cannot work
    ├── IdentityError          the store holds another model (or another shard's state)
    └── StoreUnavailable       cannot be reached or written now: 503 with Retry-After,
        │                      nothing of the request was learned
        ├── DurabilityError    the write-ahead log cannot be written or synced
        └── NotYetDurable      learned, but its flush did not land in time (a Redis worker
                               without a data directory): kept pending, retried
"""

from __future__ import annotations


class StoreError(Exception):
    """A state store that cannot be opened or used."""


class StoreConfigError(StoreError):
    """A URL, model name, data directory or option that cannot work (refused at start)."""


class IdentityError(StoreError):
    """The store holds another model under this name (or another shard's state): a worker
    with a disagreeing config must not mix its deltas into that state."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or written now: the request is refused (503, Retry-After)
    having learned nothing; what was learned before stays and is retried by the store."""

    retry_after = 1


class DurabilityError(StoreUnavailable):
    """The write-ahead log could not take a record (disk full, I/O error): the request is
    refused having learned nothing. A failed sync is worse (the kernel may have dropped the
    pages): the log refuses every later write, and the service must restart from its data
    directory."""


class NotYetDurable(StoreUnavailable):
    """A batch learned by a worker without a data directory whose flush could not be
    applied in time: it stays pending and is retried by the store. A resend with the same
    Idempotency-Key is answered once it lands; a resend without one is learned again."""
