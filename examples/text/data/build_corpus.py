"""Rebuild the bundled text corpus from the Debian ``fortunes`` and ``fortunes-min`` packages.

The bundled files ``fortunes.{train,valid,test}.txt.gz`` next to this script were made with::

    python examples/text/data/build_corpus.py            # downloads the two .debs with apt-get

or, from fortune files you already have (e.g. ``/usr/share/games/fortunes``)::

    python examples/text/data/build_corpus.py --source /usr/share/games/fortunes

What it does: read every fortune file (skipping ``*.dat`` indexes, ``*.u8`` duplicates and the
ASCII-art files ``art`` and ``ascii-art``), split entries at lines holding a single ``%``, remove
overstrike (backspace) formatting, drop entries that look like drawings or code (few letters, long
runs of line-drawing characters), tokenise each entry into one line (``examples/text/tokens.py``),
keep entries of 1..``--max-tokens`` tokens, drop duplicates, shuffle with a fixed seed and cut
``--valid``/``--test`` entries off for validation and test. The output is byte-identical from run to
run (gzip with mtime 0).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, List, Tuple

_REPO = Path(__file__).resolve().parents[3]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from examples.text.tokens import tokenize  # noqa: E402

PACKAGES = ("fortunes", "fortunes-min")
ART_FILES = {"art", "ascii-art"}
_DRAWING = re.compile(r"[_/\\|=#~^*<>{}:]{4,}")


def strip_overstrike(text: str) -> str:
    """Remove nroff-style emphasis: ``____\\b\\b\\b\\bword`` (underline) and ``x\\bx`` (bold)."""
    text = re.sub(r"_+\x08+", "", text)
    text = re.sub(r".\x08", "", text)
    return text.replace("\x08", "")


def looks_like_art(entry: str) -> bool:
    """True for drawings, tables and code: under 60% letters among visible characters, or a run of
    four or more line-drawing characters."""
    visible = re.sub(r"\s", "", entry)
    if not visible:
        return True
    letters = sum(ch.isalpha() for ch in visible) / len(visible)
    return letters < 0.6 or _DRAWING.search(entry) is not None


def read_entries(source: Path) -> Iterable[Tuple[str, str]]:
    """Yield ``(file name, entry text)`` for every fortune in ``source``, in sorted file order."""
    files = sorted(p for p in source.iterdir()
                   if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
                   and p.name not in ART_FILES)
    if not files:
        raise FileNotFoundError(f"--source {source} holds no fortune files")
    for path in files:
        text = strip_overstrike(path.read_text(encoding="utf-8", errors="replace"))
        for entry in re.split(r"^%[ \t]*$", text, flags=re.MULTILINE):
            if entry.strip():
                yield path.name, entry


def build(source: Path, *, max_tokens: int, n_valid: int, n_test: int, seed: int) -> dict:
    """Return ``{"train": [...], "valid": [...], "test": [...]}``, each a list of tokenised lines."""
    seen, lines = set(), []
    n_art = n_long = 0
    for _, entry in read_entries(source):
        if looks_like_art(entry):
            n_art += 1
            continue
        tokens = tokenize(entry)
        if not 1 <= len(tokens) <= max_tokens:
            n_long += 1
            continue
        line = " ".join(tokens)
        if line not in seen:
            seen.add(line)
            lines.append(line)
    lines.sort()
    random.Random(seed).shuffle(lines)
    if n_valid + n_test >= len(lines):
        raise ValueError(f"--valid {n_valid} + --test {n_test} leave no training data ({len(lines)} entries)")
    print(f"kept {len(lines)} entries; dropped {n_art} drawings/code, {n_long} over {max_tokens} tokens")
    return {"valid": lines[:n_valid], "test": lines[n_valid:n_valid + n_test],
            "train": lines[n_valid + n_test:]}


def download(workdir: Path) -> Path:
    """``apt-get download`` the packages and unpack them with ``dpkg -x``; return the fortunes dir."""
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=workdir, check=True)
    for deb in sorted(workdir.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(workdir / "root")], check=True)
    return workdir / "root" / "usr" / "share" / "games" / "fortunes"


def write_gz(path: Path, lines: List[str]) -> str:
    """Write lines to ``path`` with gzip mtime 0 (reproducible bytes); return the sha256 of the file."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(("\n".join(lines) + "\n").encode("utf-8"))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="directory of fortune files (default: download the .debs)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--max-tokens", type=int, default=50)
    parser.add_argument("--valid", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source if args.source is not None else download(Path(tmp))
        splits = build(source, max_tokens=args.max_tokens, n_valid=args.valid, n_test=args.test, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, lines in splits.items():
        digest = write_gz(args.out / f"fortunes.{name}.txt.gz", lines)
        n_tok = sum(len(line.split()) for line in lines)
        print(f"fortunes.{name}.txt.gz: {len(lines)} lines, {n_tok} tokens, sha256 {digest}")


if __name__ == "__main__":
    main()
