"""What a run's code may reach beyond its sandbox: the levels an operator allows and a request
may narrow to."""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Network(StrEnum):
    """Network access of a run, narrowest first: each level holds what the one before it does."""

    NONE = "none"  # the sandbox's own loopback, nothing else
    PACKAGES = "packages"  # also the operator's package indexes, through the executor's cache
    ALLOWLIST = "allowlist"  # also the hosts the operator lists

    def covers(self, other: "Network") -> bool:
        """Whether this level allows all that other does."""
        order = list(Network)
        return order.index(self) >= order.index(other)


def split_entry(entry: str) -> tuple[str, int | None]:
    """'host', 'host:port', '[v6]:port' or '*.suffix' into (host, port or None)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_allowlist(entries: Iterable[str]) -> tuple[str, ...]:
    """The entries normalised; ValueError names the first that is not a host, *.domain or IP,
    with an optional :port."""
    checked = []
    for entry in entries:
        try:
            host, port = split_entry(entry)
        except ValueError:
            raise ValueError(
                f"network allowlist entry {entry!r}: the port is not a number"
            ) from None
        name = host.removeprefix("*.")
        valid = _is_address(host) or (
            name and all(part and part.replace("-", "").isalnum() for part in name.split("."))
        )
        if not valid or (port is not None and not 0 < port < 65536):
            raise ValueError(
                f"network allowlist entry {entry!r} is not a host name, '*.domain' or an IP "
                "address (with an optional :port)"
            )
        checked.append(f"{host}:{port}" if port is not None else host)
    return tuple(checked)


# Ports a listed name may be reached on when its entry names none.
DEFAULT_PORTS = frozenset({80, 443})


def entry_covers(entry: str, target: str) -> bool:
    """Whether an allowlist entry covers target ('host' or 'host:port'; a port-less target
    stands for any port the entry allows)."""
    host, port = split_entry(entry)
    target_host, target_port = split_entry(target)
    if host.startswith("*."):
        name_ok = target_host.endswith(host[1:])
    else:
        name_ok = target_host == host
    if not name_ok:
        return False
    if target_port is None:
        return True
    return target_port == port if port is not None else target_port in DEFAULT_PORTS


def narrow_hosts(bound: Iterable[str], asked: Iterable[str]) -> tuple[str, ...]:
    """asked (checked), if every entry of it is within bound; ValueError says which is not."""
    bound = tuple(bound)
    checked = check_allowlist(asked)
    outside = [host for host in checked if not any(entry_covers(own, host) for own in bound)]
    if outside:
        raise ValueError(
            f"hosts {', '.join(outside)} are outside the allowlist in force "
            f"({', '.join(bound) or 'empty'}); a request can only narrow it"
        )
    return checked


@dataclass(frozen=True)
class NetworkGrant:
    """The network one run gets: a level and, for ALLOWLIST, the hosts (None: the operator's
    whole allowlist)."""

    level: Network
    hosts: tuple[str, ...] | None = None
