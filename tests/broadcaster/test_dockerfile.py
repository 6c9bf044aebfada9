"""The Dockerfile, parsed (no Docker engine on these machines): multi-stage, non-root,
healthcheck on /healthz, the service as entrypoint, and every COPY source present."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "dangling line continuation"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def test_it_is_multi_stage_with_a_named_builder_the_runtime_copies_from() -> None:
    froms = [args for stage in stages() for name, args in stage if name == "FROM"]
    assert len(froms) >= 2
    assert re.search(r"\bAS builder$", froms[0], re.I)
    runtime = stages()[-1]
    assert any(name == "COPY" and "--from=builder" in args for name, args in runtime)
    assert all("slim" in args or "PYTHON_IMAGE" in args for args in froms)
    assert "slim" in dict(i for i in instructions() if i[0] == "ARG")["ARG"]


def test_the_runtime_stage_runs_as_a_non_root_user() -> None:
    users = [args for name, args in stages()[-1] if name == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_the_healthcheck_hits_healthz_on_the_metrics_port() -> None:
    checks = [args for name, args in stages()[-1] if name == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "CMD" in checks[0]
    env = " ".join(args for name, args in stages()[-1] if name == "ENV")
    assert "BROADCASTER_HEALTH_URL=http://127.0.0.1:9650/healthz" in env
    assert "BROADCASTER_HEALTH_URL" in checks[0]


def test_the_entrypoint_is_the_service_with_the_documented_config_path() -> None:
    entrypoints = [args for name, args in stages()[-1] if name == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoints] == [
        ["broadcaster", "run", "--config", "/etc/broadcaster/broadcaster.toml"]
    ]


def test_every_package_the_project_ships_is_copied_and_every_copy_source_exists() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied: set[str] = set()
    for name, args in instructions():
        if name != "COPY" or "--from=" in args:
            continue
        *sources, _ = args.split()
        for source in sources:
            copied.add(source.rstrip("/"))
            # README.md is the lead's (pyproject's readme); everything else must exist now
            assert (REPO / source).exists() or source == "README.md", source
    assert packages <= copied
    assert "pyproject.toml" in copied


def test_the_build_context_leaves_out_local_state_and_tests() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".tools", "tests"} <= set(ignored)
