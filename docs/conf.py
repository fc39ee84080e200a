"""Sphinx configuration of the pycluster user documentation."""

from __future__ import annotations

import sys
from pathlib import Path

from pycluster import __version__

# The local extension that renders the configuration reference from the config classes.
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "pycluster"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "configref",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# README.md says what this folder holds; it is not a page.
exclude_patterns = ["_build", "README.md"]

myst_enable_extensions = ["deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints_format = "short"

# No intersphinx inventories can be fetched offline, so standard-library names in
# signatures have nothing to link to; builtins and typing names are already ignored.
nitpick_ignore = [
    ("py:class", "pycluster.transport.frames.UndecodableFrame"),
    ("py:class", "pycluster.codec.Problem"),
    ("py:class", "collections.abc.AsyncIterator"),
    ("py:class", "collections.abc.Awaitable"),
    ("py:class", "collections.abc.Callable"),
    ("py:class", "collections.abc.Collection"),
    ("py:class", "collections.abc.Hashable"),
    ("py:class", "logging.Logger"),
    ("py:class", "collections.abc.Coroutine"),
    ("py:class", "collections.abc.Iterable"),
    ("py:class", "collections.abc.Mapping"),
    ("py:class", "collections.abc.Sequence"),
    ("py:class", "collections.abc.Sized"),
    ("py:class", "logging.Handler"),
    ("py:class", "logging.LogRecord"),
    ("py:class", "random.Random"),
    ("py:class", "pycluster.codec.T"),
]

html_theme = "furo"
html_title = f"pycluster {release}"
