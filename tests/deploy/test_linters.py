"""The deployment files, checked by the tools that know them (installed by the dev extra):
the Dockerfiles by hadolint, the Kubernetes manifests against the Kubernetes API's schemas
(kubernetes-validate, strict: an unknown field is an error), compose against the compose
specification's schema (check-jsonschema's vendored copy).

Each check is also shown a file it must reject, so that a tool that stopped checking (a
renamed option, an empty schema) fails here instead of passing everything.
"""

import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BIN = Path(sys.executable).parent


def _tool(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / name), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def _hadolint(*files: Path) -> subprocess.CompletedProcess[str]:
    # Every finding fails, infos included; a rule set aside is set aside in the Dockerfile,
    # next to its reason.
    return _tool("hadolint", "--no-color", "--failure-threshold", "info", *files)


def test_dockerfiles_pass_hadolint() -> None:
    dockerfiles = sorted(DEPLOY.glob("Dockerfile.*"))
    assert len(dockerfiles) == 2
    result = _hadolint(*dockerfiles)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN cd /tmp && apt-get install gcc\nCMD python3 x.py\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3025"):
        assert rule in result.stdout, result.stdout


def _kubernetes_validate(manifest: Path) -> subprocess.CompletedProcess[str]:
    return _tool("kubernetes-validate", "--strict", "--quiet", manifest)


def test_kubernetes_manifests_match_the_kubernetes_schemas() -> None:
    manifests = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
    assert manifests
    for manifest in manifests:
        result = _kubernetes_validate(manifest)
        assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path: Path) -> None:
    manifest = DEPLOY / "kubernetes" / "code-exec.yaml"
    text = manifest.read_text()
    # A misspelt field: without --strict this would pass, and a cluster would ignore it.
    assert "readinessProbe:" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("readinessProbe:", "readynessProbe:", 1))
    result = _kubernetes_validate(bad)
    assert result.returncode != 0
    assert "readynessProbe" in result.stdout + result.stderr


def _compose_check(compose: Path) -> subprocess.CompletedProcess[str]:
    return _tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", compose)


def test_compose_file_matches_the_compose_specification() -> None:
    result = _compose_check(DEPLOY / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [("depends_on: [executor-1, executor-2]", "depends_on: 2"), ("cap_add:", "caps_add:")],
)
def test_compose_check_rejects_what_compose_would(tmp_path: Path, old: str, new: str) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert old in text
    bad = tmp_path / "compose.yaml"
    bad.write_text(text.replace(old, new, 1))
    result = _compose_check(bad)
    assert result.returncode != 0, result.stdout
