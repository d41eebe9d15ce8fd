"""Daemon configuration: defaults, the example file, overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import UserError
from edge.serve.config import EdgeConfig
from edge.serve.config_file import build_config, load_config, to_toml
from ssum.cli import main as cli_main

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "edge.example.toml"


def test_defaults_follow_the_contract():
    config = load_config(None)
    assert config.input.socket == "sub" and not config.input.bind
    assert config.input.topics == ("tile/",)
    assert config.output.bind and config.output.socket == "pub"
    assert (config.batching.max_batch, config.batching.max_delay_ms) == (0, 5.0)
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9108)
    assert config.limits.max_bytes == 256 * 2**20
    assert config.overload_policy == "drop-oldest"


def test_the_example_file_is_valid_and_holds_the_defaults():
    example = load_config(EXAMPLE)
    assert example.to_dict() == EdgeConfig().to_dict()


def test_pull_input_binds_and_blocks_by_default(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[input]\nsocket = "pull"\n')
    config = load_config(path)
    assert config.input.bind
    assert config.overload_policy == "block"


def test_overrides_beat_the_file(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text("[metrics]\nport = 9200\n")
    config = load_config(path, {"metrics.port": 0, "input.endpoint": None,
                                "model": {"backend": "torch"}})
    assert config.metrics.port == 0
    assert config.input.endpoint == "tcp://127.0.0.1:5555"  # None = not overridden
    assert config.model.backend == "torch"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[batching]\nmax_batch = -1\n",
         "edge.toml: [batching] max_batch must be an integer >= 0, got -1"),
        ("[batching]\nmax_batch = true\n", "[batching] max_batch must be an integer >= 0"),
        ("[input]\nsocket = \"req\"\n", '[input] socket must be one of "sub", "pull"'),
        ("[input]\nendpoint = \"localhost\"\n", "[input] endpoint must be a ZeroMQ endpoint"),
        ("[input]\ntopics = []\n", "[input] topics must be a non-empty list"),
        ("[output]\nhwm = 1.5\n", "[output] hwm must be an integer >= 0"),
        ("[model]\nprecision = \"int4\"\n", "[model] precision must be one of"),
        ("[queues]\noverload = \"panic\"\n", "[queues] overload must be one of"),
        ("[metrics]\nport = 70000\n", "[metrics] port must be a port number"),
        ("[metrics]\nenabled = \"yes\"\n", "[metrics] enabled must be true or false"),
        ("[batching]\nmax_delay_ms = -2\n", "[batching] max_delay_ms must be a number >= 0"),
        ("[log]\nlevel = \"LOUD\"\n", "[log] level must be one of"),
        ("[batching]\nmax_bach = 4\n", "[batching] has no key 'max_bach'"),
        ("[gpu]\nindex = 0\n", "unknown section [gpu]"),
        ("input = 3\n", "[input] must be a table"),
        ("[tiling]\npatch_size = 64\noverlap = 32\n",
         "[tiling] overlap must be less than half of patch_size"),
        ("[mosaic]\nenabled = true\n", "[mosaic] directory must be set"),
        ('[inspection]\nenabled = true\ndirectory = "k"\nreference = "r.tif"\nconfirm = true\n',
         "[inspection] optical_reference must be set for confirm = true"),
        ("[security]\ncurve = true\n", "[security] server_secret_key must be set"),
        ("[batching\n", "invalid TOML"),
        ("[trust]\nmode = \"sometimes\"\n",
         '[trust] mode must be one of "every", "nth", "off", got \'sometimes\''),
        ("[trust]\nevery_n = 0\n", "[trust] every_n must be a positive integer, got 0"),
        ("[trust]\nmap = 1\n", "[trust] map must be true or false, got 1"),
    ],
)
def test_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "edge.toml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_config(path)
    assert message in str(info.value)


def test_trust_keys_reach_the_converter_and_the_pipeline(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[trust]\nmode = "nth"\nevery_n = 4\nmap = false\n')
    config = load_config(path)
    trust = config.pipeline_settings().trust
    assert (trust.mode, trust.every_n, trust.map) == ("nth", 4, False)
    assert config.converter_settings().trust
    path.write_text('[trust]\nmode = "off"\n')
    assert not load_config(path).converter_settings().trust  # the reverse is not even loaded


def test_the_confirmation_keys_reach_the_inspection_settings(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[inspection]\nconfirm_rate = 1e-5\nconfirm_distance_nm = 50\n')
    settings = load_config(path).inspection.settings()
    assert (settings.confirm_rate, settings.confirm_distance_nm) == (1e-5, 50.0)


def test_the_input_polarity_reaches_the_converter(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text("[model]\ninvert_input = true\n")
    assert load_config(path).converter_settings().invert_input
    path.write_text("[model]\n")
    assert not load_config(path).converter_settings().invert_input
    path.write_text('[model]\ninvert_input = "yes"\n')
    with pytest.raises(UserError, match="invert_input"):
        load_config(path)


def test_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_effective_config_round_trips_through_toml(tmp_path):
    config = build_config({"input": {"socket": "pull", "topics": ["tile/a"]},
                           "log": {"level": "debug"}})
    path = tmp_path / "again.toml"
    path.write_text(to_toml(config))
    again = load_config(path)
    assert again.to_dict() == config.to_dict()
    assert again.log.level == "DEBUG" and again.input.mode == "bind"


def test_check_config_prints_the_effective_config(tmp_path, capsys):
    path = tmp_path / "edge.toml"
    path.write_text("[batching]\nmax_batch = 16\n")
    assert cli_main(["edge", "check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "max_batch = 16" in out and 'overload = "auto"' in out


def test_check_config_reports_a_bad_key_in_one_line(tmp_path, capsys):
    path = tmp_path / "edge.toml"
    path.write_text("[batching]\nmax_batch = -1\n")
    assert cli_main(["edge", "check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("ssum edge: error: edge.toml: [batching] max_batch must be an integer >= 0, "
                   "got -1")


def test_the_docs_tables_are_the_configuration_fields():
    from edge.serve.config import sections
    from edge.serve.config_file import reference_table

    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    stale = [name for name in sections() if reference_table(name) not in text]
    assert not stale, f"docs/configuration.md is stale for {stale}: run tools/config_docs.py"
