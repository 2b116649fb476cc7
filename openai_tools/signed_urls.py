"""Signed download URLs: a run's file, fetched without a bearer token until the URL expires.

For handing a file to a browser (a link in a chat page), which cannot send Authorization. A
signed URL is the file's download URL plus `?signature=<JWT>`: HS256 with a key of its own
(CODE_EXEC_URL_SIGNING_KEY, or one made once and kept in the state dir), audience
DOWNLOAD_AUDIENCE, naming the user, the execution and the file. Login tokens have another key
and another audience, so neither kind stands in for the other; only the download route reads a
signature (deps.download_user), and it serves only the one file the signature names.
"""

import logging
import time
from datetime import UTC, datetime
from urllib.parse import quote

import jwt
from fastapi import Request
from pydantic import BaseModel, Field

from executor.errors import Forbidden, InvalidRequest
from openai_tools.config import ApiSettings
from openai_tools.dev_secret import URL_KEY_FILE, kept_secret, kept_secret_path

log = logging.getLogger(__name__)

DOWNLOAD_AUDIENCE = "code-exec-download"
SIGNATURE_PARAM = "signature"


class SignedUrl(BaseModel):
    """A URL that downloads one file without a token, and when it stops working."""

    url: str = Field(description="The download URL with its signature; no token needed.")
    expires_at: datetime = Field(description="When the URL stops working (UTC).")


def lifetime(seconds: int) -> str:
    """A duration as a person reads it: 5 minutes, 1 hour, 90 seconds."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def public_base(request: Request, settings: ApiSettings) -> str:
    """The origin links are made with, ending in '/': CODE_EXEC_PUBLIC_URL, else the request's."""
    return settings.public_url + "/" if settings.public_url else str(request.base_url)


def file_path(execution_id: str, name: str) -> str:
    """The download path of a kept file (image-0.png, outputs/report.csv), URL-encoded."""
    return f"v1/executions/{quote(execution_id, safe='')}/files/{quote(name)}"


class UrlSigner:
    """Signs download URLs of one user's file, and checks the signature of a download."""

    def __init__(self, key: str, issuer: str, ttl_s: int, max_ttl_s: int) -> None:
        self._key = key
        self.issuer = issuer
        self.ttl_s = ttl_s
        self.max_ttl_s = max_ttl_s

    @classmethod
    def of(cls, settings: ApiSettings) -> "UrlSigner":
        """The signer of these settings: their key, or the one kept in the state dir."""
        if settings.url_signing_key is not None:
            key = settings.url_signing_key.get_secret_value()
        else:
            key = kept_secret(
                settings.state_dir, URL_KEY_FILE, "the URL signing key", "CODE_EXEC_URL_SIGNING_KEY"
            )
            # Said, because a second replica would make a key of its own and refuse this one's.
            log.info(
                "download URLs are signed with the key kept in %s; API replicas must share one: "
                "set CODE_EXEC_URL_SIGNING_KEY on each",
                kept_secret_path(settings.state_dir, URL_KEY_FILE),
            )
        return cls(
            key, settings.jwt_issuer, settings.download_url_ttl_s, settings.max_download_url_ttl_s
        )

    def ttl(self, ttl_s: int | None) -> int:
        """The seconds a URL asked for ttl_s works: the default, or InvalidRequest over the max."""
        ttl = ttl_s or self.ttl_s
        if ttl > self.max_ttl_s:
            raise InvalidRequest(
                f"ttl_s {ttl} is above the limit of {self.max_ttl_s} s: ask for at most "
                f"{self.max_ttl_s}, or download with your bearer token, which has no such limit"
            )
        return ttl

    def url(
        self, base: str, execution_id: str, name: str, user: str, ttl_s: int | None = None
    ) -> SignedUrl:
        """A URL under base that downloads the file `name` of the execution for anyone holding
        it, for ttl_s seconds (default download_url_ttl_s; InvalidRequest above the maximum)."""
        ttl = self.ttl(ttl_s)
        now = int(time.time())
        claims = {
            "sub": user,
            "aud": DOWNLOAD_AUDIENCE,
            "iss": self.issuer,
            "iat": now,
            "exp": now + ttl,
            "exe": execution_id,
            "file": name,
        }
        token = jwt.encode(claims, self._key, algorithm="HS256")
        return SignedUrl(
            url=f"{base}{file_path(execution_id, name)}?{SIGNATURE_PARAM}={token}",
            expires_at=datetime.fromtimestamp(now + ttl, UTC),
        )

    def verify(self, token: str, execution_id: str, name: str) -> str:
        """The user a signature of this very file was made for, or Forbidden saying what to do."""
        again = (
            f"ask for a new URL (POST /{file_path(execution_id, name)}/url with your bearer "
            "token), or download with the token itself"
        )
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=DOWNLOAD_AUDIENCE,
                issuer=self.issuer,
                options={"require": ["exp", "sub", "aud", "iss", "exe", "file"]},
            )
        except jwt.ExpiredSignatureError:
            raise Forbidden(f"this download URL has expired; {again}") from None
        except jwt.PyJWTError:
            raise Forbidden(f"this download URL's signature is not valid; {again}") from None
        if claims["exe"] != execution_id or claims["file"] != name:
            raise Forbidden(f"this download URL's signature is for another file; {again}")
        user = claims["sub"]
        if not isinstance(user, str) or not user:
            raise Forbidden(f"this download URL's signature names no user; {again}")
        return user
