"""The side-by-side harnesses with the paper's code, written once: :mod:`benchmarks.parity` (its
``text.py``) and :mod:`benchmarks.image_parity` (its ``image.py``) run the same specs on the paper's
script and on our side, each run in a child process, and differ only in what a spec is, how the
script is configured and read, and the table's columns.

* specs: :class:`SpecBase` (what both harnesses' specs share: the checks of their common fields,
  ``aggressive``, ``to_dict`` / ``from_dict``) and the checks :func:`check_positive`,
  :func:`check_choice`, :func:`check_iw_samples` and :func:`check_label`;
* processes: :func:`run_command` (a child process, its output time-stamped line by line into a log,
  killed after a timeout), :func:`kill_children` (every child still running, when the harness is
  stopped), :func:`run_reference_script` (the paper's script in its scratch copy, its exit code
  checked and its output parsed), :func:`run_ours_process` (our side's module in a child process,
  as the reference runs) and, in that child, :func:`ours_parser` and :func:`run_spec_file`;
* runs: :class:`TwoSides` (what runs a harness's spec on either side; its :meth:`~TwoSides.run`
  records a failure rather than raising it), :func:`run_all` (every task, ``jobs`` at a time),
  :func:`guarded` (no run outlives the harness), :func:`make_result` (a run's record),
  :func:`relabel` and :class:`ResultLog` (the results JSON rewritten after every finished run);
* the command line: :func:`new_parser` and :func:`add_run_arguments` (the options both harnesses
  share), :func:`show_json` (``--from-json``), :func:`start` (a run's checks, seeds and scratch
  directory), :func:`run_settings` (what the JSON records of the run) and :func:`run_specs` (every
  run, the JSON kept up to date, the table printed).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple, TypeVar, Union

from .reference import Line, ReferenceOutputError, reference_env, reference_seeds

__all__ = ["MODES", "SIDES", "IW_CHUNK", "REPO_ROOT", "SpecBase", "check_positive", "check_choice",
           "check_iw_samples", "check_label", "run_command", "kill_children", "run_reference_script", "ours_env",
           "run_ours_process", "ours_parser", "run_spec_file", "make_result", "TwoSides", "run_all", "guarded",
           "relabel", "ResultLog", "Tables", "new_parser", "add_run_arguments", "print_results", "show_json",
           "start", "run_settings", "run_specs"]

PathLike = Union[str, Path]
Result = Dict[str, Any]
T = TypeVar("T")
MODES = ("basic", "aggressive")
SIDES = ("reference", "ours")
#: the reference evaluates IW-NLL in chunks of this many samples and needs a multiple of it
IW_CHUNK = 100
#: the repository's root: our side's child process runs there, with it on ``PYTHONPATH``
REPO_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- specs
def check_positive(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer (not a bool) of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_iw_samples(value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is a multiple of :data:`IW_CHUNK`."""
    if value % IW_CHUNK:
        raise ValueError(f"iw_samples must be a multiple of {IW_CHUNK} (the reference draws its "
                         f"importance samples {IW_CHUNK} at a time), got {value}")


def check_label(value: str) -> None:
    """Raise ``ValueError`` unless the data label ``value`` is fit for file names: letters, digits,
    ``_``, ``.`` and ``-``."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise ValueError(f"data must be a label of letters, digits, '_', '.', '-', got {value!r}")


class SpecBase:
    """What both harnesses' run specs share; they are frozen dataclasses with at least these fields.

    Attributes:
        data: a label for the data set, used in tables and file names.
        iw_samples: importance samples per test example (a multiple of :data:`IW_CHUNK`).
        mode: ``"basic"`` or ``"aggressive"``.
    """

    data: str
    iw_samples: int
    mode: str

    def check_common(self, positive: Sequence[str]) -> None:
        """Raise ``ValueError`` unless the fields named in ``positive`` are positive integers,
        ``iw_samples`` a multiple of :data:`IW_CHUNK`, ``mode`` one of :data:`MODES` and ``data`` a
        label (:func:`check_label`)."""
        for name in positive:
            check_positive(name, getattr(self, name))
        check_iw_samples(self.iw_samples)
        check_choice("mode", self.mode, MODES)
        check_label(self.data)

    @property
    def aggressive(self) -> bool:
        return self.mode == "aggressive"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> Any:
        return cls(**values)


# ---------------------------------------------------------------- processes
_LIVE: "set[subprocess.Popen[str]]" = set()  # child processes running now (see kill_children)
_LIVE_LOCK = threading.Lock()


def kill_children() -> int:
    """Kill every child process :func:`run_command` has running (when the harness is stopped);
    returns how many."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        proc.kill()
    return len(procs)


def run_command(command: Sequence[str], cwd: PathLike, env: Dict[str, str], log_path: Optional[PathLike] = None,
                timeout: Optional[float] = None) -> Tuple[int, List[Line], float]:
    """Run ``command``, stamping each line of its (merged) output with the seconds since start.

    Returns ``(exit code, lines, wall seconds)``; after ``timeout`` seconds the process is killed
    (exit code -9).
    """
    start = time.perf_counter()
    lines: List[Line] = []
    proc = subprocess.Popen(list(command), cwd=str(cwd), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    with _LIVE_LOCK:
        _LIVE.add(proc)
    timer = threading.Timer(timeout, proc.kill) if timeout is not None else None
    if timer is not None:
        timer.start()
    log = open(log_path, "w") if log_path is not None else None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            stamp = time.perf_counter() - start
            lines.append((stamp, raw.rstrip("\n")))
            if log is not None:
                log.write(f"{stamp:10.3f} {raw}")
                log.flush()
        code = proc.wait()
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)
        if timer is not None:
            timer.cancel()
        if log is not None:
            log.close()
    return code, lines, time.perf_counter() - start


def _tail(lines: Sequence[Line], n: int = 15) -> str:
    return "\n".join(text for _, text in lines[-n:])


def run_reference_script(command: Sequence[str], copy_dir: PathLike, work_dir: PathLike,
                         parse: Callable[[List[Line]], Result], timeout: Optional[float] = None) -> Result:
    """Run the paper's script (``command``) in its scratch copy ``copy_dir`` with one thread and no
    GPU (:func:`benchmarks.core.reference.reference_env`), its output logged to
    ``work_dir/reference.log``; returns ``parse(lines)`` with ``wall_seconds``, ``log`` and
    ``command`` (without the interpreter) added.

    Raises:
        ReferenceOutputError: the script exited with another code than 0 (the message has the last
            lines of its output), or ``parse`` found a line missing.
    """
    log_path = Path(work_dir) / "reference.log"
    code, lines, wall = run_command(command, copy_dir, reference_env(), log_path, timeout)
    if code != 0:
        raise ReferenceOutputError(f"the reference exited with code {code}: {' '.join(command)} (in {copy_dir})\n"
                                   f"{_tail(lines)}")
    parsed = parse(lines)
    parsed.update(wall_seconds=wall, log=str(log_path), command=" ".join(command[1:]))
    return parsed


def ours_env() -> Dict[str, str]:
    """Our side's environment: this repository first on the path, one thread, unbuffered output."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run_ours_process(module: str, spec: Any, work_dir: PathLike, *, python: str = sys.executable,
                     timeout: Optional[float] = None, extra_args: Sequence[str] = ()) -> Result:
    """Our side of ``spec`` (it has ``to_dict()``) in a child process, as the reference runs, so that
    both sides' ``wall_seconds`` count interpreter start-up and imports alike:
    ``python -m <module> work_dir/spec.json work_dir/ours.json --threads 1 <extra_args>``, its output
    logged to ``work_dir/ours.log``. Returns the result it wrote with ``wall_seconds`` and ``log``
    added.

    Raises:
        RuntimeError: it exited with another code than 0 or wrote no result (the message has the
            last lines of its output).
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = work / "spec.json", work / "ours.json"
    spec_path.write_text(json.dumps(spec.to_dict(), indent=1))
    if out_path.exists():
        out_path.unlink()
    command = [python, "-m", module, str(spec_path), str(out_path), "--threads", "1", *extra_args]
    code, lines, wall = run_command(command, REPO_ROOT, ours_env(), work / "ours.log", timeout)
    if code != 0 or not out_path.is_file():
        raise RuntimeError(f"our side exited with code {code}: {' '.join(command)}\n{_tail(lines)}")
    result = json.loads(out_path.read_text())
    result.update(wall_seconds=wall, log=str(work / "ours.log"))
    return result


def ours_parser(prog: str, description: str, spec_help: str) -> argparse.ArgumentParser:
    """The command line :func:`run_ours_process` gives our side's module: ``SPEC OUT [--threads N]``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("spec", help=spec_help)
    parser.add_argument("out", help="where to write the result JSON")
    parser.add_argument("--threads", type=int, default=1)
    return parser


def run_spec_file(spec_path: PathLike, out_path: PathLike, from_dict: Callable[[Dict[str, Any]], Any],
                  run: Callable[[Any], Result], clocks: Mapping[str, Callable[[], float]]) -> Result:
    """Our side's module at work: the spec read from the JSON file ``spec_path`` (``from_dict``),
    ``run`` on it, the seconds each of ``clocks`` (``{key: clock}``) measured around the run added
    under its key, and the result written as JSON to ``out_path``; returns the result."""
    with open(spec_path) as fh:
        spec = from_dict(json.load(fh))
    start = {key: clock() for key, clock in clocks.items()}
    result = run(spec)
    for key, clock in clocks.items():
        result[key] = clock() - start[key]
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=1)
    return result


# ---------------------------------------------------------------- runs
def make_result(spec: Dict[str, Any], side: str, outcome: Dict[str, Any]) -> Result:
    """A run's record: the spec's identity and settings, then what the side returned."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return {"data": spec["data"], "mode": spec["mode"], "seed": spec["seed"], "side": side,
            "spec": dict(spec), **outcome}


def _no_arguments(spec: Any, reference_dir: Optional[PathLike]) -> Sequence[str]:
    return ()


@dataclass(frozen=True)
class TwoSides:
    """What runs one harness's spec on either side, and runs it.

    Attributes:
        reference: ``reference(spec, reference_dir, work_dir, *, python, timeout) -> outcome``: the
            paper's script on ``spec``.
        ours_module: our side's module, run by :func:`run_ours_process`.
        ours_args: ``ours_args(spec, reference_dir)``: further arguments for that module.
    """

    reference: Callable[..., Result]
    ours_module: str
    ours_args: Callable[[Any, Optional[PathLike]], Sequence[str]] = _no_arguments

    def run(self, spec: Any, side: str, work_dir: PathLike, *, reference_dir: Optional[PathLike] = None,
            python: str = sys.executable, reference_python: Optional[str] = None,
            timeout: Optional[float] = None) -> Result:
        """One run of ``spec`` on ``side`` in ``work_dir`` (the reference under ``reference_python``,
        default ``python``; either killed after ``timeout`` seconds); returns its record
        (:func:`make_result`). A failure is recorded under ``"error"`` (with the traceback's last
        lines) instead of raised.

        Raises:
            ValueError: ``side`` is not one of :data:`SIDES`.
        """
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        try:
            if side == "reference":
                if reference_dir is None:
                    raise ValueError("the reference side needs --reference-dir (a checkout of the paper's code)")
                outcome = self.reference(spec, reference_dir, work_dir, python=reference_python or python,
                                         timeout=timeout)
            else:
                outcome = run_ours_process(self.ours_module, spec, work_dir, python=python, timeout=timeout,
                                           extra_args=self.ours_args(spec, reference_dir))
        except Exception as err:  # recorded, so one broken run does not lose the others
            outcome = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
        return make_result(spec.to_dict(), side, outcome)

    def run_all(self, tasks: Sequence[Tuple[Any, str, Path]], *, jobs: int,
                on_result: Optional[Callable[[Result], None]] = None, **launch: Any) -> List[Result]:
        """:meth:`run` on every task ``(spec, side, work_dir)`` (``launch``: its ``reference_dir``,
        ``python``, ``reference_python`` and ``timeout``), through :func:`run_all`."""
        return run_all(tasks, functools.partial(self.run, **launch), jobs=jobs, on_result=on_result)


def run_all(tasks: Sequence[Tuple[Any, str, Path]], run_one: Callable[[Any, str, Path], Result], *, jobs: int,
            on_result: Optional[Callable[[Result], None]] = None) -> List[Result]:
    """``run_one(spec, side, work_dir)`` for every task ``(spec, side, work_dir)``, ``jobs`` at a time
    (threads, each waiting on its child process); ``on_result`` is called as each one finishes.
    Interrupted (Ctrl-C, SIGTERM), it starts nothing more and kills the runs under way.

    Raises:
        ValueError: ``jobs < 1``.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    results: List[Result] = []
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(run_one, spec, side, work) for spec, side, work in tasks]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            if on_result is not None:
                on_result(result)
    except BaseException:  # Ctrl-C / SIGTERM: start nothing more, and end the runs under way
        pool.shutdown(wait=False, cancel_futures=True)
        kill_children()
        raise
    pool.shutdown()
    return results


def _terminate(signum: int, frame: Any) -> None:
    kill_children()
    raise SystemExit(128 + signum)


def guarded(run: Callable[[], T]) -> T:
    """``run()``, SIGTERM turned into ``SystemExit`` meanwhile (in the main thread), and every child
    process killed when it ends by an exception (Ctrl-C, SIGTERM): no run outlives the harness."""
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        return run()
    except BaseException:  # Ctrl-C or SIGTERM: no run outlives the harness
        kill_children()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def relabel(results: Iterable[Result], data: str) -> List[Result]:
    """Copies of ``results`` with the data label ``data`` (to compare runs made under different
    ``--name``s on the same files in one table)."""
    return [{**r, "data": data} for r in results]


class ResultLog:
    """The ``on_result`` of a harness's runs: keeps every finished run's record, rewrites the JSON
    file ``path`` with all of them so far (``write_json(path, results, settings)``) and prints a line
    per run, ``[n] <data> <mode> <side> seed <seed>: <describe(result)>`` (or the error's first
    line)."""

    def __init__(self, path: PathLike, settings: Dict[str, Any],
                 write_json: Callable[[PathLike, Sequence[Result], Dict[str, Any]], Any],
                 describe: Callable[[Result], str]) -> None:
        self.path, self.settings, self.write_json, self.describe = Path(path), settings, write_json, describe
        self.results: List[Result] = []
        self._lock = threading.Lock()

    def __call__(self, result: Result) -> None:
        with self._lock:
            self.results.append(result)
            self.write_json(self.path, self.results, self.settings)
            status = f"error: {result['error'].splitlines()[0]}" if result.get("error") else self.describe(result)
            print(f"[{len(self.results)}] {result['data']} {result['mode']} {result['side']} seed {result['seed']}: "
                  f"{status}", flush=True)


# ---------------------------------------------------------------- the command line
class Tables(Protocol):
    """A harness's table module: its table as text or Markdown, its JSON written and read."""

    def format_table(self, results: Sequence[Result]) -> str: ...

    def format_markdown(self, results: Sequence[Result]) -> str: ...

    def write_json(self, path: Any, results: Sequence[Result], settings: Dict[str, Any]) -> None: ...

    def read_json(self, path: Any) -> Dict[str, Any]: ...


def new_parser(prog: str, doc: str, data_help: str) -> argparse.ArgumentParser:
    """A harness's parser (described by the first paragraph of ``doc``, its examples kept as written)
    with the options that come first in both: ``--reference-dir``, ``--data`` (``data_help``) and
    ``--name``."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-dir", help="a checkout of the paper's code (vae-lagging-encoder); never modified")
    p.add_argument("--data", help=data_help)
    p.add_argument("--name", help="label of the data set in the table and the JSON file name")
    return p


def add_run_arguments(p: argparse.ArgumentParser, *, jobs: int, out: str,
                      data_label_help: str = "with --from-json: show every run under this data label"
                      ) -> argparse.ArgumentParser:
    """Add the options that come last in both harnesses: seeds, modes, sides, ``--jobs`` (default
    ``jobs``), the time limit, interpreters, directories (``--out`` default ``out``), ``--from-json``,
    ``--data-label`` and ``--markdown``; returns ``p``."""
    p.add_argument("--seeds", type=int, nargs="+", help="default: the reference's first three seeds")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("--jobs", type=int, default=jobs, help="runs at a time (each with one thread)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run before it is killed")
    p.add_argument("--python", default=sys.executable, help="interpreter for both sides")
    p.add_argument("--reference-python", help="interpreter for the reference (default: --python)")
    p.add_argument("--work-dir", help="scratch directory (default: a new temporary one, kept)")
    p.add_argument("--out", default=out, help="directory of the JSON file")
    p.add_argument("--from-json", nargs="+", help="print the table of these JSON files instead of running")
    p.add_argument("--data-label", help=data_label_help)
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return p


def print_results(results: Sequence[Result], markdown: bool, tables: Tables) -> None:
    """The harness's table of ``results``, as Markdown with ``markdown``."""
    print(tables.format_markdown(results) if markdown else tables.format_table(results))


def show_json(args: argparse.Namespace, tables: Tables) -> List[Result]:
    """``--from-json``: the runs of every file, under ``--data-label`` when given, printed as the
    harness's table; returns them."""
    results = [r for path in args.from_json for r in tables.read_json(path)["results"]]
    if args.data_label:
        results = relabel(results, args.data_label)
    print_results(results, args.markdown, tables)
    return results


def start(parser: argparse.ArgumentParser, args: argparse.Namespace, *, script: str, scratch_prefix: str,
          needs_reference: bool, reference_error: str) -> Tuple[List[int], Path]:
    """A run's command line checked (``--data`` and ``--name``; ``--reference-dir`` when
    ``needs_reference``, else the parser's error ``reference_error``) and its seeds (``--seeds``, or
    the first three of the paper's ``script``) and scratch directory (``--work-dir``, or a new
    temporary one named ``scratch_prefix...``, made and kept)."""
    if not args.data or not args.name:
        parser.error("--data and --name are required (or --from-json)")
    if needs_reference and not args.reference_dir:
        parser.error(reference_error)
    seeds = args.seeds
    if seeds is None:
        if not args.reference_dir:
            parser.error("--seeds is required without --reference-dir")
        seeds = reference_seeds(Path(args.reference_dir) / script)[:3]
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix=scratch_prefix))
    work.mkdir(parents=True, exist_ok=True)
    return seeds, work


def run_settings(args: argparse.Namespace, argv: Optional[Sequence[str]], seeds: Sequence[int], work: Path,
                 **details: Any) -> Dict[str, Any]:
    """What the results JSON records of a run: its command line, data and name, the harness's
    ``details``, then seeds, modes, sides, jobs, threads, scratch and reference directories."""
    return {"argv": list(sys.argv[1:] if argv is None else argv), "data": args.data, "name": args.name, **details,
            "seeds": seeds, "modes": args.modes, "sides": args.sides, "jobs": args.jobs,
            "threads_per_run": 1, "work_dir": str(work),
            "reference_dir": str(Path(args.reference_dir).resolve()) if args.reference_dir else None}


def run_specs(args: argparse.Namespace, specs: Sequence[Any], settings: Dict[str, Any], work: Path, out: Path, *,
              runner: Callable[..., List[Result]], tables: Tables, describe: Callable[[Result], str],
              note: str = "") -> List[Result]:
    """Every spec on every side of ``args.sides`` through the harness's ``runner`` (its ``run_all``:
    ``args.jobs`` at a time, under ``work/runs``, with the command line's reference directory,
    interpreters and time limit), the JSON file ``out`` rewritten after each (:class:`ResultLog`),
    the table printed at the end; returns the results. ``note`` goes into the first line printed."""
    log = ResultLog(out, settings, tables.write_json, describe)
    print(f"{len(specs) * len(args.sides)} runs, {args.jobs} at a time; {note}scratch {work}; JSON {out}", flush=True)
    results = guarded(lambda: runner(specs, args.sides, work / "runs", jobs=args.jobs,
                                     reference_dir=args.reference_dir, python=args.python,
                                     reference_python=args.reference_python, timeout=args.timeout, on_result=log))
    print_results(results, args.markdown, tables)
    return results
