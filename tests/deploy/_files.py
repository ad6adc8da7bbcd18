"""Readers for the deployment files: the Dockerfile's instructions by stage, the compose
file with its ``${VAR:-default}`` interpolation done the way Compose does it, the Kubernetes
documents, and the ``satvault`` command line to check any command against."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
import yaml

from satvault.cli import app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
_CLI = typer.main.get_command(app)


def satvault_command(argv: Sequence[str]) -> str:
    """Resolve ``argv`` (without the leading ``satvault``) against the real command line and
    parse its options as the command would; returns the command path. Raises (a
    usage error of Typer's click, a ``KeyError``) for an unknown command, option or value."""
    cmd: Any = _CLI
    rest, path = list(argv), []
    while isinstance(getattr(cmd, "commands", None), dict):  # a group (Typer's own click)
        if not rest:
            raise KeyError(f"`satvault {' '.join(path)}` needs a sub-command")
        name = rest.pop(0)
        sub = cmd.commands.get(name)
        if sub is None:
            raise KeyError(f"`satvault {' '.join([*path, name])}` is not a command")
        cmd, path = sub, [*path, name]
    with cmd.make_context(" ".join(path), rest, resilient_parsing=False):
        pass
    return " ".join(path)


def shell_satvault(script: str) -> list[str]:
    """The satvault argv in an ``exec satvault …`` shell line (command substitutions
    replaced by a placeholder word)."""
    script = re.sub(r"\$\$?\([^)]*\)", "X", script)
    words = shlex.split(script)
    start = words.index("satvault")
    return words[start + 1:]


# ---------------------------------------------------------------------------- Dockerfile

def dockerfile_stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions (upper-case name, argument text) of each stage, in order."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instr, args.strip()))
    return stages


def json_args(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


# ------------------------------------------------------------------------------- compose

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?|-|\?)(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's interpolation of the forms used here: ``${X:-default}``, ``${X:?error}``
    (taken as set), ``${X}``; ``$$`` is a literal ``$``."""
    env = env or {}

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"] or ""
        if name in env:
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            return f"<{name}>"
        return ""

    parts = text.split("$$")
    return "$".join(_VAR.sub(one, p) for p in parts)


def compose() -> dict[str, Any]:
    data = yaml.safe_load(interpolate((DEPLOY / "compose.yaml").read_text()))
    assert isinstance(data, dict)
    return data


# ---------------------------------------------------------------------------- kubernetes

def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return spec["template"]["spec"]
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return None
