"""The README and docs/ as written: the research example runs, every command's flags parse, every link
resolves."""

import importlib
import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# to the end of the command, continuations included
COMMAND = re.compile(r"python scripts/([a-z_]+)\.py((?:\\\n|[^\n`#&|;\[])*)")


def test_readme_is_short():
    assert len(README.read_text().splitlines()) < 200


def test_gradient_example_runs():
    text = README.read_text()
    section = text[text.index("### Gradients for research code") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["saliency"].shape == (2, 32, 32, 3)
    assert set(namespace["param_grads"]) == set(namespace["params"])


def test_pretrained_table_lists_every_name_with_its_accuracy():
    from vgg_jax.weights import zoo

    # the usage opens with it
    assert README.read_text().index("vgg_jax.pretrained(") < README.read_text().index("## Quickstart")
    text = (ROOT / "docs" / "weights.md").read_text()
    rows = {
        tuple(cell.strip(" `") for cell in line.split("|")[1:3]): line
        for line in text.splitlines()
        if line.startswith("| `vgg")
    }
    assert set(rows) == set(zoo.WEIGHTS)
    for (name, source), entry in zoo.WEIGHTS.items():
        if entry.top1 is not None:
            assert f"{entry.top1:.2f} / {entry.top5:.2f}" in rows[name, source]
        assert entry.preprocess in rows[name, source]


def commands():
    """(page, script, arguments) for every `python scripts/NAME.py ...` in the README and docs/."""
    found = []
    for page in PAGES:
        for match in COMMAND.finditer(page.read_text()):
            arguments = shlex.split(match.group(2).replace("\\\n", " ").replace("...", ""))
            found.append(
                pytest.param(
                    match.group(1), arguments, id=f"{page.name}:{match.group(1)}:{' '.join(arguments)[:40]}"
                )
            )
    return found


# What a command shown in part (`train.py ... --devices 4`) needs besides: its required flags and positionals.
REQUIRED = {
    "train": (["--workdir", "w"], 0),
    "bench_data": (["DATA"], 1),
    "evaluate": (["MODEL"], 1),
    "predict": (["cat.jpg"], 1),
    "convert_weights": (["SRC"], 1),
    "pack_images": (["SRC", "DST"], 2),
}


@pytest.mark.parametrize("script, arguments", commands())
def test_every_documented_command_parses(script, arguments):
    """Each command line shown parses with the command's own parser (tyro) into its config.

    Commands shown in part (`train.py ... --devices 4`) get what they leave
    out (`REQUIRED`); `{a,b}` in a command stands for each of a and b.
    """
    import itertools

    from vgg_jax.cli import parse

    assert (ROOT / "scripts" / f"{script}.py").is_file()
    command = importlib.import_module(f"vgg_jax.cli.{script}").COMMAND
    extra, positionals = REQUIRED.get(script, ([], 0))
    given = [token for token in arguments[:positionals] if not token.startswith("-")]
    if script == "train" and "--workdir" in arguments:
        extra = []
    argv = extra[len(given) :] + arguments if positionals else extra + arguments
    choices = [token.strip("{}").split(",") if token.startswith("{") else [token] for token in argv]
    for chosen in itertools.product(*choices):
        try:
            parse(command, list(chosen), f"{script}.py", "")
        except SystemExit as exit:
            assert exit.code == 0 and "--help" in chosen, f"{script}.py {' '.join(chosen)} does not parse"


def test_every_local_link_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
