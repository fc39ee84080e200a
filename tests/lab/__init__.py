"""The cluster test lab: real node processes on their own loopback addresses, and faults.

A :class:`Lab` declares nodes (a YAML config each, in the test's ``tmp_path``), starts
them as ``python -m pycluster run CONFIG`` processes on 127.0.S.2, 127.0.S.3, ... (S picked
per lab), watches them through their HTTP endpoints and logs, and injects faults: signals
(kill -9, SIGTERM, SIGSTOP/SIGCONT) and partitions between two addresses with iptables.
:class:`RawPeer` speaks, or abuses, the wire protocol by hand. Everything a lab started is
stopped when it closes, and its firewall rules are removed, even when the test failed.
``tests.lab.browser`` drives Debian's chromium (through Playwright) for the live page's
tests, and ``python -m tests.lab.screenshots`` makes the page's screenshots in docs/.
"""

from tests.lab.firewall import Firewall, firewall_available
from tests.lab.lab import Lab
from tests.lab.node import LabNode, NodeEvent
from tests.lab.raw import RawPeer

__all__ = ["Firewall", "Lab", "LabNode", "NodeEvent", "RawPeer", "firewall_available"]
