"""The synthetic hospitals of a reproduction: generated once, then loaded as case tensors.

Each site is generated into `<work>/sites/.tmp-<name>` and renamed into place when complete,
so an interrupted generation is redone, never half-used. A finished site is reused when its
`phantom.json` matches the requested profile, seed and case count (else: a clear error).
Pooled case lists (the centralized baseline, the knee evaluation pool) prefix each case id
with its site so that ids stay unique; every case keeps its own site's held-out flag.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from core.data.cache import load_site_tensors
from core.data.manifest import load_site, write_manifest
from core.data.phantom.profiles import get_profile
from core.data.phantom.site import generate_site
from core.device import available_cores
from core.models.presets import preprocess_for
from reproduce.config import PhantomConfig, SiteSpec


def _profile(spec: SiteSpec, phantom: PhantomConfig):
    profile = get_profile(spec.profile, joint=spec.joint)
    changes = {
        k: getattr(phantom, k) for k in ("size", "slices", "supersample") if getattr(phantom, k) > 0
    }
    return dataclasses.replace(profile, **changes)


def _matches(folder: Path, *, spec: SiteSpec, phantom: PhantomConfig) -> bool:
    facts = json.loads((folder / "phantom.json").read_text())
    return (facts.get("profile"), facts.get("seed"), facts.get("n_cases")) == (
        spec.profile,
        phantom.seed,
        spec.cases,
    )


def ensure_site(root: Path, *, spec: SiteSpec, phantom: PhantomConfig) -> Path:
    """The site folder `root/<profile>`, generated unless an identical one is there."""
    folder = root / spec.profile
    if (folder / "phantom.json").is_file():
        if not _matches(folder, spec=spec, phantom=phantom):
            raise ValueError(
                f"{folder} holds a phantom site generated with other settings; delete "
                f"{root} (or choose another --out) to regenerate the sites"
            )
        return folder
    tmp = root / f".tmp-{spec.profile}"
    shutil.rmtree(tmp, ignore_errors=True)
    generate_site(
        out_dir=tmp,
        joint=spec.joint,
        n_cases=spec.cases,
        seed=phantom.seed,
        profile=_profile(spec, phantom),
        workers=available_cores(),
    )
    manifest = load_site(tmp).manifest
    manifest.heldout_fraction = phantom.heldout_fraction
    write_manifest(manifest, tmp / "site.yaml")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def pooled_id(site: str, case_id: str) -> str:
    """A case's id in a pooled case list: its site's name, a slash, its own id."""
    return f"{site}/{case_id}"


class SiteCases:
    """Case tensors of the generated sites, loaded once per process (cache prepared on
    first use; the Flower clients of a federation then reuse the same cache)."""

    def __init__(self, folders: dict[str, Path], *, model_config) -> None:
        self.folders = folders
        self.model_config = model_config
        self._loaded: dict[str, list] = {}

    def joint(self, name: str) -> str:
        return load_site(self.folders[name]).joint.value

    def cases(self, name: str) -> list:
        if name not in self._loaded:
            self._loaded[name] = load_site_tensors(
                load_site(self.folders[name]), preprocess=preprocess_for(self.model_config)
            )
        return self._loaded[name]

    def pooled(self, names: Sequence[str]) -> list:
        """Every case of `names`, ids prefixed `<site>/`, held-out flags kept."""
        if len(names) == 1:
            return self.cases(names[0])
        return [
            dataclasses.replace(case, case_id=pooled_id(name, case.case_id))
            for name in names
            for case in self.cases(name)
        ]


def pooled_ids(cases: Sequence, names: Sequence[str]) -> dict[str, set[str]]:
    """The held-out case ids of each site in a case list pooled from `names`
    (`SiteCases.pooled`), to report a pooled evaluation per site; a site without held-out
    cases is left out (nothing to report it on)."""
    heldout = [c.case_id for c in cases if c.heldout]
    if len(names) == 1:
        groups = {names[0]: set(heldout)}
    else:
        groups = {name: {i for i in heldout if i.startswith(pooled_id(name, ""))} for name in names}
    return {name: ids for name, ids in groups.items() if ids}


def counts(cases: Sequence) -> dict[str, int]:
    """Training and held-out case counts (for the output's provenance)."""
    held = sum(1 for c in cases if c.heldout)
    return {"train": len(cases) - held, "heldout": held}
