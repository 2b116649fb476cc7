"""Stateful sessions: a dedicated sandbox whose interpreter state persists across runs."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.file_uris import InputList
from schemas.languages import Language, LanguageName
from schemas.network import Network
from schemas.packages import PackageList


class SessionOptions(BaseModel):
    """What a session opens with besides its language: its packages and its network."""

    model_config = ConfigDict(extra="forbid")

    packages: PackageList = Field(
        default=None,
        description="Packages to install when the session opens (pip for python, npm for "
        "javascript); the network must include packages.",
    )
    network: Network | None = Field(
        default=None,
        description="The session's network (none, packages, allowlist); the executor's "
        "setting when omitted. Its runs can only narrow it.",
    )
    allow_hosts: list[str] | None = Field(
        default=None,
        max_length=64,
        description="With network allowlist: only these of the executor's hosts.",
    )
    inputs: InputList = Field(
        default=None,
        description="Files to place in the workspace first, by URI: an earlier run's output "
        "(under its name) or another session's file (under its path).",
    )


class OpenSessionRequest(SessionOptions):
    """Open a session for one language."""

    language: LanguageName = Field(
        default=Language.PYTHON,
        description="Language of the session's interpreter: python, javascript, bash or c.",
    )


class SessionInfo(BaseModel):
    """What a session is and how long it will live."""

    session_id: str
    language: Language
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime = Field(
        description="When the session closes if it stays idle (or reaches its maximum lifetime)."
    )
    runs: int = Field(default=0, description="Runs executed in this session so far.")
    network: Network = Field(default=Network.NONE, description="What its runs may reach.")
    allow_hosts: list[str] | None = Field(
        default=None, description="The hosts of its allowlist, when it narrows the executor's."
    )
    busy: bool = Field(default=False, description="Whether a run is in progress now.")


class CloseSessionResult(BaseModel):
    """What closing a session did."""

    session_id: str
    closed: bool
