"""The Dockerfile and the compose file, checked without a Docker engine (none runs here):
their structure, and every ``satvault …`` command in them against the real command line."""

from __future__ import annotations

import posixpath
import re

import pytest

from tests.deploy._files import (
    DEPLOY,
    ROOT,
    compose,
    dockerfile_stages,
    interpolate,
    json_args,
    satvault_command,
    shell_satvault,
)

SATVAULT_SERVICES = {"migrate", "signer", "api", "workers", "backup"}


def test_the_command_checker_rejects_what_the_cli_would() -> None:
    assert satvault_command(["serve", "--role", "api"]) == "serve"
    assert satvault_command(["signer", "ping", "--socket", "/s"]) == "signer ping"
    for wrong in (["serve", "--role", "everything"], ["db", "migrate"], ["serve", "--colour"],
                  ["signer", "ping"], ["signer"]):
        with pytest.raises(Exception):  # noqa: B017 - a usage error of Typer's own click, or KeyError
            satvault_command(wrong)


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    stages = dockerfile_stages(DEPLOY / "Dockerfile")
    assert len(stages) >= 2, "a build stage and a runtime stage"
    build, runtime = stages[0], stages[-1]
    assert build[0][1].endswith("AS build") and runtime[0][1].endswith("AS runtime")
    text = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and "slim" in base.group(1), "the runtime is a slim image"
    runtime_text = " ".join(args for _, args in runtime)
    assert "build-essential" not in runtime_text, "no compiler in the runtime image"
    assert any(i == "COPY" and a.startswith("--from=build ") for i, a in runtime)
    users = [a for i, a in runtime if i == "USER"]
    assert users, "the runtime stage sets a USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "a numeric, non-root uid (runAsNonRoot can see it)"
    last_user = max(n for n, (i, _) in enumerate(runtime) if i == "USER")
    assert all(i != "RUN" for i, _ in runtime[last_user:]), "nothing runs as root after USER"
    # copies into the build stage name files that exist in the build context
    for instr, args in build:
        if instr == "COPY" and not args.startswith("--"):
            *sources, _dest = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
    health = next(a for i, a in runtime if i == "HEALTHCHECK")
    assert "/healthz" in health and "CMD" in health
    assert json_args(next(a for i, a in runtime if i == "ENTRYPOINT")) == ["satvault"]
    satvault_command(json_args(next(a for i, a in runtime if i == "CMD")))
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var"} <= set(ignored), "no virtualenv, data or history in images"


def test_compose_services_and_their_commands() -> None:
    c = compose()
    services = c["services"]
    assert {"postgres", "migrate", "api", "workers", "signer", "bitcoind", "lnd", "nats",
            "caddy"} <= set(services)
    for name in SATVAULT_SERVICES:
        svc = services[name]
        assert svc["image"].startswith("satvault:") and svc["build"]["dockerfile"] == \
            "deploy/Dockerfile"
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        assert svc.get("user") in (None, "10001", "10001:10001"), "never root"
        if "entrypoint" in svc:
            satvault_command(shell_satvault(svc["entrypoint"][-1]))
        else:
            satvault_command(svc["command"])
        check = svc.get("healthcheck", {}).get("test", [])
        if check[:2] == ["CMD", "satvault"]:
            satvault_command(check[2:])
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "workers"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"}
    api, workers = services["api"], services["workers"]
    assert api["command"][:3] == ["serve", "--role", "api"]
    assert int(api["deploy"]["replicas"]) >= 2
    assert workers["command"][:3] == ["serve", "--role", "workers"]
    assert int(workers["deploy"]["replicas"]) == 1
    nats = services["nats"]["command"]
    assert "-js" in nats or "--jetstream" in nats
    assert any(str(p).endswith(":443") for p in services["caddy"]["ports"])
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    api_port = api["command"][api["command"].index("--port") + 1]
    assert re.search(rf"dynamic a api {api_port}\b", caddyfile), "caddy reaches every api"


def _mounts(service: dict) -> dict[str, str]:
    """volume name → mount target, for named volumes."""
    out = {}
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if not source.startswith((".", "/")):
            out[source] = target
    return out


def test_compose_signer_socket_volumes_and_health() -> None:
    c = compose()
    services = c["services"]
    signer, workers = services["signer"], services["workers"]
    socket = signer["command"][signer["command"].index("--socket") + 1]
    assert signer["network_mode"] == "none", "the key-holding process has no network"
    shared = {v for v, t in _mounts(signer).items() if t == posixpath.dirname(socket)}
    assert shared, "the socket lies in a volume"
    (volume,) = shared
    assert _mounts(workers).get(volume) == posixpath.dirname(socket), "workers see the socket"
    assert workers["environment"]["SATVAULT_SIGNER_SOCKET"] == socket
    assert workers["depends_on"]["signer"] == {"condition": "service_healthy"}
    seed_dir = posixpath.dirname(signer["command"][signer["command"].index("--seed-file") + 1])
    (seed_volume,) = {v for v, t in _mounts(signer).items() if t == seed_dir}
    holders = [n for n, s in services.items() if seed_volume in _mounts(s)]
    assert holders == ["signer"], "only the signer mounts its seed"
    assert [n for n, s in services.items() if "signer_passphrase" in s.get("secrets", [])] == \
        ["signer"]
    # every long-running service has a health check; one-shots and tools need none
    for name, svc in services.items():
        if svc.get("restart") == "unless-stopped":
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
    # everything referenced is declared
    declared = set(c["volumes"])
    for name, svc in services.items():
        assert set(_mounts(svc)) <= declared, name
        assert set(svc.get("secrets", [])) <= set(c["secrets"]), name
        assert set(svc.get("depends_on", {})) <= set(services), name


def test_interpolation_matches_compose_rules() -> None:
    assert interpolate("${A:-2} ${B:?set B} $${C} ${D}", {"D": "d"}) == "2 <B> ${C} d"
