"""The network policy: what a level allows, how a request narrows it, and which addresses a
name may resolve to. Pure logic: no sandbox."""

import pytest

from executor.backends.local.network import NetworkPolicy
from executor.config import ExecutorSettings
from schemas.network import Network, check_allowlist


def test_levels_hold_each_other_in_order() -> None:
    assert Network.ALLOWLIST.covers(Network.PACKAGES)
    assert Network.PACKAGES.covers(Network.NONE)
    assert not Network.NONE.covers(Network.PACKAGES)
    assert not Network.PACKAGES.covers(Network.ALLOWLIST)


def test_none_and_packages_dial_nothing() -> None:
    for level in (Network.NONE, Network.PACKAGES):
        decision = NetworkPolicy(level, ("example.com",)).decide("example.com", 443)
        assert not decision.allowed
    assert "network 'none'" in NetworkPolicy().decide("pypi.org", 443).reason
    assert "package indexes only" in NetworkPolicy(Network.PACKAGES).decide("x.org", 443).reason
    assert NetworkPolicy(Network.PACKAGES).packages and not NetworkPolicy().packages


@pytest.mark.parametrize(
    ("entry", "host", "port", "allowed"),
    [
        ("example.com", "example.com", 443, True),
        ("example.com", "EXAMPLE.com.", 80, True),
        ("example.com", "example.com", 8080, False),  # only 80 and 443 without a port
        ("example.com:8080", "example.com", 8080, True),
        ("example.com:8080", "example.com", 443, False),
        ("example.com", "api.example.com", 443, False),
        ("*.example.com", "api.example.com", 443, True),
        ("*.example.com", "example.com", 443, False),
        ("*.example.com", "evilexample.com", 443, False),
        ("10.1.2.3", "10.1.2.3", 80, True),
    ],
)
def test_allowlist_matches_names_and_ports(entry: str, host: str, port: int, allowed: bool) -> None:
    policy = NetworkPolicy(Network.ALLOWLIST, check_allowlist([entry]))
    decision = policy.decide(host, port)
    assert decision.allowed is allowed
    if not allowed:
        assert "CODE_EXEC_NETWORK_ALLOWLIST" in decision.reason


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "224.0.0.1",
        "0.0.0.0",
        "100.64.0.1",
        "fd00::1",
    ],
)
def test_a_listed_name_cannot_resolve_to_a_private_address(address: str) -> None:
    policy = NetworkPolicy(Network.ALLOWLIST, ("example.com",))
    decision = policy.decide_address("example.com", address)
    assert not decision.allowed
    assert address in decision.reason and "not a public address" in decision.reason


def test_a_listed_address_may_be_dialled_and_public_ones_are() -> None:
    policy = NetworkPolicy(Network.ALLOWLIST, ("10.0.0.5", "example.com"))
    assert policy.decide_address("10.0.0.5", "10.0.0.5").allowed
    assert not policy.decide_address("example.com", "10.0.0.6").allowed
    assert policy.decide_address("example.com", "93.184.215.14").allowed


def test_a_request_narrows_and_never_widens() -> None:
    ceiling = NetworkPolicy(Network.ALLOWLIST, ("*.example.com", "pypi.org"))
    assert ceiling.narrowed(Network.PACKAGES) == NetworkPolicy(Network.PACKAGES)
    assert ceiling.narrowed(None) == ceiling
    narrowed = ceiling.narrowed(Network.ALLOWLIST, ["api.example.com"])
    assert narrowed.hosts == ("api.example.com",)
    with pytest.raises(ValueError, match=r"outside the allowlist in force"):
        ceiling.narrowed(Network.ALLOWLIST, ["evil.com"])
    with pytest.raises(ValueError, match=r"outside"):
        ceiling.narrowed(Network.ALLOWLIST, ["api.example.com:8443"])
    with pytest.raises(ValueError, match=r"above what this executor allows.*'none' or 'packages'"):
        NetworkPolicy(Network.PACKAGES).narrowed(Network.ALLOWLIST)


@pytest.mark.parametrize(
    "entry", ["", "exa mple.com", "example.com:99999", "a..b", "http://x.org", "x.org:port"]
)
def test_bad_allowlist_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="allowlist entry"):
        check_allowlist([entry])


def test_settings_take_a_comma_separated_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODE_EXEC_NETWORK", "allowlist")
    monkeypatch.setenv("CODE_EXEC_NETWORK_ALLOWLIST", "Example.com, *.github.com,10.0.0.1:8080")
    settings = ExecutorSettings()
    assert settings.network is Network.ALLOWLIST
    assert settings.network_allowlist == ["example.com", "*.github.com", "10.0.0.1:8080"]
    monkeypatch.setenv("CODE_EXEC_NETWORK_ALLOWLIST", "not a host")
    with pytest.raises(ValueError, match="not a host name"):
        ExecutorSettings()
