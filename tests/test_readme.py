"""The README's research example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_gradient_example_runs():
    text = README.read_text()
    section = text[text.index("### Gradients for research code") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["saliency"].shape == (2, 32, 32, 3)
    assert set(namespace["param_grads"]) == set(namespace["params"])


def test_pretrained_table_lists_every_name_with_its_accuracy():
    from vgg_jax import zoo

    text = README.read_text()
    assert text.index("vgg_jax.pretrained(") < text.index("## Quickstart")  # the usage opens with it
    rows = {tuple(cell.strip(" `") for cell in line.split("|")[1:3]): line for line in text.splitlines() if line.startswith("| `vgg")}
    assert set(rows) == set(zoo.WEIGHTS)
    for (name, source), entry in zoo.WEIGHTS.items():
        if entry.top1 is not None:
            assert f"{entry.top1:.2f} / {entry.top5:.2f}" in rows[name, source]
        assert entry.preprocess in rows[name, source]
