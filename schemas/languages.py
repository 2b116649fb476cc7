"""The languages code can be written in, and the names a caller may use for them."""

from enum import StrEnum
from typing import Annotated

from pydantic import BeforeValidator


class Language(StrEnum):
    """A language the executor runs."""

    PYTHON = "python"
    JAVASCRIPT = "javascript"
    BASH = "bash"
    C = "c"


LANGUAGE_ALIASES: dict[str, Language] = {
    "python": Language.PYTHON,
    "python3": Language.PYTHON,
    "py": Language.PYTHON,
    "javascript": Language.JAVASCRIPT,
    "node": Language.JAVASCRIPT,
    "nodejs": Language.JAVASCRIPT,
    "js": Language.JAVASCRIPT,
    "bash": Language.BASH,
    "shell": Language.BASH,
    "sh": Language.BASH,
    "c": Language.C,
}


def supported_languages_text() -> str:
    """The supported languages with their aliases, for error messages and tool descriptions."""
    parts = []
    for language in Language:
        aliases = [a for a, v in LANGUAGE_ALIASES.items() if v is language and a != language.value]
        parts.append(f"{language.value} ({', '.join(aliases)})" if aliases else language.value)
    return ", ".join(parts)


def parse_language(value: object) -> Language:
    """Map a language name or alias (any case) to a Language, or say which ones exist."""
    if isinstance(value, Language):
        return value
    if isinstance(value, str):
        found = LANGUAGE_ALIASES.get(value.strip().lower())
        if found is not None:
            return found
    raise ValueError(f"unsupported language {value!r}; supported: {supported_languages_text()}")


LanguageName = Annotated[Language, BeforeValidator(parse_language)]
"""A Language field that also accepts the aliases (node, js, shell, sh, ...)."""
