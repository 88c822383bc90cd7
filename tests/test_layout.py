"""The house rules a newcomer relies on: each file one job that fits in a few screens, no function that needs
scrolling. (The import layers are checked by import-linter in .ci/run.)"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("edgecls", "train", "export", "runtime")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def _sources():
    for room in ROOMS:
        yield from sorted((REPO / room).rglob("*.py"))


def test_files_fit_in_a_few_screens():
    big = {str(p.relative_to(REPO)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not big, f"files over {MAX_FILE_LINES} lines (split them by job): {big}"


def test_functions_fit_on_a_screen():
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.body[0].lineno + 1  # the body: a typer signature is a list of options
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_every_package_folder_is_installed():
    """pyproject lists packages by hand (edgecls.train lives in train/ ...): a folder missing there would be
    absent from a wheel or a runtime-only install while the editable checkout still imports it."""
    import tomllib

    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join((name, *init.parent.relative_to(REPO / folder).parts))
        for name, folder in setup["package-dir"].items()
        for init in (REPO / folder).rglob("__init__.py")
    }
    missing = sorted(found - set(setup["packages"]))
    assert not missing, f"package folders missing from [tool.setuptools] packages: {missing}"
