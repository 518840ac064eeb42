"""The package's parts import one way (docs/architecture.md): the model at the bottom, the commands at the
top."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "vgg_jax"
# Each part, and the parts it may import (besides itself). Function-level imports count too.
MAY_IMPORT = {
    "util": set(),
    "model": {"util"},
    "weights": {"util", "model"},
    "research": {"util", "model", "weights"},
    "training": {"util", "model", "weights", "research"},
    "benchmark": {"util", "model", "weights", "research", "training"},
    "experiments": {"util", "model", "weights", "research", "training", "benchmark"},
    "cli": {"util", "model", "weights", "research", "training", "benchmark", "experiments"},
}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imported(path: pathlib.Path, name: str, top_level_only: bool = False) -> set[str]:
    """The vgg_jax modules a module imports, anywhere in it (`from vgg_jax.x import y` counts y when it is
    a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("vgg_jax")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([node.module] if node.module else [])
                )
            if base.startswith("vgg_jax"):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    as_module = PACKAGE.parent / (candidate.replace(".", "/") + ".py")
                    found.add(
                        candidate
                        if as_module.exists() or (PACKAGE.parent / candidate.replace(".", "/")).is_dir()
                        else base
                    )
    return found


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def test_every_part_imports_only_the_parts_below_it():
    wrong = []
    for name, path in modules():
        here = part(name)
        if here == "":  # vgg_jax/__init__.py: the public names, from any part below the commands
            continue
        assert here in MAY_IMPORT, (
            f"{name} is in no known part; add its folder to docs/architecture.md and MAY_IMPORT"
        )
        for target in imported(path, name):
            there = part(target)
            if there and there != here and there not in MAY_IMPORT[here]:
                wrong.append(f"{name} imports {target} ({here} may not import {there})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    """Module-level imports only: a cycle there breaks `import` in one order or the other."""
    graph = {name: imported(path, name, top_level_only=True) - {name} for name, path in modules()}
    seen, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(node) :] + [node]))
        if node in seen:
            return
        stack.append(node)
        for target in graph.get(node, ()):
            visit(target)
        stack.pop()
        seen.add(node)

    for node in graph:
        visit(node)


def test_no_data_literal_over_60_lines_in_the_package():
    """Data is data: a schema or table that long ships as a package file (`records.schema.json`), not code."""
    long = []
    for name, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, (ast.Dict, ast.List, ast.Tuple, ast.Set))
                and node.end_lineno - node.lineno >= 60
            ):
                long.append(f"{name}:{node.lineno} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_one_class_declares_vgg_s_settings_and_the_configs_hold_it_never_inherit_it():
    """`ModelConfig` is the only class whose fields are VGG's settings; no class derives from it; no module
    lists VGG's fields by name (`MODEL_FIELDS` is gone)."""
    from vgg_jax.model.vgg import VGG, ModelConfig

    settings = {field for field in ModelConfig.__dataclass_fields__}
    declaring, deriving, listing = [], [], []
    for name, path in modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name not in ("ModelConfig", "VGG"):
                own = {
                    s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and hasattr(s.target, "id")
                }
                if len(own & settings) > 2:
                    declaring.append(f"{name}.{node.name}")
                if any(getattr(base, "id", None) == "ModelConfig" for base in node.bases):
                    deriving.append(f"{name}.{node.name}")
            if isinstance(node, ast.Name) and node.id == "MODEL_FIELDS":
                listing.append(name)
    assert not declaring and not deriving and not listing, (declaring, deriving, listing)
    assert settings <= set(VGG.__dataclass_fields__)


def test_the_commands_parse_with_tyro_and_no_cli_machinery_of_our_own_is_left():
    """No argparse in the package; every command declares a dataclass (`COMMAND`) that tyro parses; the old
    machinery (flags built by hand from metadata, messages rewritten by regex) is gone."""
    import dataclasses
    import importlib

    retired = {"flagged", "add_config_flags", "OneLineParser", "printer", "config_from_args", "given_fields"}
    found = []
    for name, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [f"{name} imports argparse" for alias in node.names if alias.name == "argparse"]
            elif isinstance(node, ast.ImportFrom) and node.module == "argparse":
                found.append(f"{name} imports argparse")
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in retired:
                found.append(f"{name} defines {node.name}")
            elif isinstance(node, ast.Name) and node.id in retired:
                found.append(f"{name} uses {node.id}")
    assert not found, found
    for script in sorted((PACKAGE.parent / "scripts").glob("[a-z]*.py")):
        module = importlib.import_module(f"vgg_jax.cli.{script.stem}")
        assert dataclasses.is_dataclass(module.COMMAND), script.stem
        assert "parse(" in pathlib.Path(module.__file__).read_text(), script.stem
