"""One CLI vocabulary: every command's help ends with a runnable example, an option name means the same type and
default in every command that has it, flags are shown as flags, and the old spellings still work."""

import re
import shlex
from collections import defaultdict

import pytest

from dlcvkit.cli import HELP, click_command
from dlcvkit.cli.options import RENAMED
from tests.cli_runner import dlcvkit_here

ROOT = click_command()


def _commands(command=ROOT, path=()):
    """(path, command) of the app, its groups and every command in them."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands())
LEAVES = [(path, c) for path, c in COMMANDS if not hasattr(c, "commands")]


def _options(command):
    return [p for p in command.get_params(command.context_class(command, help_option_names=HELP))
            if p.param_type_name == "option"]


def _kind(option) -> tuple:
    """What must agree between two commands' options of one name: the type shown and the default."""
    default = option.default.value if hasattr(option.default, "value") else option.default
    return option.display_type(None) if not option.is_flag else "flag", repr(default)


# Real differences, each with its reason: (option, command path) whose type or default may differ from the rest.
ALLOWED = {
    # bench: the defaults are the benchmark sizes of dlcvkit.bench.suite.FULL, so that results stay comparable;
    # augment sweeps sizes (repeatable); --cache is the folder of the synthetic data, not a decoding cache mode
    **{(o, ("bench", c)): "benchmark" for c in ("augment", "ema", "miou", "loader", "train", "infer", "gpu", "all")
       for o in ("--batch-size", "--img-size", "--workers", "--model", "--repeats", "--warmup", "--cache")},
    # eval probe has no run: the image side defaults to the backbone file's, --model to the file's architecture
    ("--img-size", ("eval", "probe")): "no run", ("--model", ("eval", "probe")): "no run",
    # ensembles: --run repeats in the classification commands
    ("--run", ("eval", "cls")): "ensemble", ("--run", ("predict", "cls")): "ensemble",
    # each command's own tasks
    ("--task", ("summary",)): "its tasks", ("--task", ("bench", "train")): "its tasks",
    ("--task", ("bench", "infer")): "its tasks",
    ("--out", ("demo",)): "`dlcvkit demo` alone runs",
    # the Fashion-MNIST shortcut: --from defaults to where Debian's package installs it
    ("--from", ("data", "export", "fashion-mnist")): "a known place",
}


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "dlcvkit" for p, _ in COMMANDS])
def test_every_help_ends_with_an_example_that_names_real_options(path, command):
    text = "\n".join(filter(None, (command.help, command.epilog)))
    examples = re.findall(r"^\s*Example: (dlcvkit .*)$", text, re.M)
    assert examples, f"dlcvkit {' '.join(path)} --help shows no 'Example: dlcvkit ...' line"
    words = shlex.split(examples[0].split(" > ")[0])[1:]
    words = words[:words.index("--")] if "--" in words else words  # launch: what follows is another command's
    target, at = ROOT, []
    while hasattr(target, "commands") and words and words[0] in target.commands:
        at.append(words[0])
        target = target.commands[words.pop(0)]
    assert tuple(at[:len(path)]) == path, f"the example of {path} runs {at}"
    names = {o for option in _options(target) for o in option.opts + option.secondary_opts}
    assert {w.split("=")[0] for w in words if w.startswith("-")} <= names, examples[0]


def test_an_option_name_has_one_type_and_default_everywhere():
    kinds = defaultdict(dict)
    for path, command in LEAVES:
        for option in _options(command):
            for name in (o for o in option.opts if o.startswith("--")):
                if (name, path) not in ALLOWED:
                    kinds[name][path] = _kind(option)
    differ = {name: by for name, by in kinds.items() if len(set(by.values())) > 1}
    assert not differ, differ
    assert kinds["--workers"][("eval", "probe")] == ("<int>", "-1")  # one default, one meaning (the recipe's)
    assert kinds["--batch-size"][("eval", "probe")] == ("<int>", "0")
    assert kinds["--data"][("predict", "seg")] == kinds["--data"][("segment",)] == ("<path>", "None")


def test_the_old_spellings_are_gone_from_every_command():
    for path, command in LEAVES:
        names = {o for option in _options(command) for o in option.opts}
        stale = names & {"--batch", "--arch"} | (names & {"--images", "--size"} - _KEPT.get(path, set()))
        assert not stale, (path, stale)


_KEPT = {("bench", "infer"): {"--images"}, ("bench", "gpu"): {"--size"}}  # a count, and full|tiny: no image side


def test_flags_are_shown_without_a_value_and_required_options_are_marked(capsys):
    code, out, _ = dlcvkit_here(capsys, "demo", "--help")
    assert code == 0 and re.search(r"--quick\s+Small data", out) and "<bool>" not in out
    assert "Example: dlcvkit demo --quick" in out
    code, out, _ = dlcvkit_here(capsys, "predict", "seg", "--help")
    assert code == 0 and "<bool>" not in out
    assert re.search(r"\*\s+--data\s", out) and re.search(r"\*\s+--out\s", out)  # required: starred
    for path, command in LEAVES:
        for option in _options(command):
            if "--max-steps" in option.opts:
                assert "(0 = no limit" in option.help, path


def test_old_spellings_still_work(capsys, tmp_path):
    assert set(RENAMED.values()) <= {"--model", "--batch-size", "--data", "--img-size"}
    code, out, err = dlcvkit_here(capsys, "data", "synth", "cls", "--out", tmp_path / "old", "--n", 4, "--size", 16)
    assert code == 0, err
    code, out, err = dlcvkit_here(capsys, "data", "synth", "cls", "--out", tmp_path / "new", "--n", 4,
                                  "--img-size", 16)
    assert code == 0, err
    old, new = (sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*")) for d in ("old", "new"))
    assert old == new and all((tmp_path / "old" / p).read_bytes() == (tmp_path / "new" / p).read_bytes()
                              for p in old if (tmp_path / "old" / p).is_file())
