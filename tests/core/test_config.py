import pytest

from core.config import DataConfig, PreprocessConfig, load_config


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text("min_slices: 10\npreprocess:\n  size: 64\n")
    cfg = load_config(DataConfig, path=path, overrides=["preprocess.slices=8"])
    assert (cfg.min_slices, cfg.preprocess.size, cfg.preprocess.slices) == (10, 64, 8)


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text("min_slice: 10\n")
    with pytest.raises(ValueError, match=r"data\.yaml.*min_slice"):
        load_config(DataConfig, path=path)


def test_wrong_type_rejected():
    with pytest.raises(ValueError, match="min_slices"):
        load_config(DataConfig, overrides=["min_slices=many"])


def test_preprocess_key_tracks_values():
    assert PreprocessConfig().key() == PreprocessConfig().key()
    assert PreprocessConfig(size=64).key() != PreprocessConfig().key()


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("preprocess.size=[1,2", "override 'preprocess.size=[1,2': value is not valid YAML"),
        ("preprocess.size", "override 'preprocess.size' must look like key=value"),
    ],
)
def test_a_malformed_override_is_named_in_one_line(override, says):
    with pytest.raises(ValueError) as caught:
        load_config(DataConfig, overrides=[override])
    assert str(caught.value).startswith(says) and "\n" not in str(caught.value)


def test_a_malformed_yaml_file_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("preprocess:\n  size: [1,\n")
    with pytest.raises(ValueError, match="bad.yaml: cannot read configuration") as caught:
        load_config(DataConfig, path=path)
    assert "\n" not in str(caught.value)
