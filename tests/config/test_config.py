from pathlib import Path

import pytest

from glitchflow.config import ConfigError, config_hash, load_config
from tests.conftest import CONFIGS


def test_repo_configs_load_and_share_signal_settings():
    demo = load_config(CONFIGS / "demo.yaml")
    bench = load_config(CONFIGS / "bench.yaml")
    assert demo.signal == bench.signal
    assert demo.signal.strain_channel == "V1:Hrec_hoft_16384Hz"
    assert demo.signal.qtransform.q == 12
    assert bench.twin.duration >= 3600


def test_overrides_set_nested_keys_and_parse_yaml_values():
    cfg = load_config(CONFIGS / "demo.yaml", ["seed=42", "twin.families.blip.rate=0.5"])
    assert cfg.seed == 42
    assert cfg.twin.families.blip.rate == 0.5
    assert config_hash(cfg) != config_hash(load_config(CONFIGS / "demo.yaml"))


def test_unknown_key_names_file_and_key(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("twin:\n  durration: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "twin.durration" in str(err.value)
    assert "unknown key" in str(err.value)


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("twin.duration=-5", "twin.duration", "-5"),
        ("signal.qtransform.q=abc", "signal.qtransform.q", "abc"),
        ("twin.frame_duration=100", "twin", "multiple"),
        ("signal.qtransform.frange=[500, 8]", "signal.qtransform", "frange"),
        ("signal.sample_rate=512", "signal", "Nyquist"),
        ("twin.families.blip.witness=V1:NOPE", "twin", "V1:NOPE"),
    ],
)
def test_bad_values_fail_at_load_with_key_and_value(override, key, value):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "demo.yaml", [override])
    msg = str(err.value)
    assert "demo.yaml" in msg and key in msg and value in msg


def test_malformed_yaml_and_bad_override_syntax(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("twin: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        load_config(None, ["seed"])


def test_include_cycle_is_reported(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("include: b.yaml\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "a.yaml")
