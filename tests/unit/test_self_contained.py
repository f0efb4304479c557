"""Nothing in the repository points outside it: a clone alone builds, serves and tests.

A user's clone has no folders beside it (CI's checkout happens to, which once hid 301 failing
tests). Two ways a file can reach past the repository's root are looked for in every file git
knows of (tracked, or new and not ignored):

- a relative path with ``..`` segments (``../beside/x``) that climbs above the root when read
  from the file's own folder (where Makefiles and scripts run, and what a link in a page means);
- in Python, ``Path(__file__)`` walked up (``.parents[N]``, ``.parent.parent``) past the root.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: a relative path that starts by going up: ``../x``, ``..\x`` or a bare ``..`` in quotes
_DOTTED = re.compile(
    r"""(?:^|(?<=[\s"'`(=:,\[<{]))((?:\.\.[/\\])+[^\s"'`)\],;>}]*|\.\.(?=["'`]))"""
)
_FILE = r"Path\(__file__\)(?:\.resolve\(\)|\.absolute\(\))?"
#: walking up from a path: ``.parents[N]`` or ``.parent.parent...``
_UP = r"(?:\.parents\[(?P<index>\d+)\]|(?P<parents>(?:\.parent)+))"
#: ``HERE = Path(__file__).parent``: a name for the file or one of its folders
_FILE_NAME = re.compile(rf"^\s*(?P<name>[A-Za-z_]\w*)\s*=\s*{_FILE}{_UP}?\s*(?:#.*)?$")
_SKIPPED_SUFFIXES = {".png", ".gguf", ".ico", ".woff2"}
#: files whose ``..`` paths are data: the vendored spec's prose, and this module's examples
_SKIPPED_FILES = {"tests/support/spec/openapi.json", "tests/unit/test_self_contained.py"}


@dataclass(frozen=True)
class Escape:
    file: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def _climbs_out(relative_dir: PurePosixPath, target: str) -> bool:
    """Whether ``target``, read from ``relative_dir`` (relative to the root), leaves the root."""
    depth = len(relative_dir.parts)
    for part in re.split(r"[/\\]", target):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def escapes_in(name: str, text: str) -> list[Escape]:
    """The places in file ``name`` (relative to the root) whose paths reach outside the root."""
    folder = PurePosixPath(name).parent
    depth = len(PurePosixPath(name).parts)  # Path(__file__).parents[depth - 1] is the root
    found: list[Escape] = []
    # patterns that stand for the file or a folder above it, and how many folders up that is
    bases = {_FILE: 0}
    for number, line in enumerate(text.splitlines(), 1):
        for match in _DOTTED.finditer(line):
            if _climbs_out(folder, match.group(1)):
                found.append(Escape(name, number, line.strip()))
        if not name.endswith(".py"):
            continue
        named = _FILE_NAME.match(line)
        if named:  # how far up from the file the name already is
            bases[re.escape(named.group("name"))] = _steps(named)
        for base, start in bases.items():
            for match in re.finditer(rf"(?<![\w.]){base}{_UP}", line):
                # parents[depth - 1] (depth .parent steps from the file) is the root itself
                if start + _steps(match) > depth:
                    found.append(Escape(name, number, line.strip()))
                    break
    return found


def _steps(match: re.Match[str]) -> int:
    """How many folders up a ``.parents[N]`` or ``.parent...`` match walks (0: neither)."""
    if match.group("index") is not None:
        return int(match.group("index")) + 1
    return (match.group("parents") or "").count(".parent")


def repository_files() -> list[str]:
    """Every file of the checkout that git tracks or would add (ignored build output left out)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the files that belong to the repository are not known")
    return sorted({name for name in listed.decode().split("\0") if name})


def test_nothing_in_the_repository_points_outside_it() -> None:
    files = repository_files()
    assert "Makefile" in files
    assert (
        "tests/support/spec/openapi.json" in files
    )  # the spec is vendored, not read from beside us
    found: list[Escape] = []
    for name in files:
        path = ROOT / name
        if name in _SKIPPED_FILES or path.suffix in _SKIPPED_SUFFIXES or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary data
        found.extend(escapes_in(name, text))
    assert not found, (
        "These lines reach outside the repository, which a user's clone does not have beside it "
        "(vendor what they need into the repository instead):\n"
        + "\n".join(f"  {escape}" for escape in found)
    )


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("tests/spec.py", 'SPEC = Path(__file__).resolve().parents[2] / "beside" / "spec.json"'),
        ("tests/e2e/x.py", 'S = Path(__file__).parents[3] / "s"'),
        ("tests/e2e/x.py", 'HERE = Path(__file__).parent\nSEED = HERE.parents[2] / "beside" / "x"'),
        ("tests/x.py", "HERE = Path(__file__).resolve()\nUP = HERE.parent.parent.parent"),
        ("bench/x.py", "ROOT = Path(__file__).parent.parent.parent"),
        ("Makefile", "\tcp ../beside/spec/openapi.json tests/"),
        ("Makefile", "SPEC ?= ../beside/spec"),
        (".ci/run", 'cd "$(dirname "$0")/../.." && make test\nsource ../../env'),
        ("tests/x.py", 'SPEC = "../../beside/spec/openapi.json"'),
        ("README.md", "see [the notes](../beside/notes/README.md)"),
        ("docs/a.md", "[up](../../elsewhere.md)"),
        ("tests/x.py", "os.chdir('..' )\nos.chdir('../..')"),
        ("src/pkg/m.py", 'open(r"..\\..\\..\\secrets.txt")'),
    ],
)
def test_the_check_finds_paths_that_leave_the_root(name: str, line: str) -> None:
    assert escapes_in(name, line), line


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("tests/support/spec/__init__.py", 'SPEC_PATH = Path(__file__).with_name("openapi.json")'),
        ("tests/unit/test_x.py", "ROOT = Path(__file__).resolve().parents[2]"),
        ("bench/x.py", "ROOT = Path(__file__).resolve().parents[1]"),
        ("bench/x.py", "ROOT = Path(__file__).parent.parent"),
        ("tests/e2e/x.py", 'HERE = Path(__file__).parent\nSEED = HERE / "seed" / "x.py"'),
        ("tests/e2e/x.py", "HERE = Path(__file__).parent\nROOT = HERE.parents[1]"),
        (".ci/run", 'cd "$(dirname "$0")/.."'),
        ("docs/a.md", "[the README](../README.md)"),
        ("tests/e2e/x.py", 'HERE = "../unit/test_x.py"'),
        ("src/m.py", 'range(1..5); "a..b"; x = "..."; version = "1.2..3"'),
        ("Makefile", "\t$(BIN)/pip install -e '.[test]'"),
    ],
)
def test_the_check_leaves_paths_inside_the_root_alone(name: str, line: str) -> None:
    assert escapes_in(name, line) == []
