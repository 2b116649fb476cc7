"""What a request may ask of the executor: code and file sizes, timeout, token budget.

A request that passes becomes a RunPlan: the numbers the run and its shaping use.
"""

from dataclasses import dataclass

import tiktoken

from executor.config import ExecutorSettings
from executor.core.tokens import get_encoding
from executor.errors import InvalidRequest, PayloadTooLarge
from schemas.execution import ExecuteRequest, file_bytes


@dataclass(frozen=True)
class RunPlan:
    """A request checked against the limits: how long it may run, how much it may say."""

    timeout: float
    budget_tokens: int
    encoding: tiktoken.Encoding


def admit(request: ExecuteRequest, settings: ExecutorSettings) -> RunPlan:
    """The plan of a request, or the error that says which limit it is over."""
    size = len(request.code.encode("utf-8", errors="surrogatepass"))
    if size > settings.max_code_bytes:
        raise PayloadTooLarge(
            f"code is {size} bytes, above the limit of {settings.max_code_bytes} bytes; "
            "send large data as a file instead"
        )
    files_size = sum(len(file_bytes(c)) for c in (request.files or {}).values())
    if files_size > settings.max_file_bytes:
        raise PayloadTooLarge(
            f"files total {files_size} bytes, above the limit of {settings.max_file_bytes}"
        )
    timeout = request.timeout if request.timeout is not None else settings.default_timeout_s
    if timeout > settings.max_timeout_s:
        raise InvalidRequest(
            f"timeout {timeout:g} s is above the limit of {settings.max_timeout_s:g} s"
        )
    tokens = request.max_output_tokens or settings.default_output_tokens
    if tokens > settings.max_output_tokens:
        raise InvalidRequest(
            f"max_output_tokens {tokens} is above the limit of {settings.max_output_tokens}"
        )
    if tokens < settings.min_output_tokens:
        raise InvalidRequest(
            f"max_output_tokens {tokens} is below the minimum of {settings.min_output_tokens}"
        )
    return RunPlan(timeout, tokens, get_encoding(request.token_encoding))
