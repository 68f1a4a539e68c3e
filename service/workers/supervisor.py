"""``ctr serve --workers N --state memory://``: one learner process and N prediction
workers over one model in shared memory.

The parent process (this module) makes the shared directory, starts the learner process
(the whole app on a Unix socket in that directory, its model published there: ``publisher``)
and waits until it is ready, then binds the port and runs N prediction workers on it with
uvicorn's own supervisor (``reader``; a worker that dies is restarted). On SIGTERM (or
SIGINT) the workers stop first, finishing the requests in flight (forwarded ones too), then
the learner, which finishes its own and writes the final snapshot; the directory is
removed. If the learner process dies, the service stops (exit status 1): the model of a
memory store lives in it.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from ..settings import Settings
from . import shm, stats

log = logging.getLogger(__name__)

#: counters rows beyond one per worker: a worker restarted before its predecessor's lock
#: is released still finds a row
SPARE_ROWS = 2


def run_learner(settings: Settings, directory: Path, options: dict[str, Any]) -> None:
    """The learner process: the app on the directory's Unix socket."""
    from ..app import create_app

    logging.getLogger("service").setLevel(settings.log_level.upper())
    app = create_app(settings, shared_dir=directory)
    config = uvicorn.Config(app, uds=str(shm.learner_socket(directory)), **options)
    uvicorn.Server(config).run()


def serve(settings: Settings, options: dict[str, Any]) -> int:
    """Run the service until SIGTERM/SIGINT; the exit status."""
    from .reader import create_reader_app

    directory = shm.make_dir()
    stats.create(directory, settings.workers + SPARE_ROWS)
    learner_options = {k: v for k, v in options.items()
                       if k not in ("host", "port", "factory")}
    learner = multiprocessing.get_context("spawn").Process(
        target=run_learner, args=(settings, directory, learner_options), name="ctr-learner")
    config = uvicorn.Config(functools.partial(create_reader_app, settings, directory),
                            **{**options, "workers": settings.workers})
    workers: Multiprocess | None = None
    try:
        learner.start()
        workers = Multiprocess(config, sockets=[])  # its signal handlers, from now on
        if not _wait_ready(learner, directory, workers):
            return 1
        workers.sockets = [config.bind_socket()]
        died = threading.Event()
        threading.Thread(target=_watch, args=(learner, workers, died), daemon=True).start()
        workers.run()
        failed = any(p.exitcode == STARTUP_FAILURE for p in workers.processes)
        return 1 if died.is_set() or failed else 0
    finally:
        _stop(learner, settings.shutdown_timeout)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_ready(learner: multiprocessing.process.BaseProcess, directory: Path,
                workers: Multiprocess) -> bool:
    """Wait for the learner's /readyz (it loads the model and its kernels); False if it
    exited first, or a signal asked the service to stop."""
    transport = httpx.HTTPTransport(uds=str(shm.learner_socket(directory)))
    with httpx.Client(transport=transport, base_url="http://learner", timeout=5) as client:
        while True:
            if not learner.is_alive():
                log.error("the learner process exited while starting (see the log above)")
                return False
            if workers.signal_queue:
                log.info("stopped before the learner was ready")
                return False
            try:
                if client.get("/readyz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)


def _watch(learner: multiprocessing.process.BaseProcess, workers: Multiprocess,
           died: threading.Event) -> None:
    """Stop the prediction workers if the learner process dies."""
    while not workers.should_exit.is_set():
        learner.join(0.5)
        if not learner.is_alive():
            if workers.signal_queue or workers.should_exit.is_set():
                return  # a signal to the whole process group (Ctrl-C): a stop, not a death
            log.error("the learner process exited (status %s): stopping the service",
                      learner.exitcode)
            died.set()
            workers.should_exit.set()
            return


def _stop(learner: multiprocessing.process.BaseProcess, grace: float) -> None:
    """SIGTERM the learner (it drains, then writes its final snapshot) and wait for it."""
    if learner.pid is None or not learner.is_alive():
        return
    learner.terminate()
    learner.join(grace + 120)  # the final snapshot of a large model takes a while
    if learner.is_alive():
        log.error("the learner process did not stop: killing it")
        learner.kill()
        learner.join()
