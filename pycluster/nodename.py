"""Node names: ``name@host`` or ``name@host:port``, Erlang style.

The name a node calls itself is the name its peers dial, so the host part is an address
others can reach (a pod IP, a DNS name, ``127.0.0.x`` in the lab). IPv6 hosts are written in
brackets: ``app@[::1]`` or ``app@[fd00::5]:9101``.

Parsing is strict, as names arrive from strangers (gossip datagrams, files, DNS answers):
names are ASCII, a port is one to five digits 0-9 (1 to 65535), and a host is an IP literal
or a DNS name. A host that only looks like a number (``127.1``, ``0x7f.1``,
``999.999.999.999``) is neither: the resolver would read some of them as an address, and a
DNS name's last label is never all-numeric (RFC 1123, RFC 3696).

One node has many written forms. Its :meth:`NodeName.canonical` form, given the port that a
name without one means (the reader's ``node.port``), is what a node compares names in: the
host lowercased (DNS names are case-insensitive; the part before ``@`` is not), an IPv6
host compressed (``[0:0::1]`` is ``[::1]``), and no port when it is that default. Its
:meth:`NodeName.full` form writes the port out, so it means the same to every node whatever
its ``node.port``: the handshake sends and compares names in that form.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?"
)
# Labels the C library's inet_aton() reads as numbers (decimal, octal, hex).
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
_PORT = re.compile(r"[0-9]{1,5}")


DEFAULT_PORT = 9100
"""The cluster port ``node.port`` unless configured: what a name without a port means."""


class NodeNameError(ValueError):
    """A string that is not a valid node name; the message says why."""


@attrs.frozen(order=True)
class NodeName:
    """A parsed node name. ``port`` is None when the name leaves it to ``node.port``."""

    name: str
    host: str
    port: int | None = None

    @property
    def is_ip(self) -> bool:
        """True when the host is an IP literal (then the node binds and dials from it)."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def canonical(self, default_port: int) -> NodeName:
        """This node's name as nodes compare it, where a name without a port means
        ``default_port``: host lowercased, an IPv6 host compressed, and no port when it is
        ``default_port``. Every written form of one node has the same canonical form."""
        port = None if self.port == default_port else self.port
        return NodeName(self.name, _canonical_host(self.host), port)

    def full(self, default_port: int) -> NodeName:
        """Like :meth:`canonical`, but with the port always written out (``default_port``
        when the name has none): the same for readers with any default port."""
        return NodeName(self.name, _canonical_host(self.host), self.port or default_port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}@{host}" if self.port is None else f"{self.name}@{host}:{self.port}"


def parse_node_name(text: str) -> NodeName:
    """Parse ``name@host`` / ``name@host:port`` / ``name@[v6]:port``.

    Raises NodeNameError, saying why, for any other text, and never another exception.
    """
    name, sep, rest = text.partition("@")
    if not sep:
        raise NodeNameError("no '@' between name and host")
    if not _NAME.fullmatch(name):
        raise NodeNameError(
            "the part before '@' must be letters, digits, '_', '-' or '.', "
            "starting with a letter, digit or '_'"
        )
    port_text: str | None = None
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket:
            raise NodeNameError("missing ']' after an IPv6 host")
        if "%" in host:
            # A zone names an interface of one host; peers dialling the name have others.
            raise NodeNameError(f"{host!r}: an IPv6 host cannot carry a zone ('%...')")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise NodeNameError(f"{host!r} in brackets is not an IPv6 address") from None
        if tail:
            if not tail.startswith(":"):
                raise NodeNameError("expected ':port' after ']'")
            port_text = tail[1:]
    else:
        if rest.count(":") > 1:
            raise NodeNameError("write an IPv6 host in brackets, e.g. app@[::1]:9101")
        host, colon, port_part = rest.partition(":")
        if colon:
            port_text = port_part
        if not host:
            raise NodeNameError("the host after '@' is empty")
        if not _is_ipv4(host):
            _check_host_name(host)
    port: int | None = None
    if port_text is not None:
        # Not str.isdigit(): it takes '²' (which int() refuses) and '٩١٠٠' (which it reads).
        if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise NodeNameError(f"port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return NodeName(name, host, port)


def _check_host_name(host: str) -> None:
    if not _HOSTNAME.fullmatch(host):
        raise NodeNameError(f"{host!r} is not a valid host name or IPv4 address")
    labels = host.removesuffix(".").split(".")
    if all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        raise NodeNameError(
            f"{host!r} looks like an IPv4 address but is not one: write four numbers from 0 "
            "to 255 without leading zeros, e.g. 10.0.0.5"
        )
    if labels[-1].isdigit():
        raise NodeNameError(f"{host!r} is not a host name: its last label is all digits")


def _canonical_host(host: str) -> str:
    if ":" in host:
        return str(ipaddress.IPv6Address(host))
    return host.lower()


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True
