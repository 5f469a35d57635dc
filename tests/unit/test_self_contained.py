"""The project carries everything it needs: no tracked file reads or names a path outside
the repository (a sibling folder of the checkout exists on no user's machine, in no
container build and in no CI), and every document it points readers to is in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Spelled in pieces so that this file does not match itself.
OUTSIDE = [
    re.compile(re.escape("..") + r"/" + "shared"),
    re.compile(r"\b" + "shared" + r"/seed_images"),
    re.compile(r"ROOT\.parent\b"),  # the folder that holds the checkout
    re.compile(r"parents\[\d\]\.parent\b"),
    re.compile(r"\bDESIGN" + r"\.md\b"),  # a design document that is not in the repository
]


def tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listed]


def test_no_tracked_file_refers_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if not path.is_file() or path.suffix in {".png", ".jpg", ".json"}:
            continue
        text = path.read_text(errors="replace")
        for pattern in OUTSIDE:
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)}")
    assert not offenders, "\n".join(offenders)


def test_the_test_data_is_in_the_repository():
    names = {p.name for p in (ROOT / "tests" / "data").iterdir()}
    assert {"example1.jpg", "example2.png", "human1.png", "expected.json"} <= names
    tracked = {p.relative_to(ROOT).as_posix() for p in tracked_files()}
    assert all(f"tests/data/{n}" in tracked for n in names)


def test_documents_the_docs_point_to_exist():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", path.read_text()):
            assert (path.parent / target).is_file(), f"{path.name} links to missing {target}"
        for target in re.findall(r"`(docs/[\w/.-]+\.md)`", path.read_text()):
            assert (ROOT / target).is_file(), f"{path.name} names missing {target}"
