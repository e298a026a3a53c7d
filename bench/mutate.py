#!/usr/bin/env python3
"""Mutation testing for the safety modules: do their tests notice a one-token change?

    python bench/mutate.py market_agent/actions/guards.py tests/test_actions_guards.py
    python bench/mutate.py market_agent/redact.py tests/test_redact.py --jobs 2

Each mutant changes one token of the module (a comparison, a boolean operator, a
constant, `max`/`min`, `is`/`is not`, a `return` value...). The repository is copied
once per job into a temporary folder; each mutant is written there and the named tests
run against it (`pytest -x`, with a timeout). A mutant the tests pass on *survived*.

The score counts only mutants not listed as equivalent in `bench/mutation-equivalents.txt`
(a line per equivalent mutant: `path | source line, stripped | before -> after | why`).
Prints the score and every survivor; exits 1 when the score is under `--min-score`.
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import shutil
import subprocess
import sys
import tempfile
import tokenize
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "bench" / "mutation-equivalents.txt"

#: Operator and name swaps: each original token maps to its mutants.
SWAPS: dict[str, tuple[str, ...]] = {
    "==": ("!=",),
    "!=": ("==",),
    "<": ("<=", ">"),
    "<=": ("<", ">"),
    ">": (">=", "<"),
    ">=": (">", "<"),
    "+": ("-",),
    "-": ("+",),
    "*": ("/",),
    "/": ("*",),
    "//": ("*",),
    "%": ("*",),
    "+=": ("-=",),
    "-=": ("+=",),
    "and": ("or",),
    "or": ("and",),
    "in": ("not in",),
    "is": ("is not",),
    "True": ("False",),
    "False": ("True",),
    "None": ('""',),
    "max": ("min",),
    "min": ("max",),
    "any": ("all",),
    "all": ("any",),
    "break": ("continue",),
    "continue": ("break",),
}


@dataclass(frozen=True)
class Mutant:
    line: int
    col: int
    before: str
    after: str
    source_line: str

    def key(self, path: str) -> tuple[str, str, str, str]:
        return (path, self.source_line.strip(), self.before, self.after)

    def describe(self, path: str) -> str:
        return f"{path}:{self.line}: {self.before} -> {self.after}   | {self.source_line.strip()}"


def mutants(source: str) -> list[Mutant]:
    """Every one-token mutant of `source` (docstrings, annotations-free strings skipped)."""
    lines = source.splitlines()
    skipped = _annotation_spans(source)
    found: list[Mutant] = []
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for index, token in enumerate(tokens):
        (row, col), text = token.start, token.string
        if row > len(lines):  # the end marker
            break
        line = lines[row - 1]
        if any(start <= (row, col) < end for start, end in skipped):
            continue
        if line.lstrip().startswith(("import ", "from ", "@", "#")):
            continue
        for after in _replacements(token, tokens, index):
            found.append(Mutant(row, col, text, after, line))
    return [mutant for mutant in found if _compiles(apply(source, mutant))]


def _compiles(source: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(source, "<mutant>", "exec")
        except SyntaxError:
            return False
    return True


Span = tuple[tuple[int, int], tuple[int, int]]


def _annotation_spans(source: str) -> list[Span]:
    """Where type annotations stand: a mutant there changes nothing that runs."""
    spans: list[Span] = []
    for node in ast.walk(ast.parse(source)):
        hints: list[ast.expr | None] = []
        if isinstance(node, ast.arg | ast.AnnAssign):
            hints.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            hints.append(node.returns)
        elif isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "Literal":
            hints.append(node)
        for hint in hints:
            if hint is not None and hint.end_lineno is not None and hint.end_col_offset is not None:
                start = (hint.lineno, hint.col_offset)
                spans.append((start, (hint.end_lineno, hint.end_col_offset)))
    return spans


def _replacements(token: tokenize.TokenInfo, tokens: list[tokenize.TokenInfo], i: int) -> list[str]:
    text = token.string
    if token.type == tokenize.NUMBER:
        return _number_mutants(text)
    if token.type == tokenize.STRING:
        return [] if _is_docstring(tokens, i) or text.startswith(("f", "F")) else ['"XX"']
    if token.type not in (tokenize.OP, tokenize.NAME):
        return []
    if text == "not" and i + 1 < len(tokens) and tokens[i + 1].string != "in":
        return [""]  # drop a negation
    if text == "return" and tokens[i + 1].type not in (tokenize.NEWLINE, tokenize.OP):
        return ["return None;"]
    if text == "is" and i + 1 < len(tokens) and tokens[i + 1].string == "not":
        return []  # `is not` is handled as `not` removal
    previous = tokens[i - 1].string if i else ""
    if text == "in" and previous == "not":
        return []  # `not in` is handled as `not` removal
    if text in ("max", "min", "any", "all") and previous == ".":
        return []  # a method of that name, not the builtin
    return list(SWAPS.get(text, ()))


def _number_mutants(text: str) -> list[str]:
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        return ["0.0"] if float(text.replace("_", "")) else ["1.0"]
    return ["1"] if value == 0 else ["0", str(value + 1)]


def _is_docstring(tokens: list[tokenize.TokenInfo], i: int) -> bool:
    previous = next(
        (t for t in reversed(tokens[:i]) if t.type not in (tokenize.NL, tokenize.COMMENT)), None
    )
    return previous is None or previous.type in (tokenize.INDENT, tokenize.NEWLINE, tokenize.DEDENT)


def apply(source: str, mutant: Mutant) -> str:
    lines = source.splitlines(keepends=True)
    line = lines[mutant.line - 1]
    lines[mutant.line - 1] = (
        line[: mutant.col] + mutant.after + line[mutant.col + len(mutant.before) :]
    )
    return "".join(lines)


def load_equivalents() -> dict[tuple[str, str, str, str], str]:
    known: dict[tuple[str, str, str, str], str] = {}
    if not EQUIVALENTS.exists():
        return known
    for raw in EQUIVALENTS.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        path, line, change, why = (part.strip() for part in raw.split(" | ", 3))
        before, _, after = change.partition(" -> ")
        known[(path, line, before, after)] = why
    return known


class Sandbox:
    """A copy of the repository in which one mutant at a time is tried."""

    def __init__(self, module: str, tests: list[str], timeout: float) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mutate-"))
        for name in ("market_agent", "tests", "examples", "prometheus", "pyproject.toml"):
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(
                    source, self.dir / name, ignore=shutil.ignore_patterns("__pycache__")
                )
            elif source.exists():
                shutil.copy2(source, self.dir / name)
        self.module = self.dir / module
        self.original = self.module.read_text()
        self.tests = tests
        self.timeout = timeout

    def run(self, source: str | None = None) -> bool:
        """Whether the tests pass with `source` as the module (the original when None)."""
        self.module.write_text(self.original if source is None else source)
        env = {**os.environ, "PYTHONPATH": str(self.dir), "PYTHONDONTWRITEBYTECODE": "1"}
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
        try:
            done = subprocess.run(
                [*command, *self.tests],
                cwd=self.dir,
                env=env,
                capture_output=True,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired:
            return False  # a hang is noticed
        finally:
            self.module.write_text(self.original)
        return done.returncode == 0

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="the module to mutate, relative to the repository")
    parser.add_argument("tests", nargs="+", help="test files or node ids to run")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant")
    parser.add_argument("--min-score", type=float, default=0.0, help="fail under this (0-100)")
    parser.add_argument("--lines", help="only mutate lines FROM-TO (e.g. 40-120)")
    args = parser.parse_args()

    source = (ROOT / args.module).read_text()
    todo = mutants(source)
    if args.lines:
        first, _, last = args.lines.partition("-")
        todo = [m for m in todo if int(first) <= m.line <= int(last or first)]
    equivalents = load_equivalents()
    sandboxes = [Sandbox(args.module, args.tests, args.timeout) for _ in range(args.jobs)]
    try:
        if not sandboxes[0].run():
            print("the tests fail on the unmutated module: fix them first", file=sys.stderr)
            return 2
        survived = _run_all(todo, source, sandboxes)
    finally:
        for sandbox in sandboxes:
            sandbox.remove()
    return _report(args, todo, survived, equivalents)


def _run_all(todo: list[Mutant], source: str, sandboxes: list[Sandbox]) -> list[Mutant]:
    free = list(sandboxes)

    def attempt(mutant: Mutant) -> Mutant | None:
        sandbox = free.pop()
        try:
            return mutant if sandbox.run(apply(source, mutant)) else None
        finally:
            free.append(sandbox)

    with ThreadPoolExecutor(len(sandboxes)) as pool:
        results = list(pool.map(attempt, todo))
    return [mutant for mutant in results if mutant is not None]


def _report(
    args: argparse.Namespace,
    todo: list[Mutant],
    survived: list[Mutant],
    equivalents: dict[tuple[str, str, str, str], str],
) -> int:
    equivalent = [m for m in survived if m.key(args.module) in equivalents]
    live = [m for m in survived if m.key(args.module) not in equivalents]
    counted = len(todo) - len(equivalent)
    score = 100.0 * (counted - len(live)) / counted if counted else 100.0
    print(f"{args.module}: {len(todo)} mutants, {len(todo) - len(survived)} killed, ")
    print(f"  {len(equivalent)} equivalent, {len(live)} survived: score {score:.1f}%")
    for mutant in live:
        print("  SURVIVED  " + mutant.describe(args.module))
    for mutant in equivalent:
        why = equivalents[mutant.key(args.module)]
        print(f"  equivalent {mutant.describe(args.module)}  ({why})")
    return 1 if score < args.min_score else 0


if __name__ == "__main__":
    sys.exit(main())
