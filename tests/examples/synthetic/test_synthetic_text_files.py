"""The synthetic splits as text files, read back by the text example, and the import direction
between the two example packages."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples.synthetic.__main__ import main
from examples.synthetic.data import make_synthetic_data, token_word, write_text_splits
from examples.text.experiment import load_data

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def small():
    return make_synthetic_data(seed=21, n_train=30, n_valid=7, n_test=9)


def test_write_text_splits_one_sentence_a_line_of_words(small, tmp_path):
    paths = write_text_splits(small, tmp_path / "new" / "dir")
    assert set(paths) == {"train", "valid", "test"}
    for name, path in paths.items():
        assert path == tmp_path / "new" / "dir" / f"synthetic.{name}.txt" and path.is_file()
        lines = path.read_text(encoding="utf-8").split("\n")
        assert lines[-1] == ""  # every line ends with a newline, no empty line in between
        rows = [line.split(" ") for line in lines[:-1]]
        assert rows == [[f"w{t}" for t in row] for row in getattr(small, name).tokens.tolist()]
        # what the paper's reader does with a line (no label column: no tab)
        assert all("\t" not in line and line.split() == line.split(" ") for line in lines[:-1])
    assert token_word(17) == "w17"
    assert not list((tmp_path / "new" / "dir").glob("*.tmp"))


def test_write_text_splits_rejects_bad_arguments(small, tmp_path):
    with pytest.raises(TypeError, match="data"):
        write_text_splits(small.train, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="directory"):
        write_text_splits(small, tmp_path / "file")


def test_text_example_reads_the_directory_and_the_prefix(small, tmp_path):
    write_text_splits(small, tmp_path)
    for source in (tmp_path, tmp_path / "synthetic"):
        data = load_data(source)
        for name in ("train", "valid", "test"):
            split = getattr(small, name)
            assert len(data.splits[name]) == len(split)
        words = {token_word(t) for t in small.train.tokens.flatten().tolist()}
        assert len(data.vocab) == 4 + len(words)  # <pad> <s> </s> <unk> and the training words
        first = data.vocab.decode(data.splits["train"][0])
        assert first == [token_word(t) for t in small.train.tokens[0].tolist()]
    with pytest.raises(ValueError, match="--write-data"):
        load_data("synthetic")


def test_cli_write_data_uses_seed_and_sizes(tmp_path):
    out = main(["--write-data", str(tmp_path), "--seed", "21", "--n-train", "30", "--n-valid", "7",
                "--n-test", "9", "--quiet"])
    assert out["data"] == {s: str(tmp_path / f"synthetic.{s}.txt") for s in ("train", "valid", "test")}
    expected = make_synthetic_data(seed=21, n_train=30, n_valid=7, n_test=9)
    lines = (tmp_path / "synthetic.test.txt").read_text().splitlines()
    assert lines == [" ".join(token_word(t) for t in row) for row in expected.test.tokens.tolist()]
    assert not (tmp_path / "summary.json").exists()  # nothing trained


def _imported_modules(path: Path):
    """Every module an ``import`` / ``from ... import`` anywhere in ``path`` names (function bodies
    included), relative imports resolved against the ``examples.text`` package."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(["examples", "text"][: 3 - node.level])
                yield f"{base}.{node.module}" if node.module else base
            else:
                yield node.module


def test_the_text_example_does_not_import_the_synthetic_one():
    # statically, so that an import inside a function counts too
    files = sorted((REPO / "examples" / "text").rglob("*.py"))
    assert len(files) >= 8
    found = {f.name: sorted(m for m in _imported_modules(f) if m.startswith("examples.synthetic"))
             for f in files}
    assert not any(found.values()), found
    assert any("examples.text.corpus" in set(_imported_modules(f)) for f in files)  # the scan resolves
    # and at run time: importing every module of the package loads nothing of examples.synthetic
    code = ("import pkgutil, importlib, sys, examples.text\n"
            "for m in pkgutil.iter_modules(examples.text.__path__):\n"
            "    if m.name != '__main__':\n"
            "        importlib.import_module('examples.text.' + m.name)\n"
            "bad = sorted(n for n in sys.modules if n.startswith('examples.synthetic'))\n"
            "assert not bad, bad\n"
            "print(len([n for n in sys.modules if n.startswith('examples.text.')]))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 7  # it really imported the package's modules
