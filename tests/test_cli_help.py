"""Every command's and sub-command's ``--help``, as a user sees it: no description empty or lost to Rich markup.

Rich reads a bracketed note such as ``[recipe: fast 8, seed 4]`` as a style tag and deletes it, so ``--batch-size``
once showed only " .". The app is walked (not a fixed list), so a command added later is covered too.
"""
from __future__ import annotations

import re
from typing import Iterator, List, Tuple

import pytest
import typer
from rich.text import Text
from typer.testing import CliRunner

from edgecls.cli import app

# one option per line: no wrapping, so each row can be read whole
_WIDE = {"COLUMNS": "1000", "TERMINAL_WIDTH": "1000", "NO_COLOR": "1"}


def _walk(cmd, path: List[str]) -> Iterator[Tuple[List[str], object]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, path + [name])


COMMANDS = list(_walk(typer.main.get_command(app), []))


def _id(item) -> str:
    return " ".join(["edgecls"] + item[0])


def test_the_walk_reaches_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"train", "export", "run", "serve", "eval", "demo"} <= names, names


def test_the_app_parses_rich_markup_on_purpose():
    # help texts are written for Rich's markup mode ("rich"): a bracketed note is markup there, so none may carry one
    assert app.rich_markup_mode == "rich"


def _params(cmd):
    return [p for p in cmd.params if p.name != "help"]


@pytest.mark.parametrize("item", COMMANDS, ids=_id)
def test_every_parameter_has_help_that_survives_rich_markup(item):
    path, cmd = item
    for p in _params(cmd):
        text = (getattr(p, "help", None) or "").strip()
        where = f"edgecls {' '.join(path)} {'/'.join(p.opts)}"
        assert text, f"{where}: empty help"
        assert text != ".", f"{where}: help is a bare '.'"
        shown = Text.from_markup(text).plain
        assert shown == text, f"{where}: Rich markup eats part of the help: {text!r} shows as {shown!r}"


@pytest.mark.parametrize("item", COMMANDS, ids=_id)
def test_rendered_help_shows_every_description_whole(item):
    path, cmd = item
    r = CliRunner().invoke(app, path + ["--help"], env=_WIDE)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "Usage:" in out
    assert not re.search(r"\bissues?\s*#?\d+", out, re.I), f"edgecls {' '.join(path)}: --help names an internal issue"
    rows = [line for line in out.splitlines() if line.startswith("│ ")]
    for line in rows:
        cells = line.strip("│ ").rstrip()
        assert not re.search(r"\s\.$", cells), f"edgecls {' '.join(path)}: a description ends in a bare ' .': {line!r}"
    flat = re.sub(r"\s+", " ", out)
    for p in _params(cmd):
        text = re.sub(r"\s+", " ", (getattr(p, "help", None) or "").strip())
        assert text in flat, f"edgecls {' '.join(path)} {'/'.join(p.opts)}: {text!r} not shown whole in --help"
        row = [line for line in rows if any(re.search(rf"(^|[\s,]){re.escape(o)}(\s|,|$)", line) for o in p.opts)]
        if p.param_type_name == "option" and not p.is_flag and p.default is not None and p.show_default is not False:
            # a real default: typer shows it, unless the help text states it itself
            assert any("[default:" in line for line in row) or "default" in text, (
                f"edgecls {' '.join(path)} {'/'.join(p.opts)}: default {p.default!r} not shown")
