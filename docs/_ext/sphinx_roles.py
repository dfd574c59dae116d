"""A Griffe extension for the API reference: Sphinx roles to Markdown.

proxima's docstrings use Sphinx cross-reference roles (``:class:`Stage```,
``:meth:`execute```, ``:func:`attrs.evolve```). mkdocstrings renders Markdown,
where such roles would show up literally. This extension rewrites each role
before the docstring is parsed:

* to a cross-reference (``[`Stage`][proxima.data.pipeline.Stage]``) when the
  target is a public name of ``proxima.data.pipeline`` or a public member of
  one, looked up relative to the class the docstring belongs to, as Sphinx
  does (``reference_hook.py`` makes sure the reference renders every public
  name, so these links always resolve);
* to plain inline code otherwise (private modules, other libraries), so
  ``mkdocs build --strict`` never fails on a link nothing can satisfy.

``~`` keeps only the last component, as in Sphinx; methods and functions get
``()``. It also blanks the field descriptions that griffe-fieldz copies from a
builtin default factory (``attrs.field(factory=dict)`` would otherwise be
described by ``dict``'s own docstring). Loaded from ``mkdocs.yml`` by path;
it is not part of the package.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import re
from typing import Any

import griffe

PUBLIC_MODULE = "proxima.data.pipeline"
ROLE = re.compile(r":(?:py:)?(class|meth|func|attr|exc|mod|obj|data|const):`([^`]+)`")
CALLABLE_ROLES = {"meth", "func"}
BUILTIN_DOCS = {
    inspect.cleandoc(doc)
    for kind in (dict, list, set, tuple, frozenset)
    if (doc := getattr(builtins, kind.__name__).__doc__)
}


class SphinxRoles(griffe.Extension):
    def __init__(self) -> None:
        module = importlib.import_module(PUBLIC_MODULE)
        self._module = module
        self._public = set(module.__all__)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg, seen=set())

    def _walk(self, obj: griffe.Object | griffe.Alias, seen: set[str]) -> None:
        if obj.is_alias or obj.path in seen:
            return
        seen.add(obj.path)
        docstring = obj.docstring
        if docstring is not None:
            owner = self._public_owner(obj)

            def fix(text: str) -> str:
                return ROLE.sub(lambda match: self._rewrite(match, owner), text)

            docstring.value = fix(docstring.value)
            # Other extensions (griffe-fieldz) may have parsed it already.
            for section in docstring.__dict__.get("parsed", ()):
                if isinstance(section.value, str):
                    section.value = fix(section.value)
                elif isinstance(section.value, list):
                    for item in section.value:
                        text = getattr(item, "description", None)
                        if isinstance(text, str):
                            item.description = "" if text in BUILTIN_DOCS else fix(text)
        for member in obj.members.values():
            self._walk(member, seen)

    def _public_owner(self, obj: griffe.Object) -> str | None:
        """Name of the public class a docstring belongs to, if any."""
        node: Any = obj
        while node is not None:
            if isinstance(node, griffe.Class) and node.name in self._public:
                return str(node.name)
            node = node.parent
        return None

    def _exists(self, dotted: str) -> bool:
        parts = dotted.split(".")
        if parts[0] not in self._public:
            return False
        target: Any = self._module
        for part in parts:
            if part.startswith("_") or not hasattr(target, part):
                return False
            target = getattr(target, part)
        return True

    def _rewrite(self, match: re.Match[str], owner: str | None) -> str:
        role, target = match.groups()
        short = target.startswith("~")
        target = target.lstrip("~").lstrip(".")
        if target.startswith(PUBLIC_MODULE + "."):
            target = target[len(PUBLIC_MODULE) + 1 :]
        shown = target.rsplit(".", 1)[-1] if short else target
        if role in CALLABLE_ROLES:
            shown += "()"
        for candidate in (target, f"{owner}.{target}" if owner else None):
            if candidate and self._exists(candidate):
                return f"[`{shown}`][{PUBLIC_MODULE}.{candidate}]"
        return f"`{shown}`"
