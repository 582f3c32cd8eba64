"""The package's shape: no import cycles (inside ``aggressive_vi`` or between the examples), no
module touching another object's private attributes, and the public surface in ``__init__``."""
import ast
import os
from typing import Dict, List, Set

import aggressive_vi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules(package_dir: str, package: str) -> Dict[str, str]:
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, package_dir)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return found


def _imports(module: str, path: str, known: Set[str]) -> Set[str]:
    """Every module of ``known`` that ``module`` imports, at the top or inside functions."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out: Set[str] = set()
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                 for n in ast.walk(block)}  # imports for annotations only: no runtime edge
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                out.add(name)
    return out


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycles_in_the_package_or_between_examples():
    for package_dir in ("aggressive_vi", "examples"):
        mods = _modules(package_dir, package_dir)
        graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
        if package_dir == "examples":  # between example packages: collapse to examples.<name>
            top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
            graph = {t: {top(d) for m, deps in graph.items() if top(m) == t for d in deps} - {t}
                     for t in {top(m) for m in graph}}
        assert _cycles(graph) == [], f"import cycles in {package_dir}"


def test_no_module_reads_or_writes_another_objects_private_attributes():
    offenders = []
    for module, path in _modules("aggressive_vi", "aggressive_vi").items():
        for node in ast.walk(ast.parse(open(path).read())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                offenders.append(f"{module}:{node.lineno} .{node.attr}")
    assert offenders == []


def test_the_public_surface_is_what_init_exports():
    for name in aggressive_vi.__all__:
        assert hasattr(aggressive_vi, name), name
    assert "_impl" not in aggressive_vi.__all__


def test_the_trainer_offers_everything_the_callback_protocol_promises():
    import torch

    from aggressive_vi import VAE, AggressiveTrainer, Always
    from aggressive_vi.protocols import Trainer
    from conftest import BernoulliDecoder, MLPEncoder

    vae = VAE(MLPEncoder(), BernoulliDecoder())
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.1),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.1), stopping=Always())
    promised = set(Trainer.__annotations__) | {"epoch_in_progress", "state_dict"}
    assert all(hasattr(trainer, name) for name in promised), promised - set(dir(trainer))
