#!/usr/bin/env bash
# CI: the package as a user gets it. Builds the sdist and, from it, the wheel (`python -m build`),
# installs the wheel into a new virtual environment outside the checkout, and imports it there from
# a directory that is not the checkout: every module imports, py.typed is installed, and
# aggressive_vi.__version__ is the wheel's version and the one in the source (setup.cfg reads it
# from aggressive_vi/__init__.py).
#
# torch (about 900 MB installed) is not installed a second time: the new environment sees the
# directories that hold torch, lightning and typing_extensions in this one through a .pth file. A
# directory named in a .pth file has its own .pth files ignored (an editable install's among them),
# so `import aggressive_vi` can only find the wheel's copy, and the check asserts it did.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

if ! python3 -m build --outdir "$tmp/dist" "$root" >"$tmp/build.log" 2>&1; then
  cat "$tmp/build.log" >&2
  echo "wheel: python -m build failed" >&2
  exit 1
fi
wheel=("$tmp"/dist/aggressive_vi-*.whl)
sdist=("$tmp"/dist/aggressive_vi-*.tar.gz)
source_version="$(python3 - "$root/aggressive_vi/__init__.py" <<'EOF'
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
print(next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
           and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"]))
EOF
)"

python3 -m venv --without-pip "$tmp/venv"   # this pip installs into it (--python)
python3 - "$tmp/venv" <<'EOF'
import os, sys, sysconfig
import lightning, torch, typing_extensions
site = sysconfig.get_paths(vars={"base": sys.argv[1], "platbase": sys.argv[1]})["purelib"]
dirs = {os.path.dirname(os.path.dirname(torch.__file__)), os.path.dirname(os.path.dirname(lightning.__file__)),
        os.path.dirname(typing_extensions.__file__)}
with open(os.path.join(site, "borrowed-dependencies.pth"), "w") as f:
    f.write("\n".join(sorted(dirs)) + "\n")
EOF
python3 -m pip --python "$tmp/venv/bin/python" install --quiet --disable-pip-version-check "${wheel[0]}"

mkdir "$tmp/elsewhere"
cd "$tmp/elsewhere"
"$tmp/venv/bin/python" -I - "$source_version" "${wheel[0]}" "${sdist[0]}" <<'EOF'
import importlib, importlib.metadata, importlib.resources, pathlib, pkgutil, sys, tarfile, zipfile

source_version, wheel, sdist = sys.argv[1:]
import aggressive_vi

where = pathlib.Path(aggressive_vi.__file__).resolve()
assert pathlib.Path(sys.prefix).resolve() in where.parents, f"aggressive_vi imported from {where}, not the wheel"
for info in pkgutil.walk_packages(aggressive_vi.__path__, "aggressive_vi."):
    importlib.import_module(info.name)  # every module the wheel ships imports
assert importlib.resources.files("aggressive_vi").joinpath("py.typed").is_file(), "py.typed is not installed"
installed = importlib.metadata.version("aggressive-vi")
assert aggressive_vi.__version__ == installed == source_version, (aggressive_vi.__version__, installed, source_version)
assert f"-{source_version}-" in pathlib.Path(wheel).name and pathlib.Path(sdist).name.endswith(f"-{source_version}.tar.gz")
tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
assert tops == {"aggressive_vi", f"aggressive_vi-{source_version}.dist-info"}, f"the wheel holds {sorted(tops)}"
members = tarfile.open(sdist).getnames()
for needed in ("aggressive_vi/py.typed", "LICENSE", "README.md", "setup.cfg", "pyproject.toml"):
    assert any(m.endswith("/" + needed) for m in members), f"the sdist lacks {needed}"
print(f"wheel: aggressive-vi {installed} installs and imports outside the checkout, with py.typed")
EOF
echo "wheel: sdist and wheel built and checked in $((SECONDS - start)) s"
