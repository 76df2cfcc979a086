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
