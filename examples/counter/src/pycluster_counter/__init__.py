"""The Counter walk-through as a service: ``app: pycluster_counter.service:app``."""

from pycluster_counter.counter import Counter

__all__ = ["Counter"]
