"""`phantom --force` replaces only a folder that holds nothing but a phantom site; files a user
added there are named and kept (issue 15, defect 8), and --out naming a file is one line."""

import dataclasses

import pytest

from core.data.phantom.profiles import get_profile
from core.data.phantom.site import foreign_files, generate_site

MICRO = dataclasses.replace(get_profile("tiny", joint="knee"), name="micro", size=24, slices=4)


def _generate(out, *, force=False):
    return generate_site(out_dir=out, joint="knee", n_cases=1, seed=3, profile=MICRO, force=force)


def test_force_keeps_files_it_did_not_write(tmp_path):
    out = tmp_path / "site"
    _generate(out)
    assert foreign_files(out) == []
    series = next(p for p in (out / "case-0001").iterdir() if p.is_dir())
    added = [out / "notes.txt", out / "my-case" / "IM00001.dcm", series / "extra.dcm"]
    for path in added:
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine")
    with pytest.raises(ValueError, match="did not write") as err:
        _generate(out, force=True)
    assert "notes.txt" in str(err.value) and "my-case" in str(err.value)
    assert all(p.read_text() == "mine" for p in added)
    assert (out / "phantom.json").is_file()
    for path in added:
        path.unlink()
    (out / "my-case").rmdir()
    _generate(out, force=True)  # only its own files left: regenerated
    assert foreign_files(out) == []


def test_out_naming_a_file_is_refused(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("keep")
    for out in (taken, taken / "site"):
        with pytest.raises(ValueError, match=f"{taken} is a file, not a folder"):
            _generate(out)
    assert taken.read_text() == "keep"
