"""A misspelt key without `+` (`trainer.epoch=3`, `epochs=1`, `models=...`) is answered with the key that was meant,
in one line, not with Hydra's advice to add it with `+` (which only leads to the next error)."""

import pytest

CASES = {
    "a letter off": (
        ["trainer.epoch=3"],
        "unknown key trainer.epoch; did you mean trainer.epochs=3? (trainer takes: epochs, batch_size,",
    ),
    "the node left out": (
        ["epochs=1"],
        "unknown key epochs; did you mean trainer.epochs=1? (trainer takes: epochs",
    ),
    "a group's name misspelt": (
        ["models=poolformer_s12"],
        "unknown key models; did you mean model=poolformer_s12?",
    ),
    "an optimizer option": (
        ["optim.weight_decy=0.1"],
        "unknown key optim.weight_decy; did you mean optim.weight_decay=0.1? (optim takes: opt, lr,",
    ),
    "in a sweep": (["-m", "trainer.epoch=1,2"], "unknown key trainer.epoch; did you mean trainer.epochs="),
    "one of Hydra's own": (["hydra.run.dirr=x"], "unknown key hydra.run.dirr; did you mean hydra.run.dir=x?"),
    "a sweeper option": (
        ["-m", "hydra/sweeper=adaptive", "hydra.sweeper.bogus=1"],
        "unknown key hydra.sweeper.bogus; hydra.sweeper takes: _target_, baseline, margin",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_misspelt_key_is_answered_with_the_key_meant(case, cli, tmp_path, monkeypatch):
    args, expected = CASES[case]
    monkeypatch.chdir(tmp_path)
    outcome = cli(*args)
    assert outcome.code == 2 and len(outcome.lines) == 1, outcome.err
    assert outcome.lines[0].startswith(f"run.py: error: {expected}"), outcome.lines[0]
    assert "+" not in outcome.lines[0] and "Traceback" not in outcome.err
    assert not list(tmp_path.iterdir())  # refused before Hydra made a folder
