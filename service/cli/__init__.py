"""The ``ctr`` command line: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

#: subcommand -> (module, one-line help). Modules are imported only when their command
#: runs: the service's and Redis's dependencies cost a third of a second that `ctr train`
#: should not pay.
SUBCOMMANDS = {
    "train": ("train", "train a model on a file (progressive validation)"),
    "predict": ("predict", "predict a file with a model or a server (one probability a line)"),
    "inspect": ("inspect_cmd", "print a model's config, nnz, L1 norm, per-field nnz, top weights"),
    "serve": ("serve", "serve a model over HTTP: learn from events, predict at once"),
    "replay": ("replay", "post a file's rows to a server's /v1/train in batches"),
    "load-state": ("load_state", "seed a shared state store from a model file, or read it back"),
    "consume": ("consume", "learn a Redis stream through a consumer group (exactly once)"),
}


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` (all of them if None) gets its
    module imported and its arguments."""
    chosen = None if argv is None else next((a for a in argv if a in SUBCOMMANDS), "")
    parser = argparse.ArgumentParser(
        prog="ctr", description="Online-learning click-through-rate models and service.")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_) in SUBCOMMANDS.items():
        if chosen is not None and name != chosen:
            sub.add_parser(name, help=help_)
            continue
        module = importlib.import_module(f"{__name__}.{module_name}")
        p = sub.add_parser(name, help=help_, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def _skip_numba_blas_probe() -> None:
    """Numba imports scipy.linalg (a third of a second) the first time it loads a kernel,
    only to find a BLAS for np.dot, which no kernel here uses. In processes this command
    owns, hide scipy.linalg for that one probe; it is importable again afterwards."""
    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]
    try:
        import numba.np.arraymath  # noqa: F401 - runs the probe now
    except ImportError:  # pragma: no cover - numba without that module
        pass
    finally:
        del sys.modules["scipy.linalg"]


def _no_hugepage_advice() -> None:
    """Keep NumPy from advising huge pages for its large arrays, in this process and the
    workers it starts (set before NumPy is imported; a value the user set stays). With the
    advice, every array of 4 MB or more that glibc maps afresh (a request body's parse
    outputs, a flush's rows, a compaction's entries) faults its memory in as 2 MB pages,
    each zeroed whole by the kernel: ``perf`` over a Redis ingest run found the kernel's
    page clearing at 14-27% of the machine's CPU, 1-7% without it; the workers' CPU fell by
    about a tenth, and `ctr train` syn1m's wall time by 0.3-0.5 s of 3.4 (the learn kernel's
    time on the table unchanged: user CPU 3.9-4.0 s either way)."""
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")


#: commands whose process, once they are done, ends without the interpreter's teardown:
#: unloading Numba's compiled code and freeing every module took `ctr train` 0.15 s, a
#: twelfth of a run over a million rows. They hold nothing that needs more than the
#: ``atexit`` handlers (their files are closed and renamed before they return).
QUICK_EXIT = frozenset({"train"})


def _quick_exit(status: int) -> None:
    """End the process now: ``atexit`` handlers (logging's among them) and the standard
    streams flushed, no interpreter teardown."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to reach
            stream.flush()
    os._exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    own_process = argv is None  # (tests call main() with arguments, in their process)
    _no_hugepage_advice()
    _skip_numba_blas_probe()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    status = _run(args)
    if own_process and args.command in QUICK_EXIT:
        _quick_exit(status)
    return status


def _run(args: argparse.Namespace) -> int:
    from ftrl_core.model import ModelFileError
    from ftrl_core.readers import BadLineError, InputError
    from ftrl_core.readers.quoting import printable

    try:
        return int(args.run(args) or 0)
    except (CommandError, InputError, BadLineError, ModelFileError, ValueError) as exc:
        print(f"ctr {args.command}: error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `ctr predict ... | head`
        return 0
    except OSError as exc:  # a file that cannot be read or written: one line too
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ctr {args.command}: error: {printable(where + (exc.strerror or str(exc)))}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ctr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
