"""Results cut to a token budget: exact budget, priorities, markers, shapes."""

import random

import pytest

from executor.core.tokens import get_encoding
from executor.core.truncation import Budget, fit_result
from schemas.execution import ExecuteResult, ExecutionError
from schemas.languages import Language
from schemas.render import render_result


def _where(part: str, first_line: int) -> str:
    return f"GET /executions/exe_test/output?stream={part}&offset={first_line - 1}"


def _result(
    stdout: str = "",
    stderr: str = "",
    error: ExecutionError | None = None,
    value: str | None = None,
) -> ExecuteResult:
    return ExecuteResult(
        execution_id="exe_test",
        language=Language.PYTHON,
        stdout=stdout,
        stderr=stderr,
        exit_code=1 if error else 0,
        error=error,
        value=value,
        duration_ms=1,
    )


def _traceback(depth: int) -> ExecutionError:
    lines = ["Traceback (most recent call last):"]
    lines += ['  File "<cell-1>", line 5, in <module>', "    main()"]
    for i in range(depth):
        lines += [
            f'  File "<cell-1>", line 2, in recurse_{i}',
            f"    return recurse_{i + 1}(n - 1)",
        ]
    lines += ['  File "<cell-1>", line 3, in leaf', "    raise ValueError('the real cause')"]
    lines += ["ValueError: the real cause"]
    return ExecutionError(name="ValueError", value="the real cause", traceback="\n".join(lines))


rng = random.Random(7)
TEXTS = {
    "lines": "".join(f"line {i}: value={i * i}\n" for i in range(20_000)),
    "unicode": "Ünïcødé “quotes” — ÆØÅ\n" * 3000,
    "emoji": "😀🎉👩‍👩‍👧 " * 8000,
    "cjk": "日本語のテキストと中文字符，还有한국어。" * 4000,
    "one long line": "abcdefghij" * 50_000,
    "binary garbage": bytes(rng.randrange(256) for _ in range(60_000)).decode(
        "utf-8", errors="replace"
    ),
    "empty": "",
}


# A few texts in the default encoding in the fast tier; the whole matrix in the slow one.
FAST = {("o200k_base", "lines"), ("o200k_base", "cjk"), ("o200k_base", "empty")}
CASES = [
    pytest.param(
        encoding,
        name,
        id=f"{name}-{encoding}",
        marks=() if (encoding, name) in FAST else pytest.mark.slow,
    )
    for name in TEXTS
    for encoding in ("o200k_base", "cl100k_base")
]


@pytest.mark.parametrize(("encoding_name", "text_name"), CASES)
def test_the_rendered_result_never_exceeds_the_budget(encoding_name: str, text_name: str) -> None:
    encoding = get_encoding(encoding_name)
    text = TEXTS[text_name]
    for budget_tokens in (100, 137, 300, 1000, 2000, 8000):
        for result in (
            _result(stdout=text),
            _result(stdout=text, stderr=text[: len(text) // 3]),
            _result(stdout=text, stderr=text, error=_traceback(300)),
            _result(stdout=text, value=text[:5000]),
        ):
            fitted, _ = fit_result(result, Budget(budget_tokens, encoding, _where))
            rendered = render_result(fitted)
            assert len(encoding.encode_ordinary(rendered)) <= budget_tokens, (
                text_name,
                budget_tokens,
            )
            assert "\ufffd" not in rendered or "\ufffd" in text, "a character was split"


def test_a_small_result_is_untouched() -> None:
    result = _result(stdout="hello\n", stderr="warning\n", value="42")
    fitted, cut = fit_result(result, Budget(2000, get_encoding(), _where))
    assert not cut
    assert fitted == result


def test_head_tail_and_one_marker_line() -> None:
    encoding = get_encoding()
    result = _result(stdout=TEXTS["lines"])
    fitted, cut = fit_result(result, Budget(500, encoding, _where))
    assert cut
    assert fitted.stdout.startswith("line 0: value=0\n")
    assert fitted.stdout.rstrip("\n").endswith("line 19999: value=399960001")
    markers = [line for line in fitted.stdout.splitlines() if line.startswith("[...")]
    assert len(markers) == 1
    marker = markers[0]
    assert "lines" in marker and "tokens) of stdout cut here" in marker
    first_dropped = int(marker.split("offset=")[1].split(" ")[0]) + 1
    # The marker's line numbers point at the first line that is not shown.
    shown_head = fitted.stdout.split(marker)[0].splitlines()
    assert shown_head[-1] == f"line {first_dropped - 2}: value={(first_dropped - 2) ** 2}"
    dropped_lines = int(marker.split("[... ")[1].split(" lines")[0])
    shown_tail = fitted.stdout.split(marker)[1].strip("\n").splitlines()
    assert len(shown_head) + dropped_lines + len(shown_tail) == 20_000


def test_the_error_has_priority_over_the_streams() -> None:
    encoding = get_encoding()
    result = _result(stdout=TEXTS["lines"], stderr=TEXTS["lines"], error=_traceback(3))
    fitted, _ = fit_result(result, Budget(400, encoding, _where))
    assert fitted.error is not None
    assert fitted.error.traceback == result.error.traceback  # type: ignore[union-attr]
    assert "ValueError: the real cause" in render_result(fitted)


def test_stderr_gets_its_share_when_stdout_is_huge() -> None:
    encoding = get_encoding()
    stderr = "RuntimeWarning: something worth seeing\n"
    fitted, _ = fit_result(
        _result(stdout=TEXTS["lines"], stderr=stderr), Budget(300, encoding, _where)
    )
    assert fitted.stderr == stderr


def test_a_deep_traceback_keeps_first_frame_last_frames_and_exception() -> None:
    encoding = get_encoding()
    result = _result(error=_traceback(500))
    fitted, cut = fit_result(result, Budget(300, encoding, _where))
    assert cut and fitted.error is not None
    lines = fitted.error.traceback.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1] == '  File "<cell-1>", line 5, in <module>'
    assert lines[3].startswith("[... ") and "of traceback cut here" in lines[3]
    assert lines[-3:] == [
        '  File "<cell-1>", line 3, in leaf',
        "    raise ValueError('the real cause')",
        "ValueError: the real cause",
    ]


def test_one_huge_line_is_cut_without_splitting_characters() -> None:
    encoding = get_encoding()
    text = TEXTS["emoji"].replace(" ", "")
    fitted, cut = fit_result(_result(stdout=text), Budget(200, encoding, _where))
    assert cut
    head, _, tail = fitted.stdout.partition("\n[...")
    assert head and set(head) <= set(text)
    assert set(tail.split("\n", 1)[1]) <= set(text)


def test_the_budget_cannot_be_met_only_below_the_minimum() -> None:
    encoding = get_encoding()
    huge = _result(
        stdout=TEXTS["lines"], stderr=TEXTS["cjk"], error=_traceback(100), value="v" * 9000
    )
    fitted, cut = fit_result(huge, Budget(100, encoding, _where))
    assert cut
    assert len(encoding.encode_ordinary(render_result(fitted))) <= 100
    assert "ValueError" in render_result(fitted)
