"""Strings from outside, checked before anything uses them.

JSON can carry a lone surrogate ("\\ud800"), which no UTF-8 encoder accepts: every text a
request brings is checked here, so that it fails as a 422 that says so, not as a 500 deep
inside (encoding bash code, a file name, an HTTP header).
"""

import re
from typing import Annotated

from pydantic import AfterValidator

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(value: str) -> str:
    """The text, or a ValueError when it holds a lone surrogate (not valid Unicode)."""
    found = _SURROGATE.search(value)
    if found is not None:
        raise ValueError(
            f"contains a lone surrogate (U+{ord(found.group()):04X}) at character "
            f"{found.start()}, which is not valid Unicode; send UTF-8 text"
        )
    return value


Text = Annotated[str, AfterValidator(check_text)]
"""A string that is valid Unicode (encodable as UTF-8)."""
