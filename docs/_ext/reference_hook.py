"""MkDocs hook: the API reference always shows every public name.

``docs/reference.md`` lists the public names of ``proxima.data.pipeline`` in
groups, one ``::: proxima.data.pipeline.NAME`` line each. A name added to
``__all__`` but not yet placed in a group is appended under "Other public
names" at build time, so the reference is never silently incomplete and the
cross-references to it always resolve.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

PUBLIC_MODULE = "proxima.data.pipeline"
DIRECTIVE = re.compile(r"^::: +proxima\.data\.pipeline\.(\w+)\s*$", re.MULTILINE)


def unlisted_names(markdown: str) -> list[str]:
    public = importlib.import_module(PUBLIC_MODULE).__all__
    listed = set(DIRECTIVE.findall(markdown))
    return sorted(name for name in public if name not in listed)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != "reference.md":
        return markdown
    missing = unlisted_names(markdown)
    if not missing:
        return markdown
    extra = "\n".join(f"::: {PUBLIC_MODULE}.{name}\n" for name in missing)
    return f"{markdown}\n## Other public names\n\n{extra}"
