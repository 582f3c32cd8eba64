"""How long the README's main command takes here: the one time the README states comes from this.

    python -m benchmarks.main_command [--out FILE] [--dry-run]

Reads the main command from the README (the first line of its first ``bash`` block: the install,
then the ``python -m ...`` steps joined by ``&&``), runs each step after the install as the README
gives it, but with ``--out`` pointed into a temporary directory, and prints the wall time of each step
and of all of them, the CPU time its processes used (user + system, all of them together: two
runs at once can use up to twice the wall time), and what else the machine was doing: its CPU count
and load averages (1, 5 and 15 minutes) before and after. ``--out FILE`` also writes them as JSON; ``--dry-run`` prints the steps
without running them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def main_command(readme: Path = README) -> str:
    """The first line of the README's first ``bash`` block."""
    match = re.search(r"```bash\n(.+?)\n", readme.read_text(encoding="utf-8"))
    if match is None:
        raise ValueError(f"{readme}: no ```bash block")
    return match.group(1).strip()


def steps(command: str, out_dir: Path) -> List[List[str]]:
    """The ``python -m examples...`` steps of ``command`` (the install left out), each as argv for
    this interpreter, with every ``--out`` value moved under ``out_dir``."""
    found = []
    for part in command.split("&&"):
        argv = shlex.split(part)
        if argv[:3] == ["python", "-m", "pip"] or not argv:
            continue
        if argv[:2] != ["python", "-m"]:
            raise ValueError(f"main command: expected `python -m ...` steps, got {part.strip()!r}")
        for i, arg in enumerate(argv[:-1]):
            if arg == "--out":
                argv[i + 1] = str(out_dir / argv[i + 1])
        found.append([sys.executable, *argv[1:]])
    if not found:
        raise ValueError(f"main command: no `python -m ...` step after the install in {command!r}")
    return found


def _children_cpu() -> float:
    """User + system seconds of the finished child processes (and theirs, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on this platform
        return None


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.main_command", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="also write the timings as JSON to this file")
    parser.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    args = parser.parse_args(argv)
    command = main_command()
    with tempfile.TemporaryDirectory(prefix="main-command-") as tmp:
        todo = steps(command, Path(tmp))
        print(f"README main command: {command}")
        if args.dry_run:
            for step in todo:
                print("  " + shlex.join(step))
            return {"command": command, "steps": todo}
        result: Dict[str, Any] = {"command": command, "cpus": os.cpu_count(), "platform": platform.platform(),
                                  "python": platform.python_version(), "load_before": _load(), "steps": []}
        total = time.perf_counter()
        for step in todo:
            print(f"\n$ {shlex.join(step)}", flush=True)
            start, cpu = time.perf_counter(), _children_cpu()
            subprocess.run(step, cwd=ROOT, check=True)
            seconds = time.perf_counter() - start
            result["steps"].append({"argv": step[1:], "seconds": seconds, "cpu_seconds": _children_cpu() - cpu})
        result["seconds"] = time.perf_counter() - total
        result["load_after"] = _load()
    print("\nwall time, README main command (load averages 1/5/15 min before "
          f"{result['load_before']}, after {result['load_after']}, {result['cpus']} CPUs):")
    for step in result["steps"]:
        print(f"  {step['seconds']:7.0f} s  (CPU {step['cpu_seconds']:.0f} s)  python {shlex.join(step['argv'])}")
    print(f"  {result['seconds']:7.0f} s  in all ({result['seconds'] / 60:.1f} min)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    run()
