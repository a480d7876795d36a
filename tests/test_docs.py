"""The commands of the README and docs leave nothing untracked in a checkout: what they write goes where
git ignores it (data/, runs/, ...) or to files the repository keeps (docs/images, benchmarks/results)."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
#: Options whose value is a file or directory a command writes.
WRITES = ("--out", "--plot", "--save-baseline", "--json")
COMMANDS = ("mpno ", "python ", ".venv/bin/python ", "torchrun ", "/tmp/peer/bin/python ")


def commands(document: Path) -> list[str]:
    """The command lines of the shell code blocks of ``document`` (continuations joined, comments dropped)."""
    lines, language = [], None
    for line in document.read_text().replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("```"):
            language = None if language is not None else line.strip().strip("`") or "text"
            continue
        if language not in ("bash", "sh", "text"):
            continue
        for part in re.split(r"&&|;", line.split(" #")[0]):
            part = part.strip()
            if part.startswith(COMMANDS):
                lines.append(part)
    return lines


def written(command: str) -> list[str]:
    """The paths ``command`` writes: values of :data:`WRITES` and targets of ``>``."""
    words = shlex.split(command.replace("…", "x"))
    paths = []
    for i, word in enumerate(words[:-1]):
        if (word in WRITES or word == ">") and not words[i + 1].startswith("-"):
            paths.append(words[i + 1])
    return [re.sub(r"\$\{?\w+\}?", "x", p) for p in paths]


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_readme_and_docs_commands_write_only_where_git_ignores_or_keeps_it():
    checked, stray = 0, []
    for document in DOCUMENTS:
        for command in commands(document):
            for path in written(command):
                if path.startswith(("/", "~")):
                    continue  # outside the checkout
                checked += 1
                ignored = git("check-ignore", "-q", "--no-index", path).returncode == 0
                kept = git("ls-files", "--error-unmatch", path).returncode == 0 or \
                    path.startswith(("docs/images/", "benchmarks/results/", "benchmarks/baselines/"))
                if not (ignored or kept):
                    stray.append(f"{document.relative_to(ROOT)}: {command} writes {path}")
    assert checked > 10
    assert not stray, "\n".join(stray)
