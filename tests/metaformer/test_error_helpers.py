"""metaformer/errors.py: every entry point's error ends in one line and the right exit status."""

import pytest
from hydra import compose, initialize_config_dir

from metaformer.errors import ConfigError, run_main


def _raises(error: BaseException):
    def main() -> int:
        raise error

    return main


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            ValueError("unknown mixer 'nope';\n  registered: pool"),
            2,
            "prog: error: unknown mixer 'nope'; registered: pool",
        ),
        (FileNotFoundError(2, "No such file"), 1, "prog: error: [Errno 2] No such file"),
        (ConfigError("no CUDA device", exit_code=1), 1, "prog: error: no CUDA device"),
    ],
)
def test_an_error_is_one_line_and_its_exit_status(error, code, line, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_main(_raises(error), "prog")
    assert exit_.value.code == code
    assert capsys.readouterr().err.splitlines() == [line]


def test_a_config_that_does_not_compose_names_the_key(capsys, tmp_path):
    (tmp_path / "config.yaml").write_text("lr: 0.1\n")

    def main() -> int:
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
            compose("config", overrides=["lr=abc", "+x=1"]) and compose("config", overrides=["+lr=1"])
        return 0

    with pytest.raises(SystemExit) as exit_:
        run_main(main, "prog")
    err = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "lr" in err[0] and err[0].startswith("prog: error: ")
    assert run_main(lambda: None, "prog") == 0
