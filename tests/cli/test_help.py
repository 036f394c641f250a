"""`python run.py --help` is ours, not Hydra's boilerplate: the groups a user chooses from with their options (not
the schemas' internal entries), the registered mixers, norms and activations, the top-level keys, and examples;
its lists come from conf/ and the registries when it is printed, with the command line's overrides applied."""

from pathlib import Path

import pytest

import metaformer
import mixers
from metaformer.engine.help import config_groups, help_section
from mixers.registry import MIXERS

CONF = Path(__file__).resolve().parents[2] / "conf"
HELP = ["--help"]  # conf/config.yaml selects the template: `- override hydra/help: metaformer`


@pytest.fixture
def run_help(cli, tmp_path, monkeypatch):
    """`python run.py --help ARGS` in this process: its stdout, after checking it exited 0 and wrote no folder."""
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> str:
        outcome = cli(*HELP, *args)
        assert outcome.code == 0 and outcome.err == "", outcome.err
        assert not list(tmp_path.iterdir())  # nothing ran
        return outcome.out

    return call


def line_of(text: str, start: str) -> str:
    """The line of `text` that starts with `start`, with its wrapped continuation lines (indented) joined to it."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(start))
    joined = [lines[i]]
    for line in lines[i + 1 :]:
        if not line.startswith(" "):
            break
        joined.append(line.strip())
    return " ".join(joined)


def test_help_lists_groups_registries_keys_and_examples(run_help):
    text = run_help()
    assert "powered by Hydra" not in text and "schema" not in text and "???" not in text
    groups = config_groups(CONF)
    assert {"model", "data", "optim", "sched", "logger", "ablation", "experiment"} <= set(groups)
    for group in ("model", "data", "optim", "sched", "logger", "aug"):
        line = line_of(text, f"{group}=")
        assert all(option in line for option in groups[group]), line
    assert line_of(text, "model=").startswith("model=poolformer_cpu_patch4 ")  # the chosen one first
    for group in ("ablation", "experiment"):
        line = line_of(text, f"+{group}=NAME")
        assert all(option in line for option in groups[group]), line
    assert line_of(text, "mixer:").split("(")[0].split(None, 1)[1].strip() == ", ".join(mixers.list_mixers())
    assert ", ".join(metaformer.list_norms()) in line_of(text, "norm:")
    assert ", ".join(metaformer.list_acts()) in line_of(text, "act:")
    for key in ("mixer=", "norm=", "act=", "mixer_options=", "seed=0", "resume=true", "ablation=null"):
        assert any(line.startswith(key) for line in text.splitlines()), key
    assert "epochs, batch_size" in line_of(text, "trainer.")
    examples = [
        line for line in text.split("== Examples ==")[1].splitlines() if line.startswith("python run.py ")
    ]
    assert len(examples) == 5
    for example in (
        "python run.py model=poolformer_cpu 'mixer=[pool,pool,attn,attn]' norm=gn",
        "python run.py +ablation=norm_ln +experiment=mini",
        "python run.py -m ",
        "python run.py --cfg job",
        "python run.py data=cifar10 trainer.epochs=10",
    ):
        assert any(line.startswith(example) for line in examples), example


def test_help_shows_what_the_command_line_chose(run_help):
    text = run_help("model=poolformer_cpu", "mixer=[pool,pool,attn,attn]", "norm=gn", "+ablation=norm_ln")
    assert line_of(text, "model=").startswith("model=poolformer_cpu ")
    assert "poolformer_cpu_patch4" in line_of(text, "model=")  # among the others
    assert "now: [pool,pool,attn,attn]" in line_of(text, "mixer:")
    assert line_of(text, "+ablation=").startswith("+ablation=norm_ln ")


def test_help_lists_a_mixer_registered_later(run_help, monkeypatch):
    registered = mixers.list_mixers()
    monkeypatch.setattr(mixers, "list_mixers", lambda: sorted([*registered, "gated"]))
    assert "gated" in line_of(run_help(), "mixer:")


def test_an_unknown_section_is_refused():
    with pytest.raises(ValueError, match="unknown help section 'nope'; choose from: groups"):
        help_section("nope", None)  # type: ignore[arg-type]


@pytest.mark.slow
def test_run_py_help_in_a_real_process(run_cli):
    """The resolver the template needs is registered by what run.py imports."""
    done = run_cli(*HELP, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    # the package's own mixers: a test in this process may have registered one of its own
    built_in = [n for n in mixers.list_mixers() if MIXERS.get(n).__module__.startswith("mixers.")]
    assert ", ".join(built_in) in done.stdout and "+ablation=NAME" in done.stdout
