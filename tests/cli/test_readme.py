"""Every dlcvkit command the README shows exists, takes the options shown, and its --help runs."""

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dlcvkit.cli import app

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", ROOT / "launch" / "README.md"]


def _commands() -> list[tuple[str, list[str]]]:
    """(source line, argv after `dlcvkit`) of every dlcvkit invocation in the docs' code blocks and tables."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        lines = [l for block in re.findall(r"```bash\n(.*?)```", text, re.S) for l in block.splitlines()]
        lines += re.findall(r"`((?:dlcvkit|accelerate launch|sbatch)[^`]*)`", text)
        for line in lines:
            for part in line.split("&&"):
                words = shlex.split(part.replace("...", "").strip())
                if words[:1] == ["sbatch"]:
                    words = ["dlcvkit", *words[words.index("launch/slurm.sbatch") + 1 :]]
                if words[:2] == ["accelerate", "launch"]:
                    words = ["dlcvkit", *words[words.index("dlcvkit") + 1 :]] if "dlcvkit" in words else []
                if words[:1] != ["dlcvkit"]:
                    continue
                argv = words[1:]
                if argv[:1] == ["launch"] and "--" in argv:
                    cut = argv.index("--")
                    found.append((line, argv[:cut]))
                    argv = argv[cut + 1 :]
                if argv and "<command>" not in argv:
                    found.append((line, argv))
    return found


COMMANDS = _commands()


def test_the_readme_shows_every_job():
    shown = {argv[0] for _, argv in COMMANDS}
    assert {"demo", "byol", "finetune", "classify", "segment", "eval", "predict", "tsne", "sam", "launch"} <= shown


@pytest.mark.parametrize("line, argv", COMMANDS, ids=[" ".join(a)[:60] for _, a in COMMANDS])
def test_documented_command_and_options_exist(line, argv):
    command = typer.main.get_command(app)
    path = []
    while hasattr(command, "commands") and argv and argv[0] in command.commands:
        path.append(argv[0])
        command = command.commands[argv.pop(0)]
    used = [w.split("=")[0] for w in argv if w.startswith("-")]
    if hasattr(command, "commands"):  # a group: only its own options, e.g. `dlcvkit --help`
        assert argv == used and set(used) <= {"--help", "-h", "--debug"}, f"{line!r}: no such dlcvkit command"
        return
    options = {opt for param in command.params for opt in param.opts} | {"--help", "-h"}
    assert set(used) <= options, f"{line!r}: unknown options {set(used) - options}"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
