"""An issuer's signing keys (JWKS), fetched with limits and kept.

A JWKS is fetched with a deadline and a size limit (no redirects, no compression), kept five
minutes, fetched again for an unknown key id at most every 30 s, and not at all for 5 s after
a failure; while the issuer is down, the keys last fetched serve for up to an hour.
"""

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import httpx
import jwt

from executor.errors import Unauthorized

log = logging.getLogger(__name__)


class JwksUnavailable(Exception):
    """An issuer's JWKS could not be fetched or read (the message says why)."""


@dataclass
class JwksKeys:
    """The signing keys one JWKS URL serves.

    Fetched with a deadline and a size limit, kept ttl_s, fetched again for an unknown key id
    no more often than every refresh_pause_s (random key ids cannot make this server hammer
    the issuer), and not retried within failure_pause_s of a failure. While the issuer is
    unreachable, the keys last fetched serve for up to max_age_s. fetches counts the tries.
    """

    url: str
    timeout_s: float
    ttl_s: float = 300.0
    refresh_pause_s: float = 30.0
    failure_pause_s: float = 5.0
    max_age_s: float = 3600.0
    max_bytes: int = 256 * 1024
    fetches: int = field(default=0, init=False)
    _keys: dict[str, jwt.PyJWK] = field(default_factory=dict, init=False, repr=False)
    _fetched: float = field(default=-math.inf, init=False)
    _tried: float = field(default=-math.inf, init=False)
    _failure: str | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def cached(self, kid: str) -> jwt.PyJWK | None:
        """The key, when it is known and fresh: no fetch, so callable on the event loop."""
        if time.monotonic() - self._fetched < self.ttl_s:
            return self._keys.get(kid)
        return None

    def key(self, kid: str) -> jwt.PyJWK:
        """The signing key named kid, fetching the set when due (blocks: off the event loop)."""
        with self._lock:
            now = time.monotonic()
            age = now - self._fetched
            due = age >= self.ttl_s or (kid not in self._keys and age >= self.refresh_pause_s)
            if due and (self._failure is None or now - self._tried >= self.failure_pause_s):
                self._tried = now
                try:
                    self._keys, self._fetched, self._failure = self._fetch(), now, None
                except JwksUnavailable as exc:
                    self._failure = str(exc)
                    log.warning("the JWKS at %s could not be fetched: %s", self.url, exc)
                    if age >= self.max_age_s:
                        self._keys = {}
            found = self._keys.get(kid)
            failure = self._failure
        if found is not None:
            return found
        if failure is not None:
            raise Unauthorized(
                f"the authorization server's signing keys could not be fetched from {self.url} "
                f"({failure}); try again in a few seconds, and if it lasts, ask the operator "
                "to check CODE_EXEC_OAUTH_JWKS_URL"
            )
        raise Unauthorized(
            f"invalid token: its key id {kid!r} is not among the signing keys at {self.url}; "
            "get a new token from the authorization server"
        )

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        self.fetches += 1
        deadline = time.monotonic() + self.timeout_s
        body = bytearray()
        try:
            with (
                httpx.Client(timeout=self.timeout_s, follow_redirects=False) as http,
                http.stream("GET", self.url, headers={"Accept-Encoding": "identity"}) as response,
            ):
                if response.status_code != 200:
                    raise JwksUnavailable(f"it answered HTTP {response.status_code}")
                if response.headers.get("content-encoding", "identity") != "identity":
                    raise JwksUnavailable("it answered a compressed body")
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise JwksUnavailable(f"its answer is over {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise JwksUnavailable(f"it took over {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            raise JwksUnavailable(str(exc) or type(exc).__name__) from None
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            keys = jwt.PyJWKSet.from_dict(data).keys
        except (ValueError, RecursionError, jwt.PyJWTError) as exc:
            raise JwksUnavailable(f"its answer is not a JWK set: {exc}") from None
        signing = {k.key_id: k for k in keys if k.key_id and k.public_key_use in ("sig", None)}
        if not signing:
            raise JwksUnavailable("it holds no signing key with a key id (kid)")
        return signing
