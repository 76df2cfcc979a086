"""Site export: DICOM tags and geometry, labels.csv, knee masks, manifest, compression, CLI."""

import csv
import dataclasses
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import typer
from typer.testing import CliRunner

from core.commands.phantom import register
from core.data.manifest import load_site
from core.data.phantom.dicom_export import Patient, write_series
from core.data.phantom.profiles import get_profile
from core.data.phantom.render import case_labels, render_case
from core.data.phantom.site import generate_site
from core.views import LABELS, Joint, View, view_from_normal

# Export checks need no resolution: a smaller grid of the `tiny` site (the CLI test uses the
# named preset).
MICRO = dataclasses.replace(get_profile("tiny", joint="knee"), name="micro", size=40, slices=5)


@pytest.fixture(scope="module", params=list(Joint))
def site(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"site-{request.param.value}")
    summary = generate_site(out_dir=out, joint=request.param, n_cases=1, seed=3, profile=MICRO)
    return request.param, out, summary


def _series(folder):
    files = list(folder.glob("*.dcm"))
    return [pydicom.dcmread(f) for f in files]


def test_layout_labels_and_manifest(site):
    joint, out, summary = site
    with (out / "labels.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["case_id", *LABELS[joint]]
    assert [r[0] for r in rows[1:]] == ["case-0001"]
    for i, r in enumerate(rows[1:]):
        expected = case_labels(joint=joint, seed=3, case_index=i, profile=MICRO)
        assert r[1:] == [str(int(expected[k])) for k in LABELS[joint]]
    loaded = load_site(out)
    assert loaded.joint == joint and loaded.site_id == MICRO.name
    assert [p.name for p in loaded.case_dirs()] == ["case-0001"]
    facts = json.loads((out / "phantom.json").read_text())
    assert facts["seed"] == 3 and set(facts["cases"]) == {"case-0001"}
    assert set(summary["prevalence"]) == set(LABELS[joint])


def test_dicom_geometry_matches_render(site):
    joint, out, _ = site
    rendered = render_case(joint=joint, seed=3, case_index=0, profile=MICRO)
    folders = [p for p in (out / "case-0001").iterdir() if p.is_dir()]
    assert len(folders) == 3
    seen = set()
    for folder in folders:
        sets = _series(folder)
        assert len(sets) == MICRO.slices
        d0 = sets[0]
        iop = np.array(d0.ImageOrientationPatient, float)
        view = view_from_normal(np.cross(iop[:3], iop[3:]))
        seen.add(view)
        g = rendered.views[view].geometry
        np.testing.assert_allclose(iop, np.r_[g.row_dir, g.col_dir], atol=1e-6)
        np.testing.assert_allclose([float(v) for v in d0.PixelSpacing], g.pixel_spacing, atol=1e-6)
        assert float(d0.SliceThickness) == pytest.approx(g.slice_thickness)
        assert float(d0.SpacingBetweenSlices) == pytest.approx(g.slice_spacing)
        assert (d0.Rows, d0.Columns) == (MICRO.size, MICRO.size)
        assert d0.SOPClassUID == pydicom.uid.MRImageStorage
        assert d0.PatientID != "case-0001" and d0.PatientName and d0.AccessionNumber
        assert len({d.SOPInstanceUID for d in sets}) == MICRO.slices
        assert len({d.FrameOfReferenceUID for d in sets}) == 1
        sets.sort(key=lambda d: d.InstanceNumber)
        positions = np.array([[float(v) for v in d.ImagePositionPatient] for d in sets])
        np.testing.assert_allclose(positions, g.slice_positions(), atol=1e-4)
        pixels = np.stack([d.pixel_array for d in sets]).astype(float) / 2000.0
        assert np.abs(pixels - np.clip(rendered.views[view].image, 0, 4095 / 2000)).max() < 1e-3
        for d in sets:
            assert all(len(str(v)) <= 16 for v in d.ImagePositionPatient)
    assert seen == set(View)
    if joint is Joint.KNEE:
        _check_mask(out, rendered.views[View.SAGITTAL])
    else:
        assert not (out / "masks").exists()


def _check_mask(out, sag):
    img = nib.load(out / "masks" / "case-0001.nii.gz")
    data = np.asarray(img.dataobj)
    assert data.dtype == np.uint8 and data.shape == (MICRO.size, MICRO.size, MICRO.slices)
    np.testing.assert_array_equal(data.transpose(2, 1, 0), sag.labels)
    ras = img.affine @ np.array([5, 7, 3, 1.0])
    lps = sag.geometry.index_to_patient() @ np.array([5, 7, 3, 1.0])
    np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-5)


def test_same_seed_same_bytes(tmp_path):
    paths = []
    for name in ("a", "b"):
        generate_site(out_dir=tmp_path / name, joint="ankle", n_cases=1, seed=9, profile=MICRO)
        paths.append(tmp_path / name)
    files = sorted(p.relative_to(paths[0]) for p in paths[0].rglob("*.dcm"))
    assert len(files) == 3 * MICRO.slices
    for rel in files:
        assert (paths[0] / rel).read_bytes() == (paths[1] / rel).read_bytes()
    assert (paths[0] / "labels.csv").read_text() == (paths[1] / "labels.csv").read_text()


@pytest.mark.parametrize("joint", ["knee", "shoulder"])
def test_cases_rendered_in_worker_processes_are_the_same_files(tmp_path, joint):
    one, two = tmp_path / "one", tmp_path / "two"
    for out, workers in ((one, 1), (two, 2)):
        generate_site(out_dir=out, joint=joint, n_cases=3, seed=4, profile=MICRO, workers=workers)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert sum(f.suffix == ".dcm" for f in files) >= 3 * MICRO.slices * 2  # several cases
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


def test_zero_workers_is_refused_with_the_option_named(tmp_path):
    with pytest.raises(ValueError, match="--workers must be at least 1"):
        generate_site(
            out_dir=tmp_path / "s", joint="knee", n_cases=2, seed=1, profile=MICRO, workers=0
        )


@pytest.fixture(scope="module")
def coronal():
    return render_case(joint="knee", seed=2, case_index=0, profile=MICRO).views[View.CORONAL]


@pytest.mark.parametrize("syntax", ["rle", "jpegls"])
def test_compressed_series_decode_losslessly(tmp_path, syntax, coronal):
    prof = dataclasses.replace(MICRO, transfer_syntax=syntax, rescale_slope=1.5)
    rv = coronal
    patient = Patient("DOE^J", "PX1", "19800101", "F", "20240101", "101000", "A1")
    two = dataclasses.replace(rv.geometry, shape=(2, MICRO.size, MICRO.size))
    write_series(
        image=rv.image[:2],
        geometry=two,
        folder=tmp_path,
        profile=prof,
        joint=Joint.KNEE,
        patient=patient,
        keys=(2, "case-0001"),
        series_number=3,
        file_numbers=[9, 4],
    )
    ds = pydicom.dcmread(tmp_path / "IM00009.dcm")
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    expected = np.clip(np.rint(rv.image[0] * 2000 / 1.5), 0, 4095)
    np.testing.assert_array_equal(ds.pixel_array, expected.astype(np.uint16))
    assert float(ds.RescaleSlope) == 1.5


def _cli():
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps `phantom` as a named subcommand
        pass

    return app


def test_cli_contract_and_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "site"
    args = [
        "phantom",
        "--out",
        str(out),
        "--joint",
        "shoulder",
        "--cases",
        "1",
        "--seed",
        "1",
        "--profile",
        "tiny",
    ]
    res = runner.invoke(_cli(), args)
    assert res.exit_code == 0, res.output
    assert "1 cases" in res.output and "supraspinatus_tear=" in res.output
    assert (out / "labels.csv").is_file() and (out / "site.yaml").is_file()
    again = runner.invoke(_cli(), args)
    assert again.exit_code == 2 and "--force" in again.output
    forced = runner.invoke(_cli(), [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    res = runner.invoke(
        _cli(),
        [
            "phantom",
            "--out",
            str(other),
            "--joint",
            "knee",
            "--cases",
            "1",
            "--seed",
            "1",
            "--profile",
            "tiny",
        ],
    )
    assert res.exit_code == 2 and "not a phantom site" in res.output
    res = runner.invoke(
        _cli(),
        [
            "phantom",
            "--out",
            str(tmp_path / "x"),
            "--joint",
            "knee",
            "--cases",
            "1",
            "--seed",
            "1",
            "--profile",
            "nope",
        ],
    )
    assert res.exit_code == 2 and "knee-3t" in res.output and "tiny" in res.output
    res = runner.invoke(_cli(), ["phantom", "--help"])
    assert res.exit_code == 0 and "--profile" in res.output and "--seed" in res.output
