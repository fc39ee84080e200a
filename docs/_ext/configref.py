"""The configuration reference, generated from pycluster's attrs config classes.

Tables come from :func:`pycluster.config.describe`, so the reference cannot drift from the
code. Descriptions are reStructuredText (the ``doc`` of each ``setting``) and are parsed
as such even when the directive is used from a MyST page.

``config-reference``
    One table (key, type, default, description) for a config class, named by its import
    path (``pycluster.config.NodeConfig``), or by ``:strategy: NAME`` / ``:backend: NAME``
    for the class a registered strategy or registry backend validates its config with.
    The class docstring comes first unless ``:no-doc:`` is given.

``config-plugins``
    A section per registered strategy (argument ``strategies``) or registry backend
    (``registry-backends``): its class docstring and config table. Only the built-in
    plugins are loaded, so
    the reference does not depend on what else is installed.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, ClassVar

import attrs
from docutils import nodes  # type: ignore[import-untyped]
from docutils.parsers.rst import Parser, directives  # type: ignore[import-untyped]
from docutils.utils import new_document  # type: ignore[import-untyped]
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.typing import ExtensionMetadata

from pycluster.config import describe
from pycluster.plugins import Plugins

HEADINGS = ("Key", "Type", "Default", "Description")
COLUMN_WIDTHS = (18, 22, 14, 46)
# describe() writes these instead of a value; they are words, not YAML.
NOT_A_VALUE = ("required", "(hidden)")

PLUGIN_KINDS = ("strategies", "registry-backends")


def _plugin_classes(kind: str) -> dict[str, type[Any]]:
    # Built-in plugins only: the reference documents pycluster, not this machine.
    plugins = Plugins.load(entry_points=False)
    if kind == "strategies":
        return dict(plugins.strategies())
    return dict(plugins.registry_backends())


def _config_class(plugin: type[Any]) -> type[Any]:
    """The attrs class a strategy (``Config``) or registry backend (``Options``) uses."""
    config: type[Any] = getattr(plugin, "Config", None) or plugin.Options
    return config


class _ConfigDirective(SphinxDirective):
    """Shared helpers: parse RST into nodes, build tables and sections."""

    def parse_rst(self, text: str) -> list[nodes.Node]:
        """Parse ``text`` as reStructuredText, whatever the page's own markup is."""
        if not text.strip():
            return []
        host = self.state.document
        document = new_document(host["source"], host.settings)
        document.reporter = host.reporter
        Parser().parse(text, document)
        children: list[nodes.Node] = list(document.children)
        return children

    def docstring(self, obj: object) -> list[nodes.Node]:
        """The parsed docstring of ``obj`` (nothing when it has none)."""
        return self.parse_rst(inspect.getdoc(obj) or "")

    def depend_on(self, obj: object) -> None:
        """Rebuild the page when the source of ``obj`` changes."""
        try:
            path = inspect.getsourcefile(obj)  # type: ignore[arg-type]
        except TypeError:
            return
        if path is not None:
            self.env.note_dependency(path)

    def table(self, cls: type[Any]) -> nodes.table:
        """The key/type/default/description table of the attrs config class ``cls``."""
        if not attrs.has(cls):
            raise self.error(f"{cls.__module__}.{cls.__qualname__} is not an attrs class")
        self.depend_on(cls)
        table = nodes.table(classes=["config-reference"])
        group = nodes.tgroup(cols=len(HEADINGS))
        table += group
        for width in COLUMN_WIDTHS:
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        head += _row([[nodes.paragraph(text=heading)] for heading in HEADINGS])
        group += head
        body = nodes.tbody()
        for field in describe(cls):
            default: nodes.Node = (
                nodes.emphasis(text=field.default)
                if field.default in NOT_A_VALUE
                else nodes.literal(text=field.default)
            )
            body += _row(
                [
                    [nodes.paragraph("", "", nodes.literal(text=field.name))],
                    [nodes.paragraph(text=field.type)],
                    [nodes.paragraph("", "", default)],
                    self.parse_rst(field.doc),
                ]
            )
        group += body
        return table

    def section(self, title: nodes.Node, name: str) -> nodes.section:
        """A section titled ``title``, linkable as ``#`` + the id made from ``name``."""
        section = nodes.section()
        section += nodes.title("", "", title)
        section["names"].append(nodes.fully_normalize_name(name))
        self.state.document.note_implicit_target(section, section)
        return section


def _row(cells: list[list[nodes.Node]]) -> nodes.row:
    row = nodes.row()
    for content in cells:
        entry = nodes.entry()
        entry.extend(content)
        row += entry
    return row


class ConfigReference(_ConfigDirective):
    """``config-reference``: the table of one config class."""

    optional_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {
        "strategy": directives.unchanged_required,
        "backend": directives.unchanged_required,
        "no-doc": directives.flag,
    }

    def run(self) -> list[nodes.Node]:
        cls = self._target()
        out: list[nodes.Node] = [] if "no-doc" in self.options else self.docstring(cls)
        out.append(self.table(cls))
        return out

    def _target(self) -> type[Any]:
        given = [
            what
            for what in (
                self.arguments[0] if self.arguments else None,
                self.options.get("strategy"),
                self.options.get("backend"),
            )
            if what is not None
        ]
        if len(given) != 1:
            raise self.error("give exactly one of: a class path, :strategy:, :backend:")
        if "strategy" in self.options:
            return _config_class(self._registered("strategies", self.options["strategy"]))
        if "backend" in self.options:
            return _config_class(self._registered("registry-backends", self.options["backend"]))
        module_name, _, attr = self.arguments[0].rpartition(".")
        try:
            cls: type[Any] = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise self.error(f"cannot import {self.arguments[0]!r}: {exc}") from exc
        return cls

    def _registered(self, kind: str, name: str) -> type[Any]:
        classes = _plugin_classes(kind)
        if name not in classes:
            known = ", ".join(sorted(classes)) or "none"
            raise self.error(f"no registered {kind} named {name!r} (known: {known})")
        return classes[name]


class ConfigPlugins(_ConfigDirective):
    """``config-plugins``: a section per registered strategy or registry backend."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        kind = self.arguments[0]
        if kind not in PLUGIN_KINDS:
            raise self.error(f"expected one of {', '.join(PLUGIN_KINDS)}, got {kind!r}")
        classes = _plugin_classes(kind)
        if not classes:
            what = "strategy" if kind == "strategies" else "registry backend"
            return [nodes.paragraph(text=f"pycluster registers no {what} yet.")]
        key = "strategy" if kind == "strategies" else "backend"
        sections: list[nodes.Node] = []
        for name, plugin in sorted(classes.items()):
            self.depend_on(plugin)
            section = self.section(nodes.literal(text=name), f"{key} {name}")
            section.extend(self.docstring(plugin))
            section += nodes.paragraph(
                "",
                "",
                nodes.Text("Selected with "),
                nodes.literal(text=f"{key}: {name}"),
                nodes.Text("; implemented by "),
                nodes.literal(text=f"{plugin.__module__}.{plugin.__qualname__}"),
                nodes.Text("."),
            )
            section += self.table(_config_class(plugin))
            sections.append(section)
        return sections


def setup(app: Sphinx) -> ExtensionMetadata:
    """Register the directives."""
    app.add_directive("config-reference", ConfigReference)
    app.add_directive("config-plugins", ConfigPlugins)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
