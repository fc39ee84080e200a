"""Hypothesis strategies shared by the tests (one place, as the style guide asks)."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

base_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,15}", fullmatch=True)
ipv4_hosts = st.ip_addresses(v=4).map(str)
ipv6_hosts = st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a)))
_labels = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?", fullmatch=True)
# The last label starts with a letter: a DNS name's last label is never all-numeric (RFC
# 3696), and hosts like 127.1 or 0x7f.1 are refused as look-alikes of addresses.
dns_hosts = st.tuples(
    st.lists(_labels, max_size=3),
    st.from_regex(r"[a-z]([a-z0-9\-]{0,10}[a-z0-9])?", fullmatch=True),
).map(lambda parts: ".".join([*parts[0], parts[1]]))
ports = st.integers(min_value=1, max_value=65535)


@st.composite
def node_names(draw: st.DrawFn) -> str:
    """A valid node name in any of its written forms."""
    name = draw(base_names)
    port = draw(st.none() | ports)
    host = f"[{draw(ipv6_hosts)}]" if draw(st.booleans()) else draw(ipv4_hosts | dns_hosts)
    return f"{name}@{host}" if port is None else f"{name}@{host}:{port}"


small_node_sets = st.frozensets(st.sampled_from([f"n{i}@127.0.0.{i + 2}" for i in range(8)]))


# -- node names, strictly (nodename.py refuses hosts that only look like numbers) -----------

# Pieces of node names, and what attacks used against them: digits of other scripts ('²'
# passes str.isdigit() but not int(); '٩' passes both), signs, blanks, hex and short IPv4.
_NAME_PIECES = st.sampled_from(
    [
        *("a", "app", "n1", "_", "-", ".", "@", ":", "[", "]", "%", "::", "::1", "fd00::5"),
        *("127", "0", "1", "255", "999", "0x7f", "0X1", "9100", "65535", "65536", "00080"),
        *("localhost", "example.com", "1.2.3.4", "127.1", "lo", "eth0"),
        *("+", " ", "\t", "\n", "\x00", "\u00b2", "\u0669\u0661\u0660\u0660", "\u00e9"),
    ]
)


@st.composite
def node_name_texts(draw: st.DrawFn) -> str:
    """Any text, often close to a node name: valid ones, pieces glued together, and
    valid ones with a piece inserted or replacing a few characters."""
    kind = draw(st.sampled_from(["text", "pieces", "mutated"]))
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "pieces":
        return "".join(draw(st.lists(_NAME_PIECES | st.text(max_size=3), max_size=10)))
    text = draw(node_names())
    at = draw(st.integers(0, len(text)))
    cut = draw(st.integers(0, 3))
    return text[:at] + draw(_NAME_PIECES | st.characters()) + text[at + cut :]


# -- integers on the wire (msgpack carries -2**63 .. 2**64 - 1) -------------------------------

WIRE_INTEGER_EDGES = [-(2**63), -1, 0, 1, 2**31, 2**32, 2**32 + 1, 2**63 - 1, 2**63, 2**64 - 1]
wire_integers = st.sampled_from(WIRE_INTEGER_EDGES) | st.integers(-(2**63), 2**64 - 1)
"""Any integer a peer can send, its edges often."""

# -- config documents: interpolation, and YAML that tries to exhaust the loader ----------

env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)


def _large_first(low: int, high: int) -> st.SearchStrategy[int]:
    """An integer from low to high, drawn (and shrunk) large-first: hypothesis favours small."""
    return st.integers(0, high - low).map(lambda n: high - n)


@st.composite
def alias_documents(draw: st.DrawFn) -> str:
    """A YAML mapping of anchored flow lists and mappings whose items are plain scalars or
    aliases of earlier ones: a few hundred bytes, often over 10,000 values once expanded."""
    lines = []
    for i in range(draw(_large_first(1, 8))):
        # Mostly aliases, mostly of the latest anchors: the ones that multiply.
        items = [
            f"*a{i - 1 - draw(st.integers(0, i - 1))}" if i and draw(_large_first(0, 3)) else "x"
            for _ in range(draw(_large_first(0, 12)))
        ]
        if draw(st.booleans()):
            body = "[" + ", ".join(items) + "]"
        else:
            body = "{" + ", ".join(f"k{j}: {item}" for j, item in enumerate(items)) + "}"
        lines.append(f"v{i}: &a{i} {body}")
    return "\n".join(lines) + "\n"


nestings = st.sampled_from(
    [
        lambda n: "[" * n + "]" * n,  # flow lists
        lambda n: "{a: " * n + "x" + "}" * n,  # flow mappings
        lambda n: "- " * n + "x",  # block lists
    ]
)
"""Functions writing ``n`` mappings or lists nested in one another as YAML."""


# -- written forms of one node name (nodename.py's canonical form) ----------------------------


@st.composite
def _ipv6_forms(draw: st.DrawFn, address: str) -> str:
    """``address`` in any notation: each group in either case, with or without leading
    zeros, and a run of zero groups (one or more) written ``::`` or not."""
    groups = [int(group, 16) for group in ipaddress.IPv6Address(address).exploded.split(":")]
    written = []
    for group in groups:
        text = format(group, "04x" if draw(st.booleans()) else "x")
        written.append(text.upper() if draw(st.booleans()) else text)
    zero_runs = [
        (start, end)
        for start in range(8)
        for end in range(start + 1, 9)
        if all(group == 0 for group in groups[start:end])
    ]
    if zero_runs and draw(st.booleans()):
        start, end = draw(st.sampled_from(zero_runs))
        return ":".join(written[:start]) + "::" + ":".join(written[end:])
    return ":".join(written)


@st.composite
def written_forms(draw: st.DrawFn, text: str, default_port: int) -> str:
    """Another written form of node name ``text``, for nodes whose ``node.port`` is
    ``default_port``: the same part before '@', the host in any case (a DNS name) or IPv6
    notation, and the port left out or written out when it is ``default_port``."""
    name, _, rest = text.partition("@")
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = int(tail[1:]) if tail else None
        host = f"[{draw(_ipv6_forms(host))}]"
    else:
        host, _, port_text = rest.partition(":")
        port = int(port_text) if port_text else None
        host = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in host)
    if port in (None, default_port):
        port = draw(st.sampled_from([None, default_port]))
    return f"{name}@{host}" if port is None else f"{name}@{host}:{port}"


# Names that attacks announced: '²' passes str.isdigit() but not int(), int() reads '٩١٠٠'
# as 9100, and the C library reads the next three as addresses (a node would dial them).
BAD_NODE_NAMES = [
    "x@h:\u00b2",
    "x@h:\u0669\u0661\u0660\u0660",
    "x@127.1",
    "x@0x7f.1",
    "x@999.999.999.999",
    "x@h:+80",
    "no at sign",
]
