"""Griffe extension for the API reference: the package's docstrings cross-reference with Sphinx roles
(``:class:`~aggressive_vi.VAE```), which IDEs and ``help()`` show as they are; this turns each one into
a link of the generated reference. It also reads the ``#:`` comments above module constants (Sphinx's
way of documenting them) as their docstrings.

A role naming an object of the package, absolutely or relative to where the docstring is, becomes a
link to that object's reference; one naming another library (torch, Lightning, Python's) becomes code.
A role naming an object of the package that does not exist is a warning, so ``mkdocs build --strict``
fails on a stale reference.
"""
from __future__ import annotations

import re
from typing import Any, Iterator, Optional

import griffe

logger = griffe.get_logger(__name__)

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|obj|exc|const):`(~?)([^`]+)`")
# top-level names of other libraries that docstrings cross-reference: shown as code, not linked
EXTERNAL = {"torch", "lightning", "pytorch_lightning", "typing", "typing_extensions", "collections",
            "contextlib", "math", "os", "pathlib", "itertools", "functools", "numpy", "matplotlib",
            "tqdm", "tensorboard", "signal", "threading", "dataclasses", "abc", "enum", "io", "json",
            "warnings", "KeyboardInterrupt", "ValueError", "TypeError", "RuntimeError", "float",
            "int", "str", "dict", "list", "tuple", "bool", "Exception"}


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


def _lookup(pkg: griffe.Module, path: str) -> Optional[griffe.Object]:
    if path == pkg.path:
        return pkg
    if not path.startswith(pkg.path + "."):
        return None
    try:
        found = pkg[path[len(pkg.path) + 1:]]
        return found.final_target if found.is_alias else found
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _comment_docstring(obj: griffe.Object) -> None:
    lines = obj.lines_collection[obj.filepath]
    i, comment = obj.lineno - 2, []
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        comment.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    if comment:
        obj.docstring = griffe.Docstring("\n".join(comment), lineno=i + 2, parent=obj)


def _private(path: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in path.split("."))


def _public(obj: griffe.Object) -> bool:
    """Whether ``filters: public`` keeps ``obj``: public names, ``__all__`` in modules."""
    scope: Optional[griffe.Object] = obj
    while scope is not None and scope.parent is not None:
        if not scope.is_public:
            return False
        scope = scope.parent
    return True


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            if _private(obj.path):
                continue  # not in the reference
            if obj.is_attribute and obj.docstring is None and obj.lineno and obj.filepath:
                _comment_docstring(obj)
            if obj.docstring is not None and ROLE.search(obj.docstring.value):
                obj.docstring.value = ROLE.sub(lambda m: self._link(pkg, obj, m), obj.docstring.value)

    def _link(self, pkg: griffe.Module, where: griffe.Object, match: "re.Match[str]") -> str:
        short, target = match.group(1) == "~", match.group(2).strip().removesuffix("()")
        text = target.rpartition(".")[2] if short else target
        scopes = []
        scope: Optional[griffe.Object] = where
        while scope is not None:
            scopes.append(scope.path)
            scope = scope.parent
        for candidate in [target] + [f"{s}.{target}" for s in scopes]:
            found = _lookup(pkg, candidate)
            if found is not None:
                if _private(found.canonical_path) or not _public(found) or not found.has_docstrings:
                    return f"`{text}`"  # exists, but the reference does not show it
                return f"[`{text}`][{found.canonical_path}]"
        if target.split(".")[0] in EXTERNAL:
            return f"`{text}`"
        logger.warning("%s:%s: %s names nothing in %s", where.relative_filepath, where.lineno,
                       match.group(0), pkg.path)
        return f"`{text}`"
