import pytest

from core.data.manifest import SiteManifest, is_heldout, load_site, write_manifest


def test_heldout_is_deterministic_and_near_fraction():
    ids = [f"case-{i:04d}" for i in range(2000)]
    first = [is_heldout(c, fraction=0.2) for c in ids]
    assert first == [is_heldout(c, fraction=0.2) for c in reversed(ids)][::-1]
    assert 0.17 < sum(first) / len(ids) < 0.23


def test_manifest_round_trip_and_case_dirs(tmp_path):
    (tmp_path / "case-1").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / ".hidden").mkdir()
    write_manifest(SiteManifest(joint="ankle", site_id="a1"), tmp_path / "site.yaml")
    site = load_site(tmp_path)
    assert site.joint.value == "ankle" and site.site_id == "a1"
    assert [p.name for p in site.case_dirs()] == ["case-1"]


def test_unknown_manifest_key(tmp_path):
    (tmp_path / "site.yaml").write_text("joint: knee\nheld_out: 0.3\n")
    with pytest.raises(ValueError, match="held_out"):
        load_site(tmp_path)


def test_folder_without_manifest_needs_joint(tmp_path):
    with pytest.raises(ValueError, match="--joint"):
        load_site(tmp_path)
    assert load_site(tmp_path, joint="shoulder").joint.value == "shoulder"


@pytest.mark.parametrize("text", ["site_id: s1\n", "joint: ''\nsite_id: s1\n", ""])
def test_manifest_without_joint_is_refused(tmp_path, text):
    (tmp_path / "site.yaml").write_text(text)
    with pytest.raises(ValueError) as err:
        load_site(tmp_path, joint="ankle")  # --joint does not stand in for the manifest
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "site.yaml") in message
    assert "joint: knee|ankle|shoulder" in message
