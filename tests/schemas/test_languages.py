"""Languages and their aliases."""

import pytest
from pydantic import ValidationError

from schemas.execution import ExecuteRequest
from schemas.languages import Language, parse_language


@pytest.mark.parametrize(
    ("name", "language"),
    [
        ("python", Language.PYTHON),
        ("node", Language.JAVASCRIPT),
        ("JS", Language.JAVASCRIPT),
        ("shell", Language.BASH),
        ("sh", Language.BASH),
        ("c", Language.C),
    ],
)
def test_aliases(name: str, language: Language) -> None:
    assert parse_language(name) is language
    assert ExecuteRequest(code="", language=name).language is language


def test_unknown_language_lists_the_supported_ones() -> None:
    with pytest.raises(ValidationError) as caught:
        ExecuteRequest(code="", language="rust")
    message = str(caught.value)
    assert "unsupported language 'rust'" in message
    assert "python" in message and "javascript" in message and "bash" in message


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../b", ""])
def test_files_must_stay_in_the_workspace(path: str) -> None:
    with pytest.raises(ValidationError, match="workspace|inside"):
        ExecuteRequest(code="", files={path: "x"})


def test_workspace_paths_are_normalised() -> None:
    request = ExecuteRequest(code="", files={"/home/user/a/./b.txt": "x"})
    assert request.files == {"a/b.txt": "x"}


def test_env_names_are_checked() -> None:
    with pytest.raises(ValidationError, match="invalid"):
        ExecuteRequest(code="", env={"BAD NAME": "x"})
