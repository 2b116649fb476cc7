"""Bounded capture of output streams."""

from executor.backends.capture import StreamCapture


def test_small_output_is_kept_whole() -> None:
    capture = StreamCapture(1024)
    capture.feed(b"a\nb\n")
    capture.feed(b"c")
    assert capture.text() == "a\nb\nc"
    assert not capture.truncated
    assert capture.total_lines == 3


def test_large_output_keeps_head_and_tail_and_counts_all() -> None:
    capture = StreamCapture(100)
    for i in range(10_000):
        capture.feed(f"line {i}\n".encode())
    assert capture.truncated
    assert capture.total_lines == 10_000
    assert capture.kept_bytes == 100
    text = capture.text()
    assert text.startswith("line 0\n")
    assert text.endswith("line 9999\n")
    assert "bytes dropped" in text


def test_no_multibyte_character_is_split_at_the_cuts() -> None:
    capture = StreamCapture(11)
    capture.feed("€".encode() * 1000)
    text = capture.text()
    assert "\ufffd" not in text
    head, _, tail = text.partition("\n[...")
    assert set(head) == {"€"}
    assert set(tail.split("\n", 1)[1]) == {"€"}


def test_a_wrapper_line_is_removed_with_its_counts() -> None:
    capture = StreamCapture(1024)
    capture.feed(b"warning: x\n__rc=3\n")
    capture.remove_last_line_with(b"__rc=")
    assert capture.text() == "warning: x\n"
    assert capture.total_bytes == len(b"warning: x\n") and capture.total_lines == 1
