"""metaformer/errors.py's answers to typos: a list the shell split at its spaces, and a misspelt key, named with the
key that was meant instead of Hydra's advice to add it with `+` (which leads to the next error)."""

import pytest
from hydra import compose, initialize_config_dir

from metaformer.errors import check_split_lists, closest_key, composition_message, unknown_key_message

SPLIT = {
    "a list with spaces": (
        ["mixer=[pool,", "pool,", "attn,", "attn]", "norm=gn"],
        "`mixer=[pool,` looks like a list split by spaces: quote it ('mixer=[pool, pool, attn, attn]') or drop the "
        "spaces (mixer=[pool,pool,attn,attn])",
    ),
    "a space after the bracket": (
        ["mixer=[", "pool,pool]"],
        "quote it ('mixer=[ pool,pool]') or drop the spaces (mixer=[pool,pool])",
    ),
    "a space before the bracket closes": (
        ["+model.dims=[32,64", "]"],
        "drop the spaces (+model.dims=[32,64])",
    ),
    "a sweep with spaces": (
        ["-m", "seed=0,", "1,", "2", "norm=gn"],
        "`seed=0,` looks like a list split by spaces: quote it ('seed=0, 1, 2') or drop the spaces (seed=0,1,2)",
    ),
    "a mapping with spaces": (
        ["mixer_options={pool:", "{pool_size:", "5}}"],
        "looks like a value split by spaces: quote it ('mixer_options={pool: {pool_size: 5}}')",
    ),
    "a bracket left open": (
        ["mixer=[pool,pool"],
        "`mixer=[pool,pool` leaves a bracket open: close it (mixer=[pool,pool])",
    ),
    "a piece on its own": (["attn]"], "`attn]` looks like a piece of a list split by spaces"),
}


@pytest.mark.parametrize("case", list(SPLIT))
def test_a_list_split_by_spaces_is_named_with_both_fixes(case):
    argv, expected = SPLIT[case]
    message = check_split_lists(argv)
    assert message is not None and expected in message and "\n" not in message


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["mixer=[pool,pool,attn,attn]", "norm=gn"],
        ["mixer=[pool, pool, attn, attn]"],  # quoted: one argument
        ["-m", "seed=0,1,2", "mixer=pool,[pool,pool,attn,attn]"],
        ["--cfg", "job", "--package", "trainer", "hydra/launcher=joblib"],
        ["hydra.run.dir=outputs/[a b]", "+model.dims=[32,64,128,256]", "data.root='/x/[a'"],
    ],
)
def test_arguments_without_a_split_list_pass(argv):
    assert check_split_lists(argv) is None


KNOWN = [
    "mixer", "norm", "seed", "model", "trainer", "optim", "model.name", "data.name", "logger.name",
    "trainer.epochs", "trainer.batch_size", "optim.lr", "optim.weight_decay", "sched.min_lr",
]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("trainer.epoch", "trainer.epochs"),  # a letter off, in its node
        ("epochs", "trainer.epochs"),  # the node left out
        ("epoch", "trainer.epochs"),
        ("optim.epochs", "trainer.epochs"),  # the wrong node
        ("trainr.epochs", "trainer.epochs"),
        ("models", "model"),  # a group's name
        ("optim.weight_decy", "optim.weight_decay"),
        ("lr", "optim.lr"),
        ("seed", "seed"),  # known: itself
        ("name", None),  # in three nodes: no guess
        ("trainer.bogus", None),
        ("bogus", None),
    ],
)
def test_closest_key(key, meant):
    assert closest_key(key, KNOWN) == meant


NODES = {
    "": ["mixer", "norm", "seed", "model", "trainer", "optim", "data"],
    "trainer": ["epochs", "batch_size", "precision"],
    "optim": ["opt", "lr", "weight_decay"],
    "model": ["name", "depths"],
    "data": None,  # open: its data set's keys
}


@pytest.mark.parametrize(
    ("key", "value", "groups", "message"),
    [
        (
            "trainer.epoch",
            None,
            None,
            "unknown key trainer.epoch; did you mean trainer.epochs? (trainer takes: epochs, batch_size, precision)",
        ),
        ("epochs", "3", None, "unknown key epochs; did you mean trainer.epochs=3? (trainer takes: epochs, "),
        (
            "models",
            "poolformer_s12",
            {"model": ["poolformer_cpu", "poolformer_s12"]},
            "unknown key models; did you mean model=poolformer_s12? (model is a config group: poolformer_cpu, "
            "poolformer_s12)",
        ),
        ("models", None, None, "unknown key models; did you mean model?"),
        (
            "trainer.bogus",
            None,
            None,
            "unknown key trainer.bogus; trainer takes: epochs, batch_size, precision",
        ),
        ("bogus", None, None, "unknown key bogus; the top level takes: mixer, norm, seed, model"),
        ("data.bogus", "1", None, "unknown key data.bogus; data takes any key: add it with +data.bogus=1"),
    ],
)
def test_unknown_key_message(key, value, groups, message):
    line = unknown_key_message(key, NODES, groups, value=value)
    assert line.startswith(message) and "\n" not in line, line


@pytest.fixture
def failed_override(tmp_path):
    """The exception Hydra raises for an override of a key the config does not have."""
    (tmp_path / "config.yaml").write_text(
        "seed: 0\nmodel:\n  name: s12\ntrainer:\n  epochs: 1\n  batch_size: 8\nsched:\n  sched: cosine\n"
    )

    def compose_error(override: str) -> BaseException:
        with (
            initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"),
            pytest.raises(Exception) as error,
        ):
            compose("config", overrides=[override])
        return error.value

    return compose_error


def test_hydras_could_not_override_names_the_key_meant(failed_override):
    assert composition_message(failed_override("trainer.epoch=3")) == (
        "unknown key trainer.epoch; did you mean trainer.epochs=3? (trainer takes: epochs, batch_size)"
    )
    assert composition_message(failed_override("epochs=3")).startswith(
        "unknown key epochs; did you mean trainer.epochs=3?"
    )
    # Nothing close: Hydra's own words, one line (the node may take the key: sched takes any scheduler keyword)
    assert composition_message(failed_override("sched.noise_pct=0.1")).startswith(
        "Could not override 'sched.noise_pct'.; To append to your config use +sched.noise_pct=0.1"
    )


def test_with_the_keys_each_node_takes_the_answer_is_exact(failed_override):
    takes = {
        "": ["seed", "model", "trainer", "sched"],
        "trainer": ["epochs", "batch_size"],
        "model": ["name"],
    }

    def known_keys(node: str):
        return ["sched", "warmup_lr", "noise_pct"] if node == "sched" else takes[node]

    line = composition_message(failed_override("trainer.bogus=1"), known_keys=known_keys)
    assert line == "unknown key trainer.bogus; trainer takes: epochs, batch_size"
    line = composition_message(failed_override("sched.noise_pct=0.1"), known_keys=known_keys)
    assert line == "sched.noise_pct is not in the config yet: add it with +sched.noise_pct=0.1"
    line = composition_message(failed_override("models=s24"), known_keys, groups={"model": ["s12", "s24"]})
    assert line == "unknown key models; did you mean model=s24? (model is a config group: s12, s24)"
