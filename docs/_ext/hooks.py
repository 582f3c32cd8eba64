"""MkDocs hook: links from a page to a file of the repository outside ``docs/``.

Pages link to such files relatively (``[record](../benchmarks/results/performance-record.md)``), which
works on a code host and in a checkout. The site holds only ``docs/``, so here each such link becomes
a link to the file on ``repo_url`` (``extra.source_ref``, default ``main``) when ``repo_url`` is set in
mkdocs.yml, and otherwise the repository path as code. A link to a repository file that does not
exist is a warning, which fails ``mkdocs build --strict``.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any

log = logging.getLogger("mkdocs.plugins.aggressive_vi")

LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.S | re.M)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = os.path.abspath(config["docs_dir"])
    root = os.path.dirname(os.path.abspath(config["config_file_path"]))
    page_dir = os.path.dirname(os.path.join(docs_dir, page.file.src_path))
    repo_url = (config.get("repo_url") or "").rstrip("/")
    ref = (config.get("extra") or {}).get("source_ref", "main")

    def rewrite(match: "re.Match[str]") -> str:
        image, text, target = match.groups()
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return match.group(0)  # a web address, an anchor, a site-absolute path
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(page_dir, path))
        if full == docs_dir or full.startswith(docs_dir + os.sep):
            return match.group(0)  # a page or file of the site: MkDocs validates it
        rel = os.path.relpath(full, root).replace(os.sep, "/")
        if rel.startswith("../") or not os.path.exists(full):
            log.warning("Doc file '%s' links to '%s', which is not a file of the repository",
                        page.file.src_path, target)
            return match.group(0)
        if repo_url:
            kind = "tree" if os.path.isdir(full) else "blob"
            url = f"{repo_url}/{kind}/{ref}/{rel}" + (f"#{anchor}" if anchor else "")
            return f"{image}[{text}]({url})"
        shown = f"`{rel}`"
        return shown if text.strip("`").rstrip("/") == rel.rstrip("/") else f"{text} ({shown})"

    # leave fenced code blocks as they are
    out, last = [], 0
    for fence in FENCE.finditer(markdown):
        out.append(LINK.sub(rewrite, markdown[last:fence.start()]))
        out.append(fence.group(0))
        last = fence.end()
    out.append(LINK.sub(rewrite, markdown[last:]))
    return "".join(out)
