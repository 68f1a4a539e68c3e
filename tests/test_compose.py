"""The deployment files, checked without a Docker engine: docker-compose.yml and
deploy/Dockerfile must name real `ctr` subcommands, flags and settings, and wire the
services the way deploy/README.md says (healthy Redis first, AOF on, one model shared by the
API and the stream consumer).

Each `ctr` command of the compose file goes, with ``${VAR:-default}`` filled in as compose
fills it, through the real ``service.cli.build_parser``: an unknown subcommand or flag fails
here instead of in a container.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.cli import SUBCOMMANDS, build_parser
from service.learner_options import LearnerOptions
from service.settings import Settings
from service.startup import check_startup
from service.stores.redis.state import IDENTITY_KEYS
from service.stores.urls import parse_state_url

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR, and $$
_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)"
                       r"(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def expand(value: str) -> str:
    """``value`` as compose interpolates it with no variable set: the defaults. A variable
    without a default would be empty (or an error) on a machine that does not set it, so
    it fails the test."""
    def one(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("bare")
        if m.group("op") in (":-", "-"):
            return m.group("arg")
        raise AssertionError(f"{value!r}: ${name} has no default (write ${{{name}:-...}})")

    out = _VARIABLE.sub(one, value)
    assert "${" not in out, f"{value!r}: interpolation this test does not understand"
    return out


def load_compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    argv = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
    return [expand(a) for a in argv]


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {str(k): expand("" if v is None else str(v)) for k, v in env.items()}


def ctr_services() -> Iterator[str]:
    for name, service in load_compose()["services"].items():
        argv = command_of(service)
        if argv[:1] == ["ctr"]:
            yield name


def parse_ctr(argv: list[str], capsys: pytest.CaptureFixture[str]) -> argparse.Namespace:
    """``argv`` (after ``ctr``) through the real parser; its error message on failure."""
    try:
        return build_parser(argv).parse_args(argv)
    except SystemExit:
        pytest.fail(f"`ctr {shlex.join(argv)}` is refused by the ctr parser:\n"
                    f"{capsys.readouterr().err}")


def setting_names() -> dict[str, str]:
    """CTR_* variable -> Settings field (``lambda_`` is read from CTR_LAMBDA)."""
    return {"CTR_LAMBDA" if f == "lambda_" else f"CTR_{f.upper()}": f
            for f in Settings.model_fields}


#: the commands that build Settings from their CTR_* environment and flags
SETTINGS_COMMANDS = ("serve", "consume")


def effective_settings(service: dict[str, Any], args: argparse.Namespace,
                       monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a `ctr serve` or `ctr consume` in this container builds: its CTR_*
    environment, then the command line's flags over it (as their ``run`` does)."""
    from service.cli.serve import settings_overrides

    for var in setting_names():
        monkeypatch.delenv(var, raising=False)
    for var, value in environment_of(service).items():
        monkeypatch.setenv(var, value)
    overrides = settings_overrides(args)
    if args.command == "consume" and args.state is None:
        overrides["state"] = args.source  # consume's default store is its source
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def model_identity(service: dict[str, Any], args: argparse.Namespace,
                   monkeypatch: pytest.MonkeyPatch) -> tuple[tuple[str, ...], str, dict[str, Any]]:
    """(shards, model name, the config the store compares) of a service's `ctr` command."""
    if args.command in SETTINGS_COMMANDS:
        settings = effective_settings(service, args, monkeypatch)
        state, name, opts = settings.state, settings.model_name, settings.learner_options()
    else:
        state, name, opts = args.state, args.model_name, LearnerOptions.from_args(args)
    # a fresh model as both build one (service.startup.model_builder): events are JSON, so
    # the "jsonl" format
    config = opts.build_model("jsonl").config()
    return parse_state_url(state).shards, name, {k: config.get(k) for k in IDENTITY_KEYS}


# -- the compose file -----------------------------------------------------------------------

def test_compose_has_the_documented_services() -> None:
    services = load_compose()["services"]
    assert {"api", "redis-a", "redis-b", "consumer"} <= set(services)
    assert set(ctr_services()) >= {"api", "consumer"}


@pytest.mark.parametrize("name", ["redis-a", "redis-b"])
def test_redis_services_persist_and_report_health(name: str) -> None:
    service = load_compose()["services"][name]
    assert str(service["image"]).startswith("redis:")
    argv = command_of(service)
    assert argv[0] == "redis-server"
    assert "--appendonly" in argv and argv[argv.index("--appendonly") + 1] == "yes", \
        f"{name}: AOF persistence is off"
    assert any(str(v).split(":")[1] == "/data" for v in service["volumes"]), \
        f"{name}: /data (the AOF files) is not on a volume"
    test = service["healthcheck"]["test"]
    assert test[:1] in (["CMD"], ["CMD-SHELL"]) and "redis-cli" in " ".join(test) \
        and "ping" in test[-1]


@pytest.mark.parametrize("name", sorted(ctr_services()))
def test_ctr_commands_parse_with_the_real_parser(name: str, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    service = load_compose()["services"][name]
    argv = command_of(service)[1:]
    assert argv and argv[0] in SUBCOMMANDS, \
        f"{name}: `ctr {shlex.join(argv[:1])}` is not one of {', '.join(SUBCOMMANDS)}"
    args = parse_ctr(argv, capsys)
    if args.command in SETTINGS_COMMANDS:
        settings = effective_settings(service, args, monkeypatch)  # validates every value
        check_startup(settings)
    if args.command == "serve":
        assert settings.host == "0.0.0.0", f"{name}: the server listens on {settings.host}"
        targets = {int(str(expand(str(p))).rsplit(":", 1)[-1]) for p in service["ports"]}
        assert settings.port in targets, f"{name}: publishes {targets}, serves {settings.port}"


@pytest.mark.parametrize("name", sorted(ctr_services()))
def test_ctr_environment_names_real_settings(name: str, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    service = load_compose()["services"][name]
    known = setting_names()
    env = environment_of(service)
    unknown = sorted(v for v in env if v.startswith("CTR_") and v not in known)
    assert not unknown, f"{name}: {unknown} are not settings of service/settings.py"
    # every value must validate as its setting (CTR_WORKERS=two would fail at start-up)
    for var in known:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", sorted(ctr_services()))
def test_ctr_services_wait_for_healthy_redis(name: str, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    services = load_compose()["services"]
    service = services[name]
    args = parse_ctr(command_of(service)[1:], capsys)
    urls = [getattr(args, "state", None), getattr(args, "source", None)]
    if args.command == "serve" and args.state is None:
        urls[0] = environment_of(service).get("CTR_STATE")
    hosts = {urlsplit(u).hostname for url in urls if url for u in url.split(",")}
    hosts.discard(None)
    assert hosts, f"{name}: no Redis URL in its command"
    depends = service.get("depends_on") or {}
    for host in hosts:
        assert host in services, f"{name}: {host} is not a service of the compose file"
        assert isinstance(depends, dict) and \
            depends.get(host, {}).get("condition") == "service_healthy", \
            f"{name}: does not wait for {host} to be healthy"
        assert "healthcheck" in services[host], f"{host}: no healthcheck to wait for"


def test_api_and_consumer_share_one_model(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    services = load_compose()["services"]
    identities = {}
    for name in ("api", "consumer"):
        args = parse_ctr(command_of(services[name])[1:], capsys)
        identities[name] = model_identity(services[name], args, monkeypatch)
    (api_shards, api_name, api_config), (c_shards, c_name, c_config) = \
        identities["api"], identities["consumer"]
    assert api_shards == c_shards, "api and consumer list other shards (or another order)"
    assert api_name == c_name, f"model names differ: {api_name!r} and {c_name!r}"
    assert api_config == c_config, "the store would refuse the second learner config"
    assert len(api_shards) == 2


# -- the Dockerfile -------------------------------------------------------------------------

def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(instruction, arguments) per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((op.upper(), rest.strip()))
    return stages


def test_dockerfile_runs_a_real_subcommand_as_non_root(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "the Dockerfile is meant to be multi-stage"
    final = stages[-1]
    cmd = [json.loads(rest) for op, rest in final if op == "CMD"][-1]
    entry = [json.loads(rest) for op, rest in final if op == "ENTRYPOINT"]
    argv = (entry[-1] if entry else []) + cmd
    assert argv[0] == "ctr", f"CMD runs {argv[0]!r}, not ctr"
    parse_ctr(argv[1:], capsys)
    user = [rest for op, rest in final if op == "USER"][-1].split(":")[0]
    assert user not in ("root", "0"), "the image runs as root"
    assert any(op == "HEALTHCHECK" and "/healthz" in rest for op, rest in final)
    env = dict(re.findall(r"\b(CTR_[A-Z0-9_]+)=(\S+)",
                          " ".join(rest for op, rest in final if op == "ENV")))
    assert set(env) <= set(setting_names()), f"ENV {sorted(env)}: not all are settings"
    settings = Settings(_env_file=None, **{setting_names()[k]: v for k, v in env.items()}
                        )  # type: ignore[call-arg]
    assert settings.host == "0.0.0.0", "`docker run` would listen on the loopback only"
    assert any(op == "EXPOSE" and rest.split("/")[0] == str(settings.port)
               for op, rest in final)


def test_dockerfile_warms_the_cache_the_runtime_reads() -> None:
    stages = dockerfile_stages()

    def env(stage: list[tuple[str, str]], var: str) -> set[str]:
        return set(re.findall(rf"\b{var}=(\S+)", " ".join(r for op, r in stage if op == "ENV")))

    builder, final = stages[0], stages[-1]
    assert env(builder, "NUMBA_CACHE_DIR") == env(final, "NUMBA_CACHE_DIR") != set()
    # the CPU name is part of Numba's cache key: both stages must say the same
    assert env(builder, "NUMBA_CPU_NAME") == env(final, "NUMBA_CPU_NAME")
    assert any(op == "RUN" and "warm_numba_cache.py" in rest for op, rest in builder)
    copies = [rest for op, rest in final if op == "COPY"]
    assert any("/opt/venv" in c for c in copies) and \
        any(next(iter(env(final, "NUMBA_CACHE_DIR"))) in c for c in copies)
    for op, rest in builder:  # every file the build copies from the repository exists
        if op == "COPY" and "--from" not in rest:
            for src in rest.split()[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
    build = load_compose()["services"]["api"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
