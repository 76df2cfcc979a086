"""Generate a whole synthetic hospital site: DICOM series per case, labels, masks, manifest.

Layout written into `out_dir`:
    <case_id>/<series folder>/IMxxxxx.dcm   one MR series per view (sagittal, coronal, axial)
    labels.csv                              case_id + one 0/1 column per label of the joint
    masks/<case_id>.nii.gz                  knee only: structures 0..11 on the sagittal grid
    site.yaml                               site manifest
    phantom.json                            generator facts for reproducibility
"""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from rich.progress import track

from core.data.manifest import MANIFEST_NAME, SiteManifest, write_manifest
from core.data.phantom.dicom_export import fake_patient, write_series
from core.data.phantom.geometry import ViewGeometry
from core.data.phantom.profiles import SiteProfile, get_profile
from core.data.phantom.render import RenderedCase, render_case
from core.paths import check_out_folder
from core.views import LABELS, VIEWS, Joint, parse_joint

GENERATOR = "orthofed-phantom"
GENERATOR_VERSION = "1.0"
FACTS_NAME = "phantom.json"


def case_id(index: int) -> str:
    return f"case-{index + 1:04d}"


def generate_site(
    *,
    out_dir: Path,
    joint: Joint | str,
    n_cases: int,
    seed: int,
    profile: SiteProfile | str | None = None,
    progress: bool = False,
    force: bool = False,
    workers: int = 1,
) -> dict:
    """Write a phantom site and return a summary (cases, seconds, prevalence per label).

    `profile` is a preset name (None: the joint's default) or a SiteProfile (tests use small
    variants). Refuses a non-empty `out_dir` unless it is a previous phantom site and `force`
    is set. `workers` processes render and write cases at once; every case draws from its own
    seed (seed, case index), so the files are the same for any number of workers.
    """
    j = parse_joint(joint)
    prof = profile if isinstance(profile, SiteProfile) else get_profile(profile, joint=j)
    if n_cases < 1:
        raise ValueError(f"--cases must be at least 1, got {n_cases}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    out = Path(out_dir)
    prepare_out_dir(out, force=force)
    start = time.perf_counter()
    rows, facts = [], {}
    with _written_cases(
        out=out, joint=j, n_cases=n_cases, seed=seed, profile=prof, workers=workers
    ) as written:
        if progress:  # its refresh thread starts after the workers were forked
            written = track(written, total=n_cases, description=f"phantom {j.value} ({prof.name})")
        for cid, case_facts, row in written:
            facts[cid] = case_facts
            rows.append(row)
    seconds = time.perf_counter() - start
    _write_labels(out / "labels.csv", j, rows)
    write_manifest(
        SiteManifest(
            joint=j.value,
            site_id=prof.name,
            description=f"synthetic phantom site ({prof.description})",
        ),
        out / MANIFEST_NAME,
    )
    prevalence = {n: float(np.mean([r[k + 1] for r in rows])) for k, n in enumerate(LABELS[j])}
    (out / FACTS_NAME).write_text(
        json.dumps(
            {
                "generator": GENERATOR,
                "version": GENERATOR_VERSION,
                "joint": j.value,
                "profile": prof.name,
                "seed": seed,
                "n_cases": n_cases,
                "mask_layout": "uint8 (column, row, slice) on the sagittal series grid; RAS affine",
                "cases": facts,
            },
            indent=1,
            sort_keys=True,
        )
    )
    return {
        "out_dir": str(out),
        "joint": j.value,
        "profile": prof.name,
        "n_cases": n_cases,
        "seed": seed,
        "seconds": seconds,
        "prevalence": prevalence,
    }


def _render_and_write(
    *, out: Path, joint: Joint, seed: int, index: int, profile: SiteProfile
) -> tuple[str, dict, list]:
    """One case: (case id, its phantom.json facts, its labels.csv row)."""
    cid = case_id(index)
    rendered = render_case(joint=joint, seed=seed, case_index=index, profile=profile)
    facts = write_case(out=out, cid=cid, rendered=rendered, profile=profile, seed=seed, index=index)
    return cid, facts, [cid, *(int(rendered.present[n]) for n in LABELS[joint])]


@contextlib.contextmanager
def _written_cases(
    *, out: Path, joint: Joint, n_cases: int, seed: int, profile: SiteProfile, workers: int
) -> Iterator[Iterator[tuple[str, dict, list]]]:
    """Every case rendered and written, in case order, by `workers` processes (1: this one).
    Cases are independent, so a multi-core machine generates a site that much sooner (the
    demo's 24-case knee site on 2 cores: 25.7 s with one worker, 13.4 s with two, the same
    bytes)."""
    if workers == 1 or n_cases == 1:
        yield (
            _render_and_write(out=out, joint=joint, seed=seed, index=i, profile=profile)
            for i in range(n_cases)
        )
        return
    # fork where the OS has it: a spawned worker would re-import the caller's main module
    # (slow for a CLI that imports torch, broken for a script read from stdin); the workers
    # are forked by the first submit, here, before the caller starts a progress-bar thread
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, n_cases), mp_context=context) as pool:
        jobs = [
            pool.submit(
                _render_and_write, out=out, joint=joint, seed=seed, index=i, profile=profile
            )
            for i in range(n_cases)
        ]
        yield (job.result() for job in jobs)


def prepare_out_dir(out: Path, *, force: bool) -> None:
    """Create `out`, or clear a previous phantom site there when `force` is set.

    `force` replaces only a folder that holds nothing but what the generator wrote. It
    refuses (naming them) when other files are there rather than removing only its own
    files: a user's case folder or note left in a regenerated site would be read as part of
    it (a case missing from labels.csv, a stray file in a series), and deleting anything the
    generator did not write is never ours to do.
    """
    check_out_folder(out, option="--out")
    if out.is_dir() and any(out.iterdir()):
        if not is_phantom_site(out):
            raise ValueError(
                f"{out} is not empty and is not a phantom site; choose an empty or new folder"
            )
        if not force:
            raise ValueError(f"{out} already holds a phantom site; pass --force to overwrite it")
        foreign = foreign_files(out)
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise ValueError(
                f"{out} holds files the phantom generator did not write "
                f"({', '.join(str(p) for p in foreign[:3])}{more}): --force would delete them; "
                "move them away or choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def foreign_files(site: Path) -> list[Path]:
    """Paths under a phantom site (relative to it) that the generator did not write, judged
    from its phantom.json: case folders with their series of IMnnnnn.dcm slices, masks/,
    labels.csv, site.yaml and phantom.json."""
    cases = json.loads((site / FACTS_NAME).read_text()).get("cases", {})
    top = {"labels.csv", MANIFEST_NAME, FACTS_NAME, "masks", *cases}
    masks = {f"{cid}.nii.gz" for cid in cases}
    foreign = []
    for path in sorted(site.rglob("*")):
        rel = path.relative_to(site)
        parts = rel.parts
        if parts[0] not in top:
            ours = False
        elif parts[0] == "masks":
            ours = len(parts) == 1 or (len(parts) == 2 and parts[1] in masks)
        elif parts[0] in cases:
            ours = _case_entry(parts[1:], series=cases[parts[0]].get("series", {}).values())
        else:
            ours = len(parts) == 1 and path.is_file()
        if not ours and not any(parent in foreign for parent in rel.parents):
            foreign.append(rel)
    return foreign


def _case_entry(parts: tuple[str, ...], *, series) -> bool:
    """Whether a path inside a case folder is one the generator wrote (a series folder or
    one of its IMnnnnn.dcm slices)."""
    if not parts:
        return True
    if parts[0] not in set(series) or len(parts) > 2:
        return False
    return len(parts) == 1 or re.fullmatch(r"IM\d{5}\.dcm", parts[1]) is not None


def is_phantom_site(folder: Path) -> bool:
    try:
        facts = json.loads((folder / FACTS_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(facts, dict) and facts.get("generator") == GENERATOR


def write_case(
    *, out: Path, cid: str, rendered: RenderedCase, profile: SiteProfile, seed: int, index: int
) -> dict:
    """Write one case's series (and knee mask); return its facts for phantom.json."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 7919]))
    patient = fake_patient(rng)
    series_numbers = rng.permutation(len(VIEWS)) + 3
    file_numbers = (rng.permutation(len(VIEWS) * profile.slices) + 1).reshape(len(VIEWS), -1)
    series = {}
    for v, view in enumerate(VIEWS):
        if view not in rendered.views:  # the profile does not acquire this view
            continue
        rv = rendered.views[view]
        folder = out / cid / f"SE{int(series_numbers[v]):06d}"
        write_series(
            image=rv.image,
            geometry=rv.geometry,
            folder=folder,
            profile=profile,
            joint=rendered.joint,
            patient=patient,
            keys=(seed, cid),
            series_number=int(series_numbers[v]),
            file_numbers=[int(n) for n in file_numbers[v]],
        )
        series[view.value] = folder.name
        if rv.labels is not None:
            write_mask(out / "masks" / f"{cid}.nii.gz", rv.labels, rv.geometry)
    return {
        "patient_id": patient.patient_id,
        "series": series,
        "labels": {k: int(v) for k, v in rendered.present.items()},
        "lesions": _jsonable(rendered.lesion_params),
    }


def write_mask(path: Path, labels: np.ndarray, geometry: ViewGeometry) -> None:
    """Label volume (slices, rows, columns) as NIfTI (column, row, slice) with a RAS affine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = geometry.index_to_patient()
    affine[:2] *= -1.0  # LPS -> RAS
    img = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.uint8), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def _write_labels(path: Path, joint: Joint, rows: list[list]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", *LABELS[joint]])
        writer.writerows(rows)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (np.floating, float)):
        return round(float(obj), 4)
    return obj
