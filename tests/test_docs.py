"""The user-facing examples stay true: the README's and the bring-your-own-model guide's code and the
quick start run."""
import importlib.util
import logging
import os
import pathlib
import pkgutil
import re
import subprocess
import sys
import types

import pytest
import torch
from torch.utils.data import DataLoader

import aggressive_vi
from conftest import BernoulliDecoder, MLPEncoder, binary_data

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_blocks(path: pathlib.Path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_bring_your_own_model_guide_example_trains(capsys):
    code = [b for b in python_blocks(ROOT / "docs" / "bring-your-own-model.md") if ".fit(" in b]
    assert len(code) == 1
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(48, 1, 28, 28, generator=g) > 0.5).float()
    namespace = {
        "train_loader": DataLoader(images[:32], batch_size=16),
        "val_loader": DataLoader(images[32:], batch_size=16),
        "test_loader": DataLoader(images[32:], batch_size=16),
    }
    # the guide trains 20 epochs with 500 importance samples; 2 and 5 keep the test quick
    source = code[0].replace("epochs=20", "epochs=2").replace("n_samples=500", "n_samples=5")
    exec(compile(source, "bring-your-own-model.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert len(trainer.history) == 2 and trainer.history[0].aggressive
    assert trainer.history[0].inner_steps_mean >= 2 * trainer.algorithm.catch_up.window
    out = capsys.readouterr().out
    assert "val_mi" in out
    assert float(out.strip().splitlines()[-1]) > 0  # the printed IW-NLL, nats per image


def readme_namespace(seed):
    """Small stand-ins for the names the README's snippets leave to the user."""
    torch.manual_seed(seed)
    return {
        "my_encoder": MLPEncoder(), "my_decoder": BernoulliDecoder(),  # binary vectors [batch, 6]
        "train_loader": DataLoader(binary_data(32), batch_size=8, shuffle=True),
        "val_loader": DataLoader(binary_data(16, seed=1), batch_size=8),
        "test_loader": DataLoader(binary_data(16, seed=2), batch_size=8),
    }


def run_readme_snippets(seed):
    """Executes every python block of README.md in turn in one namespace, training 1 epoch (not 50)."""
    namespace = readme_namespace(seed)
    for i, block in enumerate(python_blocks(ROOT / "README.md")):
        source, fits = re.subn(r"\bepochs=\d+", "epochs=1", block)
        assert fits == block.count(".fit("), f"README block {i}: every fit call should name its epochs"
        exec(compile(source, f"README.md python block {i}", "exec"), namespace)
    return namespace


def test_readme_snippets_run_and_resume_from_their_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the snippets' runs/x lands in a temporary directory
    assert len(python_blocks(ROOT / "README.md")) >= 1
    first = run_readme_snippets(seed=0)
    assert len(first["history"]) == 1 and first["trainer"].epoch == 1
    assert "val_mi" in capsys.readouterr().out  # verbose=True printed the epoch line
    checkpoints = os.listdir(tmp_path / "runs" / "x")
    assert len(checkpoints) == 1 and checkpoints[0].endswith(".pt")  # written at the epoch end
    assert (tmp_path / "runs" / "x-dynamics.png").stat().st_size > 1000  # the training-dynamics figure
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "runs" / "x-tb"))
    # run again, as after a restart (other initial weights): latest_checkpoint("runs/x") now resumes
    # the finished epoch, so the weights are the first run's
    second = run_readme_snippets(seed=1)
    assert second["trainer"].epoch == 1 and second["history"].to_dicts() == first["history"].to_dicts()
    assert all(torch.equal(a, b) for a, b in zip(first["model"].parameters(), second["model"].parameters()))


def test_quickstart_runs_prints_the_test_line_and_writes_no_file(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "examples.quickstart", "--epochs", "1"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "val_mi" in out.stdout and "test: IW-NLL" in out.stdout
    assert os.listdir(tmp_path) == []  # nothing in the working directory


def test_relative_links_in_docs_and_readme_resolve():
    """Every relative link and image in README.md and the pages under docs/ names a file of the
    repository."""
    missing = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor on the same page
            if not (page.parent / target.split("#")[0]).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_index_own_loop_example_runs():
    """docs/index.md's hand-written loop over AggressiveStep: it trains and leaves a coherent state."""
    code = [b for b in python_blocks(ROOT / "docs" / "index.md") if "AggressiveStep(" in b]
    assert len(code) == 1
    torch.manual_seed(0)
    namespace = {"encoder": MLPEncoder(), "decoder": BernoulliDecoder(),
                 "train_loader": DataLoader(binary_data(48), batch_size=8, shuffle=True),
                 "val_loader": DataLoader(binary_data(32, seed=1), batch_size=16)}
    exec(compile(code[0], "index.md", "exec"), namespace)
    step = namespace["step"]
    assert step.updates == 3 * 6  # one decoder (or joint) update per minibatch
    assert namespace["out"].terms.loss.shape == (8,)
    assert step.is_aggressive == (step.left_aggressive_at is None)


def test_bring_your_own_model_input_snippet_sets_the_input_once():
    """The guide's get_input snippet: the trainer and the estimators take the pair from dict batches."""
    code = [b for b in python_blocks(ROOT / "docs" / "bring-your-own-model.md") if "get_input=" in b]
    assert len(code) == 1
    seen = []

    class MyEncoder(MLPEncoder):
        def forward(self, x):
            ids, mask = x
            seen.append(mask.shape)
            return super().forward(ids * mask)

    class MyDecoder(BernoulliDecoder):
        def log_prob(self, x, z):
            return super().log_prob(x[0], z)

    batches = [{"input_ids": binary_data(4, seed=i), "attention_mask": torch.ones(4, 6)} for i in range(3)]
    namespace = {"MyEncoder": MyEncoder, "MyDecoder": MyDecoder, "test_loader": batches,
                 "enc_opt": None, "dec_opt": None}
    from aggressive_vi import VAE, AggressiveTrainer, estimators
    namespace.update(VAE=VAE, estimators=estimators,
                     AggressiveTrainer=lambda model, *_: AggressiveTrainer(
                         model, torch.optim.SGD(model.encoder.parameters(), lr=0.1),
                         torch.optim.SGD(model.decoder.parameters(), lr=0.1)))
    exec(compile(code[0], "bring-your-own-model.md", "exec"), namespace)
    assert len(seen) >= 3 and all(s == (4, 6) for s in seen)  # the estimator got the pair from each batch


# ------------------------------------------------------------------ the site and its API reference
def public_modules():
    return sorted(m.name for m in pkgutil.iter_modules(aggressive_vi.__path__) if not m.name.startswith("_"))


def test_every_public_module_has_a_reference_page_in_the_nav():
    """docs/api/<module>.md renders ``aggressive_vi.<module>`` from its docstrings, and mkdocs.yml's nav
    lists it; no page is left for a module that is gone. (CI's .ci/check_docs.py builds the site and
    checks that every name of every ``__all__`` made it into the reference.)"""
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.stem: p.read_text() for p in (ROOT / "docs" / "api").glob("*.md")}
    for module in public_modules():
        assert module in pages, f"no docs/api/{module}.md for aggressive_vi.{module}"
        assert re.search(rf"^::: aggressive_vi\.{module}$", pages[module], flags=re.M), module
        assert f"api/{module}.md" in nav, f"docs/api/{module}.md is not in mkdocs.yml's nav"
    assert sorted(pages) == public_modules()


def test_api_page_links_every_name_of_the_package():
    """docs/api.md links each name importable from ``aggressive_vi`` to its reference."""
    page = (ROOT / "docs" / "api.md").read_text()
    unlinked = [name for name in aggressive_vi.__all__ if f"][aggressive_vi.{name}]" not in page]
    assert not unlinked, unlinked


def load_docs_extension(name):
    spec = importlib.util.spec_from_file_location(f"docs_ext_{name}", ROOT / "docs" / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_site_hook_rewrites_links_to_repository_files(caplog):
    """Links from a page to files outside docs/ become links to the code host (``repo_url``) or the
    path as code; links inside the site, web addresses and code blocks are left alone; a link to a
    file that does not exist is a warning (a failed strict build)."""
    hooks = load_docs_extension("hooks")
    page = types.SimpleNamespace(file=types.SimpleNamespace(src_path="lightning.md"))
    config = {"docs_dir": str(ROOT / "docs"), "config_file_path": str(ROOT / "mkdocs.yml"), "extra": {}}
    text = ("[examples/lightning/module.py](../examples/lightning/module.py) and the "
            "[record](../benchmarks/results/performance-record.md#a) and [GPU](gpu.md#x), "
            "[web](https://example.org/a.md)\n```\n[kept](../examples/quickstart.py)\n```\n")
    plain = hooks.on_page_markdown(text, page, config, None)
    assert plain.startswith("`examples/lightning/module.py` and the record "
                            "(`benchmarks/results/performance-record.md`) and [GPU](gpu.md#x), ")
    assert "[web](https://example.org/a.md)" in plain and "[kept](../examples/quickstart.py)" in plain
    linked = hooks.on_page_markdown(text, page, dict(config, repo_url="https://host/o/r/"), None)
    assert "[examples/lightning/module.py](https://host/o/r/blob/main/examples/lightning/module.py)" in linked
    assert "(https://host/o/r/blob/main/benchmarks/results/performance-record.md#a)" in linked
    folder = hooks.on_page_markdown("[b](../benchmarks/reproduce/)", page,
                                    dict(config, repo_url="https://host/o/r", extra={"source_ref": "v1"}), None)
    assert folder == "[b](https://host/o/r/tree/v1/benchmarks/reproduce)"
    with caplog.at_level(logging.WARNING):
        assert hooks.on_page_markdown("[x](../examples/nope.py)", page, config, None) == "[x](../examples/nope.py)"
    assert "../examples/nope.py" in caplog.text


def test_site_turns_sphinx_roles_into_reference_links(tmp_path, caplog):
    """The griffe extension links roles naming the package's documented objects (absolute or relative
    to the docstring), shows others as code, reads ``#:`` comments, and warns on a role naming nothing."""
    griffe = pytest.importorskip("griffe")  # the docs extra
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text('from .mod import Thing\n__all__ = ["Thing", "mod"]\n')
    (package / "mod.py").write_text(
        '__all__ = ["Thing", "LIMIT"]\n'
        '#: The largest size, in :class:`Thing` units.\n'
        'LIMIT = 3\n\n'
        'class Thing:\n'
        '    """See :meth:`run`, :class:`~pkg.Thing`, :func:`torch.nn.utils.clip_grad_norm_`, :func:`_hidden`,\n'
        '    :class:`Missing`."""\n\n'
        '    def run(self):\n        """Runs."""\n\n'
        'def _hidden():\n    """Private."""\n')
    roles = load_docs_extension("sphinx_roles")
    with caplog.at_level(logging.WARNING):
        loaded = griffe.load("pkg", search_paths=[str(tmp_path)],
                             extensions=griffe.load_extensions(roles.SphinxRoles))
    doc = loaded["mod.Thing"].docstring.value
    assert doc.startswith("See [`run`][pkg.mod.Thing.run], [`Thing`][pkg.mod.Thing], "
                          "`torch.nn.utils.clip_grad_norm_`, `_hidden`,")
    assert loaded["mod.LIMIT"].docstring.value == "The largest size, in [`Thing`][pkg.mod.Thing] units."
    assert ":class:`Missing` names nothing" in caplog.text
