"""Prediction workers: ``ctr serve --workers N --state memory://``.

One learner process holds the model (the embedded memory store: it learns, snapshots and
answers every route but predictions) and publishes its state table in shared memory; N
prediction worker processes on the port map that table, answer ``POST /v1/predict`` from
it, and forward every other request to the learner over a Unix socket. The parts:

- ``shm``: the shared directory and its files;
- ``publisher``: the learner's store, which keeps the table in a shared file and tells
  workers what changed after each learned batch (a grown table, new fields, the version);
- ``view``: a worker's mapping of the model, and what a prediction sees (FTRL only);
- ``reader``: a worker's app; ``proxy``: forwarding to the learner;
- ``stats``: workers' counters, added up by the learner's ``/metrics``;
- ``supervisor``: starting and stopping the processes in order.

Why it is built, and why it is not the default. With the memory store, ``--workers`` above
1 needed Redis, so predictions used one core; VW's daemon shares its model with its
children in the same spirit. Measured on the 2-core machine this was built on, with the
load generator (wrk, one thread) on the same cores and other jobs running (load average
5-9; ``python bench/predict_latency.py``, 3 repeats of 10 s, seven runs):

- 2 workers answered 0.77x-1.33x one worker's single-event predictions (the medians of
  the runs) and 0.93x-1.34x its 100-candidate ones;
- the bare ASGI app gained 0.94x-1.15x from a second uvicorn worker in the four runs that
  measured it: there is little idle core to gain here, and the workers reach that
  ceiling; an
  earlier prototype (two workers each with a private copy of the model, no learner, load
  average 5) gave 1.24x and 1.13x;
- training pays: a worker receives each training batch and forwards it, so the learner
  shares its core with that work (``ctr replay`` of 200k syn rows, concurrency 4: 49k-79k
  events/s through two workers, 56k-202k with one, interleaved runs).

So the feature is there for machines with cores beyond the learner's and the clients'
(prediction-heavy traffic), and ``--workers`` stays 1 by default; measure on the target
machine.
"""
