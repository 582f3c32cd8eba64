"""Every measure at one size: both sides from the same initial weights on the same batches, rounds
interleaved (paper, ours, paper, ours, ...), each round from the initial weights again."""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from ..core.paper_modules import load_from_paper, protocol_vae
from .ours import build_ours, make_trainer, our_epoch, our_iw_nll
from .reference import PaperLoop, Reference, build_reference_vae, reference_iw_nll
from .sizes import Size, token_batches
from .table import make_row
from ..core.timing import interleave, median
from .timing import paired_steps

__all__ = ["measure_size", "ModelPair", "MEASURE_GROUPS", "MODULES"]

#: groups of measures that can be chosen with --measures
MEASURE_GROUPS = ("encoder_step", "basic_epoch", "aggressive_epoch", "aggressive_update", "iw_nll", "paired_steps")
#: what our side runs (--modules): the example's text model, or the paper's own modules behind our
#: two protocols (a user's own model: the library's update is all that differs from the paper's loop)
MODULES = ("example", "paper")


class ModelPair:
    """The two models with their initial weights, restored before every round. ``modules="paper"``:
    our side is a copy of the paper's own model behind our protocols
    (:func:`benchmarks.core.paper_modules.protocol_vae`)."""

    def __init__(self, ref: Reference, size: Size, seed: int, modules: str = "example") -> None:
        if modules not in MODULES:
            raise ValueError(f"modules must be one of {MODULES}, got {modules!r}")
        self.reference = build_reference_vae(ref, size, seed)
        if modules == "paper":
            self.ours = protocol_vae(copy.deepcopy(self.reference))
        else:
            self.ours = build_ours(size)
            load_from_paper(self.reference, self.ours)
        self._ref_state = copy.deepcopy(self.reference.state_dict())
        self._our_state = copy.deepcopy(self.ours.state_dict())
        self.seed = seed

    def reset_reference(self) -> None:
        self.reference.load_state_dict(self._ref_state)
        torch.manual_seed(self.seed)

    def reset_ours(self) -> None:
        self.ours.load_state_dict(self._our_state)
        torch.manual_seed(self.seed)


def _steps(loop_step: Callable[[torch.Tensor], Any], batches: Sequence[torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        for x in batches:
            loop_step(x)
    return run


def measure_size(ref: Reference, size: Size, *, groups: Sequence[str] = MEASURE_GROUPS, seed: int = 0,
                 max_rows: Optional[int] = None, iw_batch: Optional[int] = None, modules: str = "example",
                 log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Rows (see :func:`benchmarks.vs_paper.table.make_row`) for the chosen measure ``groups``.

    Args:
        ref: the loaded paper's code.
        size: the model size and amounts of work.
        max_rows: our IW-NLL's bound on rows per decoder call (``None``: the library's default).
        iw_batch: sentences per batch of our IW-NLL (default: ``size.batch_size``).
        modules: our side's model, one of :data:`MODULES`; with ``"paper"`` the rows' size label is
            ``"<size>/paper-modules"``.
    """
    unknown = sorted(set(groups) - set(MEASURE_GROUPS))
    if unknown:
        raise ValueError(f"measures must be among {MEASURE_GROUPS}, got {unknown}")
    pair = ModelPair(ref, size, seed, modules)
    if modules == "paper":
        size = type(size)(**{**size.to_dict(), "name": f"{size.name}/paper-modules"})
    batches = token_batches(max(size.epoch_batches, size.fixed_updates, size.aggressive_batches), size.batch_size, size.length, size.vocab_size, seed=seed + 1)
    rows: List[Dict[str, Any]] = []
    reps = size.reps
    setup = {"paper": pair.reset_reference, "ours": pair.reset_ours}

    if "encoder_step" in groups:
        steps = (batches * (size.encoder_steps // len(batches) + 1))[:size.encoder_steps]
        loop = PaperLoop(pair.reference, batches, seed)
        trainer = make_trainer(pair.ours, aggressive=True)
        t = interleave({"paper": _steps(loop.encoder_step, steps),
                        "ours": _steps(lambda x: trainer.algorithm.encoder_update(x, 1.0), steps)}, reps, warmup=size.warmup, setup=setup)
        n = [len(steps)] * reps
        rows.append(make_row(size.name, "encoder_step", t["paper"]["seconds"], t["ours"]["seconds"], n, n, **_wall(t),
                             steps=len(steps)))
        log(_line(rows[-1]))

    if "basic_epoch" in groups:
        basic = batches[:size.epoch_batches]
        loop = PaperLoop(pair.reference, basic, seed)
        t = interleave({"paper": lambda: loop.epoch(aggressive=False),
                        "ours": lambda: our_epoch(make_trainer(pair.ours, aggressive=False), basic, seed)},
                       reps, warmup=size.warmup, setup=setup)
        rows.append(make_row(size.name, "basic_epoch", t["paper"]["seconds"], t["ours"]["seconds"], **_wall(t),
                             batches=len(basic)))
        n = [len(basic)] * reps
        rows.append(make_row(size.name, "joint_step", t["paper"]["seconds"], t["ours"]["seconds"], n, n, **_wall(t),
                             batches=len(basic)))
        log(_line(rows[-2]))

    if "aggressive_epoch" in groups and size.aggressive_batches:
        agg = batches[:size.aggressive_batches]
        loop = PaperLoop(pair.reference, agg, seed)
        t = interleave({"paper": lambda: loop.epoch(aggressive=True),
                        "ours": lambda: our_epoch(make_trainer(pair.ours, aggressive=True), agg, seed)},
                       reps, warmup=size.warmup, setup=setup)
        ref_steps = [i["inner_steps"] for i in t["paper"]["info"]]
        our_steps = [i["inner_steps"] for i in t["ours"]["info"]]
        notes = f"inner steps paper {median(ref_steps)}, ours {median(our_steps)}"
        rows.append(make_row(size.name, "aggressive_epoch", t["paper"]["seconds"], t["ours"]["seconds"], **_wall(t),
                             batches=len(agg), paper_inner_steps=ref_steps, ours_inner_steps=our_steps,
                             notes=notes))
        rows.append(make_row(size.name, "aggressive_epoch_per_step", t["paper"]["seconds"], t["ours"]["seconds"],
                             ref_steps, our_steps, **_wall(t), batches=len(agg), notes="time / inner steps"))
        log(_line(rows[-2]))

    if "aggressive_update" in groups:
        k = size.fixed_inner_steps
        sub = batches[:size.fixed_updates]
        t = interleave({"paper": _fixed_paper_epoch(pair, batches, sub, k, seed),
                        "ours": lambda: our_epoch(make_trainer(pair.ours, aggressive=True, fixed_steps=k),
                                                  sub, seed)},
                       reps, warmup=size.warmup, setup=setup)
        n = [len(sub)] * reps
        rows.append(make_row(size.name, "aggressive_update", t["paper"]["seconds"], t["ours"]["seconds"], n, n, **_wall(t),
                             inner_steps=k, updates=len(sub), notes=f"{k} inner steps per update"))
        nk = [len(sub) * k] * reps
        rows.append(make_row(size.name, "aggressive_update_per_step", t["paper"]["seconds"], t["ours"]["seconds"],
                             nk, nk, **_wall(t), inner_steps=k, updates=len(sub), notes="update time / inner steps"))
        log(_line(rows[-2]))

    if "paired_steps" in groups:
        # the finest interleaving: every batch runs a paper step then ours (or ours first, every other
        # batch), so a burst of load hits both; medians over all steps
        loop = PaperLoop(pair.reference, batches, seed)
        trainer = make_trainer(pair.ours, aggressive=True)
        n_steps = size.encoder_steps * reps
        for measure, paper_step, our_step in (
                ("encoder_step_paired", loop.encoder_step, lambda x: trainer.algorithm.encoder_update(x, 1.0)),
                ("joint_step_paired", lambda x: loop.update(x, aggressive=False),
                 lambda x: trainer.algorithm.joint_update(x, 1.0))):
            pair.reset_reference()
            pair.reset_ours()
            t = paired_steps(paper_step, our_step, batches, n_steps, warmup=min(size.warmup * 2, n_steps - 1))
            rows.append(make_row(size.name, measure, t["paper"]["seconds"], t["ours"]["seconds"], **_wall(t),
                                 steps=len(t["paper"]["seconds"]), notes="steps interleaved one by one"))
            log(_line(rows[-1]))

    if "iw_nll" in groups:
        sentences = torch.cat(token_batches(1, size.iw_sentences, size.length, size.vocab_size, seed=seed + 2))
        est: Dict[str, List[float]] = {"paper": [], "ours": []}
        batch = iw_batch or size.batch_size

        def paper_iw() -> float:
            v = reference_iw_nll(ref, pair.reference, sentences, size.iw_samples)
            est["paper"].append(v)
            return v

        def ours_iw() -> float:
            v = our_iw_nll(pair.ours, sentences, size.iw_samples, batch, max_rows)
            est["ours"].append(v)
            return v

        t = interleave({"paper": paper_iw, "ours": ours_iw}, reps, warmup=size.warmup, setup=setup)
        n = [size.iw_sentences] * reps
        rows.append(make_row(size.name, "iw_nll", t["paper"]["seconds"], t["ours"]["seconds"], n, n, **_wall(t),
                             sentences=size.iw_sentences, samples=size.iw_samples, our_batch=batch,
                             max_rows=max_rows, paper_estimates=t["paper"]["info"],
                             ours_estimates=t["ours"]["info"],
                             notes=f"nll paper {median(t['paper']['info']):.2f}, ours {median(t['ours']['info']):.2f}"))
        log(_line(rows[-1]))
    return rows


def _fixed_paper_epoch(pair: ModelPair, batches: Sequence[torch.Tensor], sub: Sequence[torch.Tensor], k: int,
                       seed: int) -> Callable[[], Dict[str, Any]]:
    """The paper's loop over the updates of ``sub``, each after ``k`` inner steps whose further batches
    are drawn from all of ``batches`` (as ours draws from ``sub``: the same shapes, so the same work)."""
    loop = PaperLoop(pair.reference, batches, seed)

    def run() -> Dict[str, Any]:
        pair.reference.train()
        inner = 0
        for x in sub:
            inner += loop.catch_up(x, fixed_steps=k)
            loop.update(x, aggressive=True)
        return {"inner_steps": inner}
    return run


def _wall(t: Dict[str, Dict[str, List[Any]]]) -> Dict[str, List[float]]:
    return {"reference_wall": t["paper"]["wall"], "our_wall": t["ours"]["wall"]}


def _line(row: Dict[str, Any]) -> str:
    return (f"  {row['size']:9s} {row['measure']:26s} paper {row['paper']:10.4g}  ours {row['ours']:10.4g} "
            f"{row['unit']:13s} ratio {row['ratio']:.2f}x {row.get('notes', '')}")
