"""Stateful sessions: a dedicated sandbox per session, owned by one user, reaped when idle.

Session ids are unguessable. A session that is unknown, expired, closed or owned by someone
else is reported the same way (SessionNotFound), so ids of other users cannot be probed.
"""

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from executor.backends.base import Sandbox
from executor.config import ExecutorSettings
from executor.errors import LimitExceeded, SessionNotFound
from schemas.languages import Language
from schemas.network import Network, NetworkGrant
from schemas.sessions import SessionInfo

log = logging.getLogger(__name__)

_ENDED_REMEMBERED = 4096


def _wall(monotonic_t: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=time.monotonic() - monotonic_t)


@dataclass
class Session:
    """One user's sandbox with its interpreter state."""

    session_id: str
    user: str
    language: Language
    sandbox: Sandbox
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    runs: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ended: str | None = None
    """Why the session ended (closed, expired, ...), once it has."""
    network: NetworkGrant = NetworkGrant(Network.NONE)
    """What its runs may reach at most."""
    outputs_seen: dict[str, tuple[datetime, int]] = field(default_factory=dict)
    """Its outputs/ after the last run: a run's result lists what it changed there."""

    def touch(self) -> None:
        """Mark the session as used now."""
        self.last_used = time.monotonic()

    def expires(self, settings: ExecutorSettings) -> float:
        """Monotonic time at which the reaper closes it."""
        return min(
            self.last_used + settings.session_idle_ttl_s,
            self.created + settings.session_max_lifetime_s,
        )

    def info(self, settings: ExecutorSettings) -> SessionInfo:
        """The public view of the session."""
        return SessionInfo(
            session_id=self.session_id,
            language=self.language,
            created_at=_wall(self.created),
            last_used_at=_wall(self.last_used),
            expires_at=_wall(self.expires(settings)),
            runs=self.runs,
            busy=self.lock.locked(),
            network=self.network.level,
            allow_hosts=list(self.network.hosts) if self.network.hosts is not None else None,
        )


class SessionManager:
    """Opens, finds, closes and reaps sessions."""

    def __init__(
        self, settings: ExecutorSettings, acquire: Callable[[Language], Awaitable[Sandbox]]
    ) -> None:
        self._settings = settings
        self._acquire = acquire
        self._sessions: dict[str, Session] = {}
        self._opening: dict[str, int] = {}
        self._ended: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the reaper."""
        self._reaper = asyncio.create_task(self._reap_forever(), name="session-reaper")

    def __len__(self) -> int:
        return len(self._sessions)

    def count_for(self, user: str) -> int:
        """Sessions open (or opening) for a user."""
        open_ = sum(1 for s in self._sessions.values() if s.user == user)
        return open_ + self._opening.get(user, 0)

    async def open(
        self, user: str, language: Language, network: NetworkGrant | None = None
    ) -> Session:
        """A new session for user; LimitExceeded when a cap is reached."""
        settings = self._settings
        if self.count_for(user) >= settings.max_sessions_per_user:
            raise LimitExceeded(
                f"user has {settings.max_sessions_per_user} sessions open, the limit; "
                "close one with close_session or wait for an idle one to expire",
                retry_after=settings.reaper_interval_s,
            )
        if len(self._sessions) + sum(self._opening.values()) >= settings.max_sessions:
            raise LimitExceeded(
                f"the executor has {settings.max_sessions} sessions open, its limit; "
                "retry later or run without a session",
                retry_after=settings.reaper_interval_s,
            )
        self._opening[user] = self._opening.get(user, 0) + 1
        try:
            sandbox = await self._acquire(language)
        finally:
            self._opening[user] -= 1
            if not self._opening[user]:
                del self._opening[user]
        session = Session(
            session_id=f"ses_{secrets.token_urlsafe(24)}",
            user=user,
            language=language,
            sandbox=sandbox,
            network=network or NetworkGrant(Network.NONE),
        )
        self._sessions[session.session_id] = session
        log.info("session %s opened (%s, user %s)", session.session_id[:12], language, user)
        return session

    def get(self, session_id: str, user: str) -> Session:
        """The user's session, or SessionNotFound saying what became of it."""
        session = self._sessions.get(session_id)
        if session is not None and session.user == user:
            return session
        ended = self._ended.get(session_id)
        if ended is not None and ended[0] == user:
            raise SessionNotFound(
                f"session {session_id!r} has ended ({ended[1]}); open a new one with open_session"
            )
        raise SessionNotFound(
            f"session {session_id!r} not found: it may have expired or been closed; "
            "open a new one with open_session"
        )

    @staticmethod
    def ended_error(session: Session) -> SessionNotFound:
        """What a run of a session that ended while it waited or ran gets told."""
        return SessionNotFound(
            f"session {session.session_id!r} has ended ({session.ended}) while this run was in "
            "progress; open a new one with open_session"
        )

    def list_for(self, user: str) -> list[Session]:
        """The user's open sessions."""
        return [s for s in self._sessions.values() if s.user == user]

    async def close(self, session_id: str, user: str, reason: str = "closed") -> None:
        """Close the user's session and kill its sandbox."""
        session = self.get(session_id, user)
        await self._end(session, reason)

    async def _end(self, session: Session, reason: str) -> None:
        if self._sessions.pop(session.session_id, None) is None:
            return
        session.ended = reason
        self._ended[session.session_id] = (session.user, reason)
        while len(self._ended) > _ENDED_REMEMBERED:
            self._ended.popitem(last=False)
        try:
            await session.sandbox.close()
        except Exception:
            log.exception("closing the sandbox of session %s failed", session.session_id[:12])
        log.info("session %s %s", session.session_id[:12], reason)

    async def reap(self) -> int:
        """Close sessions past their idle TTL or maximum lifetime; returns how many."""
        now = time.monotonic()
        settings = self._settings
        doomed: list[tuple[Session, str]] = []
        for session in self._sessions.values():
            if now - session.created > settings.session_max_lifetime_s:
                doomed.append(
                    (
                        session,
                        f"reached its maximum lifetime of {settings.session_max_lifetime_s:g} s",
                    )
                )
            elif (
                not session.lock.locked() and now - session.last_used > settings.session_idle_ttl_s
            ):
                doomed.append((session, f"expired after {settings.session_idle_ttl_s:g} s idle"))
        for session, reason in doomed:
            await self._end(session, reason)
        return len(doomed)

    async def _reap_forever(self) -> None:
        # A flag as well as cancellation: on Python 3.11, asyncio.wait_for (in a sandbox's
        # close) drops a cancel that arrives as what it waits for finishes (CPython gh-86296),
        # and the reaper would then go on for ever while close_all waits for it.
        while not self._closing:
            await asyncio.sleep(self._settings.reaper_interval_s)
            if self._closing:
                return
            try:
                await self.reap()
            except Exception:
                log.exception("session reaper failed")

    async def close_all(self) -> None:
        """Close every session (executor shutdown)."""
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for session in list(self._sessions.values()):
            await self._end(session, "closed at executor shutdown")
