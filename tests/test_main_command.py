"""``benchmarks.main_command`` times what the README says to run: it reads the command from the
README, runs its steps after the install with their output moved aside, and the README states the
time it measured once, naming the script."""
import re
import sys

from benchmarks import main_command
from examples.text.cli import build_parser


def test_the_main_command_is_the_install_then_the_quickstart_then_the_comparison():
    command = main_command.main_command()
    assert command.startswith("python -m pip install ")
    parts = [p.strip() for p in command.split("&&")]
    assert parts[1] == "python -m examples.quickstart"
    assert parts[2].startswith("python -m examples.text compare ")
    build_parser().parse_args(parts[2].split()[3:])  # the options the README gives exist


def test_the_steps_run_here_with_their_output_moved_aside(tmp_path):
    steps = main_command.steps("python -m pip install -e . && python -m examples.quickstart && "
                               "python -m examples.text compare --out runs/compare --seed 1", tmp_path)
    assert steps == [[sys.executable, "-m", "examples.quickstart"],
                     [sys.executable, "-m", "examples.text", "compare", "--out", str(tmp_path / "runs/compare"),
                      "--seed", "1"]]


def test_the_readme_states_the_measured_time_once():
    readme = main_command.README.read_text(encoding="utf-8")
    assert readme.count("python -m benchmarks.main_command") == 1
    sentence = next(s for s in re.split(r"(?<=\.)\s", readme) if "benchmarks.main_command" in s)
    assert re.search(r"\d+ minutes", sentence), sentence


def test_dry_run_prints_the_steps(capsys):
    main_command.run(["--dry-run"])
    printed = capsys.readouterr().out
    assert "-m examples.text compare --out " in printed and "main-command-" in printed
