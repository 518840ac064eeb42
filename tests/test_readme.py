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
