"""The command line's shape: ``--help`` lists every command on one line; short functions."""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from mqttspool.cli.app import build_parser

REPO = Path(__file__).resolve().parents[2]
# Modules the ops work owns; each function in them fits on one screen.
SHORT_FUNCTION_MODULES = [
    "mqttspool/health.py",
    "mqttspool/service.py",
    "mqttspool/prometheus.py",
    "mqttspool/counters.py",
    "mqttspool/cli/runtime.py",
    "mqttspool/cli/app.py",
]
MAX_FUNCTION_LINES = 40


def _commands() -> dict[str, str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help or "" for choice in sub._choices_actions}


def test_help_lists_every_command_with_a_one_line_help() -> None:
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run(
        [sys.executable, "-m", "mqttspool", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    commands = _commands()
    assert {"run", "drain", "health", "enqueue", "status", "sensors"} <= set(commands)
    for name, text in commands.items():
        assert text, f"{name} has no help"
        assert re.search(rf"^    {re.escape(name)} +{re.escape(text)}$", out, re.MULTILINE), (
            f"{name!r}: help not on one line in:\n{out}"
        )


def test_functions_are_at_most_40_lines() -> None:
    long = []
    for module in SHORT_FUNCTION_MODULES:
        tree = ast.parse((REPO / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{module}:{node.lineno} {node.name} ({length} lines)")
    assert long == []
