"""What can be checked of the deployment files without Docker or a cluster.

Docker does not run on this machine, so the images are not built here; these tests check
that the files parse, that every path they copy exists, and that their names agree.
"""

import re
from pathlib import Path

import yaml

from executor.config import ExecutorSettings
from openai_tools.config import ApiSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROOT = DEPLOY.parent


def test_dockerfiles_copy_only_paths_that_exist() -> None:
    for dockerfile in DEPLOY.glob("Dockerfile.*"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                *sources, _ = line.split()[1:]
                for source in sources:
                    assert (ROOT / source).exists(), f"{dockerfile.name}: {source} is missing"
        assert "CMD" in dockerfile.read_text()


def test_compose_parses_and_keeps_executors_internal() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"api", "executor-1", "executor-2"}
    assert compose["networks"]["internal"]["internal"] is True
    for name in ("executor-1", "executor-2"):
        assert "ports" not in services[name], "executors must not be published"
        assert services[name]["networks"] == ["internal"]
        dockerfile = services[name]["build"]["dockerfile"]
        assert (ROOT / dockerfile).exists()
    urls = services["api"]["environment"]["CODE_EXEC_EXECUTOR_URLS"]
    assert all(f"http://{n}:8001" in urls for n in ("executor-1", "executor-2"))


def test_kubernetes_manifests_parse_and_agree() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "code-exec.yaml").read_text()))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "api"),
        ("StatefulSet", "executor"),
        ("Service", "executor"),
        ("Secret", "code-exec"),
        ("NetworkPolicy", "executor-only-from-api"),
    } <= kinds
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            container = doc["spec"]["template"]["spec"]["containers"][0]
            assert container["readinessProbe"]["httpGet"]["path"] == "/health"
            assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed["app.kubernetes.io/component"] == "api"


def test_env_example_names_every_setting() -> None:
    text = (DEPLOY / ".env.example").read_text()
    named = set(re.findall(r"^(CODE_EXEC_[A-Z0-9_]+)=", text, re.M))
    wanted = {f"CODE_EXEC_{n.upper()}" for n in ExecutorSettings.model_fields}
    wanted |= {f"CODE_EXEC_{n.upper()}" for n in ApiSettings.model_fields}
    assert wanted - named == set(), f"missing from .env.example: {sorted(wanted - named)}"
    assert named - wanted == set(), f"unknown in .env.example: {sorted(named - wanted)}"


def test_systemd_units_start_the_commands_the_cli_has() -> None:
    for unit in (DEPLOY / "systemd").glob("*.service"):
        start = next(ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart="))
        assert start.split()[-1] in ("executor", "api"), unit.name
