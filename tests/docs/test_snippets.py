"""The README's and docs/'s code runs as written: each Python snippet in a fresh interpreter (so an import that
registers something, such as `import metaformer` for timm's registry, is tested as a new user meets it), and each
`python run.py ...` command of the training docs composes (`--cfg job`'s path, in this process).

A snippet that needs a file the user brings starts with `# needs: FILE (where it comes from)`; it is skipped here
with that reason."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from metaformer.engine.command_line import check_argv, normalize_argv

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[tuple[str, str]]:
    """(page:line, code) for each fenced block of `language` in the pages."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                line = text[: match.start()].count("\n") + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match.group(2)))
    return found


SNIPPETS = blocks("python")


def test_the_pages_have_snippets():
    assert len(SNIPPETS) >= 4 and any(where.startswith("README") for where, _ in SNIPPETS)


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_python_snippet_runs_in_a_fresh_interpreter(where, code, tmp_path):
    needs = re.match(r"# needs: (.*)", code)
    if needs:
        pytest.skip(f"{where} needs {needs.group(1)}")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, f"{where}:\n{done.stderr[-2000:]}"


def run_commands() -> list[tuple[str, list[str]]]:
    """(page:line, argv) for each `python run.py ARGS` line of a bash block in the README and docs/training.md."""
    commands = []
    for where, code in blocks("bash"):
        if not where.startswith(("README", "docs/training")):
            continue
        for line in code.replace("\\\n", " ").splitlines():
            command = line.split("#", 1)[0].strip() if not line.lstrip().startswith("python run.py") else line
            command = re.sub(r"\s+#\s.*$", "", command).strip()
            if command.startswith("python run.py"):
                commands.append((where, shlex.split(command)[2:]))
    return commands


COMMANDS = run_commands()


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[" ".join(a) or "(main job)" for _, a in COMMANDS])
def test_training_command_composes(where, argv, capsys):
    if any(a in ("--help", "-h", "--cfg", "--info") or a.startswith("--") for a in argv):
        pytest.skip("Hydra's own mode")
    argv = [a for a in argv if not a.startswith(("data.root=", "resume="))]  # paths on the user's machine
    try:
        check_argv(normalize_argv(argv))  # what run.py checks before Hydra: composes, once per swept value
    except SystemExit:
        pytest.fail(f"{where}: python run.py {' '.join(argv)}: {capsys.readouterr().err.strip()}")
