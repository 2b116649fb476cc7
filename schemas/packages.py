"""Packages a run or a session asks to have installed: pip requirements for Python, npm
package specs for JavaScript; names and versions only."""

import re
from typing import Annotated

from pydantic import AfterValidator

MAX_PACKAGES = 20
_MAX_SPEC = 100
# pip: name[extras] with optional version clauses (scipy, pandas[excel]>=2,<3, numpy==2.1.*);
# npm: [@scope/]name with an optional @version or range (lodash, @types/node@20, zod@^3).
# No URL, path, whitespace or leading '-': a spec never becomes an option or a source.
_PIP = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
    r"(?:\[[A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*\])?"
    r"(?:(?:===|==|!=|~=|<=|>=|<|>)[A-Za-z0-9.*+!_-]+(?:,(?:===|==|!=|~=|<=|>=|<|>)[A-Za-z0-9.*+!_-]+)*)?$"
)
_NPM = re.compile(
    r"^(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*(?:@[A-Za-z0-9.^~<>=|*+_-]+)?$"
)


def check_package_spec(spec: str) -> str:
    """spec, if it is a pip requirement or an npm spec of names and versions only."""
    if len(spec) > _MAX_SPEC or not (_PIP.match(spec) or _NPM.match(spec)):
        raise ValueError(
            f"package {spec[:60]!r} is not a package name with an optional version, such as "
            "'scipy', 'pandas>=2.2', 'numpy==2.1.*' (pip) or 'lodash', 'zod@^3', "
            "'@types/node@20' (npm); URLs, paths and options are not accepted"
        )
    return spec


def is_pip_spec(spec: str) -> bool:
    """Whether spec reads as a pip requirement."""
    return _PIP.match(spec) is not None


def is_npm_spec(spec: str) -> bool:
    """Whether spec reads as an npm package spec."""
    return _NPM.match(spec) is not None


PackageSpec = Annotated[str, AfterValidator(check_package_spec)]


def check_package_list(specs: list[str] | None) -> list[str] | None:
    """At most MAX_PACKAGES (checked here, not in the schema: every tool listing would carry a
    maxItems)."""
    if specs is not None and len(specs) > MAX_PACKAGES:
        raise ValueError(f"at most {MAX_PACKAGES} packages at once; install the rest in a run")
    return specs


PackageList = Annotated[list[PackageSpec] | None, AfterValidator(check_package_list)]
