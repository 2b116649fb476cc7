"""What a sandbox may reach through the egress proxy: the operator's ceiling, a run's narrowing,
and the decision for each destination.

The sandbox itself has no network (its own loopback only); egress.py serves a proxy on that
loopback and asks this module, for every connection, whether the run may make it. Hosts are
matched by name as the client wrote them (CONNECT carries the name, no TLS is intercepted);
after the proxy resolves a name, an address that is not public (loopback, private, link-local
such as a cloud's metadata service, multicast) is refused unless the operator listed that very
address: a name in the allowlist cannot be pointed at the host's own services.
"""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.network import Network, entry_covers, narrow_hosts, split_entry


@dataclass(frozen=True)
class Decision:
    """Whether a connection may be made, and the reason a refusal gives the code."""

    allowed: bool
    reason: str


@dataclass(frozen=True)
class NetworkPolicy:
    """The network a run gets: a level, and for ALLOWLIST the hosts (entries of
    check_allowlist)."""

    level: Network = Network.NONE
    hosts: tuple[str, ...] = ()

    @property
    def packages(self) -> bool:
        """Whether the package indexes are reachable (through the executor's mirror)."""
        return self.level.covers(Network.PACKAGES)

    def narrowed(
        self, level: Network | None, hosts: Iterable[str] | None = None
    ) -> "NetworkPolicy":
        """This policy as a request narrows it; ValueError when the request asks for more."""
        level = self.level if level is None else level
        if not self.level.covers(level):
            raise ValueError(
                f"network {level.value!r} is above what this executor allows "
                f"({self.level.value!r}); ask for {self._levels_text()}"
            )
        if level is not Network.ALLOWLIST:
            return NetworkPolicy(level)
        if hosts is None:
            return NetworkPolicy(level, self.hosts)
        asked = narrow_hosts(self.hosts, hosts)
        return NetworkPolicy(level, asked)

    def _levels_text(self) -> str:
        return " or ".join(repr(level.value) for level in Network if self.level.covers(level))

    def decide(self, host: str, port: int) -> Decision:
        """Whether the code may open a connection to host:port (as the client named it)."""
        host = host.lower().rstrip(".")
        if self.level is Network.NONE:
            return Decision(False, "this run has no network (network 'none')")
        if self.level is Network.PACKAGES:
            return Decision(
                False,
                f"{host} is not reachable: this run's network is 'packages', which reaches the "
                "package indexes only, through pip and npm as they are set up in the sandbox",
            )
        if any(entry_covers(entry, f"{host}:{port}") for entry in self.hosts):
            return Decision(True, "in the allowlist")
        return Decision(
            False,
            f"{host}:{port} is not in this run's network allowlist "
            f"({', '.join(self.hosts) or 'empty'}); the operator sets CODE_EXEC_NETWORK_ALLOWLIST",
        )

    def decide_address(self, host: str, address: str) -> Decision:
        """Whether the address a name resolved to may be dialled: public ones, and any the
        allowlist names itself."""
        ip = ipaddress.ip_address(address)
        if ip.is_global and not ip.is_multicast:
            return Decision(True, "a public address")
        if any(split_entry(entry)[0] == str(ip) for entry in self.hosts):
            return Decision(True, "an address the allowlist names")
        return Decision(
            False,
            f"{host} resolves to {address}, which is not a public address; only the operator "
            "can allow it, by listing the address itself",
        )

    def report(self) -> dict[str, object]:
        """As /health shows it."""
        return {"level": self.level.value, "allowlist": list(self.hosts)}
