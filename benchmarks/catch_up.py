"""Inner steps against quality for catch-up rules (``AggressiveTrainer(catch_up=...)``).

    OMP_NUM_THREADS=1 python -m benchmarks.catch_up --data synthetic --rules paper probe:5 first_loss \
        --seeds 0 1 2 --threads 1 --out benchmarks/results/catch_up_synthetic.json

Trains the aggressive row of the reproduction study (``benchmarks.reproduce``) once per rule and
seed, from the same initialisation and batch order, and reports on the test split: inner steps per
aggressive decoder update, probe forward passes per update, IW-NLL, -ELBO, KL, MI, AU (nats) and
training seconds; then mean and standard deviation over seeds per rule, and whether each rule's mean
MI, AU and IW-NLL are no worse than the paper rule's worst seed (MI and AU at least its minimum over
seeds, IW-NLL at most its maximum) with at most half its inner steps.

Rules (``--rules``):

* ``paper``: the default, ``catch_up=None`` (the paper's window test, window ``--window``);
* ``first_loss`` or ``first_loss:W``: ``PaperWindowTest(window or W, start="first_loss")`` (the first
  window against the decoder update's minibatch before any encoder step);
* ``probe:W`` or ``probe:W:TOL``: ``ProbeTest(W, tolerance=TOL)``;
* ``fixed:N``: ``FixedCount(N)``, N steps per update and no test (reference points of the curve).

Data sets (``--data``):

* ``synthetic``: the synthetic study's nz=1 LSTM VAE on the paper's generator (``examples.synthetic``),
  SGD lr 1.0 both networks (the paper's ``toy.py`` default and the synthetic example's), KL weight 1,
  ``MIPlateau(patience=1, cumulative=False)``; ``--max-train`` sentences (default 1000), 500 valid/test,
  IW-NLL with 500 samples on the first 200 test sentences;
* ``text``: the ``examples.text`` ``cpu`` preset on the bundled corpus (SGD lr 1.0, KL annealed from 0.1
  over ``--warm-up`` epochs, at most ``--max-aggressive-epochs`` aggressive epochs, default 1),
  ``--max-train`` sentences (default 1200),
  300 valid/test, IW-NLL with ``--iw-samples`` (default 500) samples on the first 100 test sentences.

The JSON (``--out``) is rewritten after every run, so a killed job leaves what finished.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from aggressive_vi import AggressiveTrainer
from aggressive_vi.catch_up import FixedCount, PaperWindowTest, ProbeTest

from .core.tables import write_json
from .reproduce.datasets import SETUPS, Budget
from .reproduce.rows import kl_schedule_for, stopping_for
from .reproduce.runner import _evaluate_vae
from examples.text.experiment import json_safe

ROW = {"synthetic": "aggressive", "text": "aggressive_anneal"}
QUALITY = ("mi", "au", "iw_nll")


def make_rule(spec: str, window: int) -> Any:
    """``paper`` -> None (the trainer's default), ``first_loss[:W]``, ``probe:W[:TOL]``, ``fixed:N``."""
    if spec == "paper":
        return None
    parts = spec.split(":")
    if parts[0] == "first_loss" and len(parts) <= 2:
        return PaperWindowTest(int(parts[1]) if len(parts) == 2 else window, start="first_loss")
    if parts[0] == "fixed" and len(parts) == 2:
        return FixedCount(int(parts[1]))
    if parts[0] == "probe" and len(parts) in (2, 3):
        return ProbeTest(int(parts[1]), tolerance=float(parts[2]) if len(parts) == 3 else 0.0)
    raise ValueError(f"--rules: unknown rule {spec!r}; expected paper, first_loss[:W], probe:W[:TOL] or fixed:N")


def budget_for(data: str, args: argparse.Namespace) -> Budget:
    if data == "synthetic":
        return Budget(epochs=args.epochs or 2, warm_up=1, max_train=args.max_train or 1000, max_eval=500,
                      iw_samples=args.iw_samples, max_iw=200)
    return Budget(epochs=args.epochs or 3, warm_up=args.warm_up, max_train=args.max_train or 1200, max_eval=300,
                  iw_samples=args.iw_samples, max_aggressive_epochs=args.max_aggressive_epochs, max_iw=100)


def run(data: str, spec: str, seed: int, budget: Budget, window: int, max_inner: int) -> Dict[str, Any]:
    setup = SETUPS[data](budget, seed)
    if data == "synthetic":  # the paper's toy.py default, as examples.synthetic
        setup.make_optimizer = lambda params: torch.optim.SGD(params, lr=1.0)
    rule = make_rule(spec, window)
    vae = setup.vae
    torch.manual_seed(seed)
    trainer = AggressiveTrainer(
        vae, setup.make_optimizer(vae.encoder.parameters()), setup.make_optimizer(vae.decoder.parameters()),
        stopping=stopping_for(setup, budget), kl_schedule=kl_schedule_for(ROW[data], budget),
        window=window, max_inner_steps=max_inner, catch_up=rule, clip_grad_norm=5.0)
    start = time.perf_counter()
    hist = trainer.fit(setup.train_loader, val_loader=setup.val_loader, epochs=budget.epochs)
    seconds = time.perf_counter() - start
    records = hist.to_dicts()
    updates = sum(r["aggressive_steps"] for r in records)
    inner = sum(r["inner_steps_mean"] * r["aggressive_steps"] for r in records)
    aggressive_seconds = sum(r["wall_time"] for r in records if r["aggressive_steps"] > 0)
    torch.manual_seed(seed)
    metrics = _evaluate_vae(setup, budget.iw_samples)
    return {"data": data, "rule": spec, "rule_object": repr(rule) if rule is not None else "catch_up=None (paper)",
            "seed": seed, "metrics": metrics, "aggressive_updates": updates,
            "inner_steps_per_update": inner / updates if updates else 0.0,
            "probe_forwards_per_update": (getattr(rule, "evaluations", 0) / updates) if updates else 0.0,
            "train_seconds": seconds, "aggressive_epoch_seconds": aggressive_seconds,
            "history": json_safe(records), "settings": setup.settings}


def _stats(values: Sequence[float]) -> Dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def aggregate(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per data set and rule: mean/sd/min/max over seeds; and the verdict against ``paper``."""
    out: Dict[str, Any] = {}
    for data in sorted({r["data"] for r in runs}):
        rules: Dict[str, Any] = {}
        for spec in dict.fromkeys(r["rule"] for r in runs if r["data"] == data):
            rows = [r for r in runs if r["data"] == data and r["rule"] == spec]
            agg = {k: _stats([r["metrics"][k] for r in rows]) for k in ("iw_nll", "neg_elbo", "kl", "mi", "au")}
            agg.update({k: _stats([r[k] for r in rows]) for k in
                        ("inner_steps_per_update", "probe_forwards_per_update", "train_seconds")})
            agg["seeds"] = [r["seed"] for r in rows]
            rules[spec] = agg
        paper = rules.get("paper")
        if paper is not None:
            for spec, agg in rules.items():
                if spec == "paper":
                    continue
                # "the same quality within the spread over seeds": the rule's mean no worse than the paper
                # rule's worst seed (MI and AU at least its minimum, IW-NLL at most its maximum)
                within = {"mi": agg["mi"]["mean"] >= paper["mi"]["min"], "au": agg["au"]["mean"] >= paper["au"]["min"],
                          "iw_nll": agg["iw_nll"]["mean"] <= paper["iw_nll"]["max"]}
                half = agg["inner_steps_per_update"]["mean"] <= 0.5 * paper["inner_steps_per_update"]["mean"]
                agg["verdict"] = {"quality_within_paper_spread": within, "at_most_half_the_steps": half,
                                  "meets_aim": all(within.values()) and half,
                                  "same_seeds_as_paper": agg["seeds"] == paper["seeds"]}
        out[data] = rules
    return out


def format_table(runs: List[Dict[str, Any]], summary: Dict[str, Any]) -> str:
    lines = []
    for data, rules in summary.items():
        lines.append(f"\n{data}")
        lines.append("| rule | seed | inner steps / update | probe fwd / update | IW-NLL | -ELBO | KL | MI | AU | train s |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for spec, agg in rules.items():
            for r in (r for r in runs if r["data"] == data and r["rule"] == spec):
                m = r["metrics"]
                lines.append(f"| {spec} | {r['seed']} | {r['inner_steps_per_update']:.1f} | "
                             f"{r['probe_forwards_per_update']:.1f} | {m['iw_nll']:.2f} | {m['neg_elbo']:.2f} | "
                             f"{m['kl']:.3f} | {m['mi']:.3f} | {m['au']} | {r['train_seconds']:.0f} |")
            f = lambda k, d=2: f"{agg[k]['mean']:.{d}f} ± {agg[k]['sd']:.{d}f}"  # noqa: E731
            lines.append(f"| **{spec}** | mean ± sd | {f('inner_steps_per_update', 1)} | "
                         f"{f('probe_forwards_per_update', 1)} | {f('iw_nll')} | {f('neg_elbo')} | {f('kl', 3)} | "
                         f"{f('mi', 3)} | {f('au', 1)} | {f('train_seconds', 0)} |")
        for spec, agg in rules.items():
            if "verdict" in agg:
                v = agg["verdict"]
                lines.append(f"{spec}: no worse than paper's worst seed {v['quality_within_paper_spread']}, "
                             f"<= half the steps: {v['at_most_half_the_steps']}, meets the aim: {v['meets_aim']}")
    return "\n".join(lines)


def format_markdown(runs: List[Dict[str, Any]], summary: Dict[str, Any]) -> str:
    """One row per rule: mean ± sd over seeds (per-seed MI / IW-NLL in brackets) and the verdict."""
    lines = []
    for data, rules in summary.items():
        paper_steps = rules["paper"]["inner_steps_per_update"]["mean"] if "paper" in rules else None
        lines.append(f"\n{data}\n")
        lines.append("| rule | inner steps / update | of the paper's | probe fwd / update | MI (seeds) | AU | "
                     "IW-NLL (seeds) | KL | aim met |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for spec, agg in rules.items():
            rs = [r for r in runs if r["data"] == data and r["rule"] == spec]
            f = lambda k, d=2: f"{agg[k]['mean']:.{d}f} ± {agg[k]['sd']:.{d}f}"  # noqa: E731
            seeds = lambda k: " / ".join(f"{r['metrics'][k]:.2f}" for r in rs)  # noqa: E731
            share = f"{agg['inner_steps_per_update']['mean'] / paper_steps:.0%}" if paper_steps else "-"
            verdict = "-"
            if "verdict" in agg:
                v = agg["verdict"]
                bad = [k for k, ok in v["quality_within_paper_spread"].items() if not ok]
                verdict = "yes" if v["meets_aim"] else "no: " + ", ".join(
                    bad + ([] if v["at_most_half_the_steps"] else ["steps"]))
            lines.append(f"| `{spec}` | {f('inner_steps_per_update', 1)} | {share} | "
                         f"{agg['probe_forwards_per_update']['mean']:.1f} | {f('mi')} ({seeds('mi')}) | "
                         f"{f('au', 1)} | {f('iw_nll')} ({seeds('iw_nll')}) | {f('kl')} | {verdict} |")
    return "\n".join(lines)


def plot(runs: List[Dict[str, Any]], path: Path) -> None:
    """Inner steps per update against test MI and IW-NLL, one point per run, one panel pair per data set."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = sorted({r["data"] for r in runs})
    fig, axes = plt.subplots(len(datas), 2, figsize=(10, 3.6 * len(datas)), squeeze=False)
    for row, data in zip(axes, datas):
        specs = list(dict.fromkeys(r["rule"] for r in runs if r["data"] == data))
        for i, spec in enumerate(specs):
            rs = [r for r in runs if r["data"] == data and r["rule"] == spec]
            for ax, key in zip(row, ("mi", "iw_nll")):
                ax.scatter([r["inner_steps_per_update"] for r in rs], [r["metrics"][key] for r in rs],
                           label=spec, color=f"C{i}", marker="o" if spec == "paper" else "x")
        for ax, key in zip(row, ("test MI (nats)", "test IW-NLL (nats)")):
            ax.set_xlabel("inner steps per aggressive decoder update")
            ax.set_ylabel(key)
            ax.set_title(data)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("synthetic", "text"), nargs="+", default=["synthetic"])
    p.add_argument("--rules", nargs="+", default=["paper", "probe:5"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--window", type=int, default=15, help="the paper rule's window (first_loss's too)")
    p.add_argument("--max-inner-steps", type=int, default=100)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--warm-up", type=float, default=1.5, help="text: epochs of KL annealing from 0.1 to 1")
    p.add_argument("--max-aggressive-epochs", type=int, default=1, help="text: cap on aggressive epochs")
    p.add_argument("--iw-samples", type=int, default=500, help="importance samples of the test IW-NLL")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--from-json", action="store_true", help="print the table of --out without training")
    p.add_argument("--markdown", action="store_true", help="with --from-json: one row per rule")
    p.add_argument("--figure", type=Path, default=None, help="with --from-json: steps against MI / IW-NLL (PNG)")
    args = p.parse_args(argv)
    if args.from_json:
        doc = json.loads(args.out.read_text())
        print(format_table(doc["runs"], aggregate(doc["runs"])))
        if args.markdown:
            print(format_markdown(doc["runs"], aggregate(doc["runs"])))
        if args.figure is not None:
            plot(doc["runs"], args.figure)
        return
    torch.set_num_threads(args.threads)
    runs: List[Dict[str, Any]] = []
    if args.out.exists():  # go on after a killed job: keep what finished
        runs = json.loads(args.out.read_text()).get("runs", [])
    done = {(r["data"], r["rule"], r["seed"]) for r in runs}
    for data in args.data:
        budget = budget_for(data, args)
        for seed in args.seeds:
            for spec in args.rules:
                if (data, spec, seed) in done:
                    continue
                make_rule(spec, args.window)  # a bad spec fails before any training
                r = run(data, spec, seed, budget, args.window, args.max_inner_steps)
                runs.append(r)
                m = r["metrics"]
                print(f"{data} {spec} seed {seed}: {r['inner_steps_per_update']:.1f} steps/update, "
                      f"MI {m['mi']:.3f} AU {m['au']} IW-NLL {m['iw_nll']:.2f} KL {m['kl']:.3f} "
                      f"{r['train_seconds']:.0f} s", flush=True)
                doc = {"command": " ".join(["python -m benchmarks.catch_up"] + list(argv or sys.argv[1:])),
                       "budget": {d: vars(budget_for(d, args)) for d in args.data},
                       "window": args.window, "max_inner_steps": args.max_inner_steps,
                       "runs": runs, "summary": aggregate(runs)}
                write_json(args.out, json_safe(doc))
    print(format_table(runs, aggregate(runs)))


if __name__ == "__main__":
    main()
