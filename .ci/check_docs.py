"""Build the documentation site with warnings as errors and check that its API reference covers
every public name.

    python .ci/check_docs.py            # from anywhere; needs `pip install -e '.[docs]'`

The site is built into a temporary directory (never into the checkout) with ``mkdocs build
--strict``: a broken link or anchor, a docstring the renderer cannot parse or a cross-reference to
nothing fails it. Then the site's inventory (``objects.inv``, every object the reference documents)
must hold every name of ``aggressive_vi.__all__`` and of each public submodule's ``__all__``.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import tempfile
import time
import zlib
from typing import List, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def public_names() -> List[str]:
    """``aggressive_vi.X`` for X in the package's ``__all__``, and ``aggressive_vi.m`` and
    ``aggressive_vi.m.X`` for every public submodule ``m`` and X in its ``__all__``."""
    sys.path.insert(0, ROOT)
    import aggressive_vi

    names = [f"aggressive_vi.{name}" for name in aggressive_vi.__all__]
    for info in pkgutil.iter_modules(aggressive_vi.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"aggressive_vi.{info.name}")
        if not hasattr(module, "__all__"):
            raise SystemExit(f"aggressive_vi.{info.name} has no __all__: its public names are unknown")
        names.append(module.__name__)
        names += [f"{module.__name__}.{name}" for name in module.__all__]
    return names


def inventory(site_dir: str) -> Set[str]:
    """The object names of a Sphinx-format inventory (``objects.inv``, version 2)."""
    with open(os.path.join(site_dir, "objects.inv"), "rb") as f:
        header = [f.readline() for _ in range(4)]
        if not header[0].startswith(b"# Sphinx inventory version 2"):
            raise SystemExit(f"objects.inv: unknown format {header[0]!r}")
        body = zlib.decompress(f.read()).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line.strip()}


def main() -> int:
    with tempfile.TemporaryDirectory() as site_dir:
        start = time.perf_counter()
        env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # the theme's notice, not a build warning
        build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                                "--site-dir", site_dir], cwd=ROOT, env=env)
        if build.returncode != 0:
            print("docs: mkdocs build --strict failed", file=sys.stderr)
            return build.returncode
        documented = inventory(site_dir)
    names = public_names()
    missing = [name for name in names if name not in documented]
    if missing:
        print("docs: the API reference lacks these public names (give each a docstring, or a page "
              "under docs/api/):\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    print(f"docs: site built with no warning in {time.perf_counter() - start:.0f} s; the reference "
          f"covers all {len(names)} public names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
