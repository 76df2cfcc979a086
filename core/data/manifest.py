"""Site manifest (`site.yaml`): what a site folder holds and how it is split.

A site folder holds one subfolder per case (its name is the case id; anything may be nested
below) and optionally `labels.csv`, a masks folder and `site.yaml` at its top.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from core.config import load_config
from core.views import parse_joint

MANIFEST_NAME = "site.yaml"
# Top-level entries of a site folder that are never cases.
RESERVED_NAMES = frozenset({"masks", "labels.csv", MANIFEST_NAME, "phantom.json", ".cache"})


@dataclass
class SiteManifest:
    joint: str = ""  # knee, ankle or shoulder: required in every site.yaml (no silent default)
    site_id: str = ""
    data_root: str = "."
    labels: str = "labels.csv"
    masks: str = "masks"
    # Fraction of cases held out for evaluation; the split is a hash of the case id.
    heldout_fraction: float = 0.2
    split_salt: str = "orthofed"
    # Where `orthofed data prepare` writes the view cache; empty = outside the site folder.
    cache_dir: str = ""
    description: str = ""


@dataclass(frozen=True)
class Site:
    """A manifest resolved against the folder it describes."""

    root: Path
    manifest: SiteManifest

    @property
    def joint(self):
        return parse_joint(self.manifest.joint)

    @property
    def site_id(self) -> str:
        return self.manifest.site_id or self.root.name

    @property
    def data_root(self) -> Path:
        return (self.root / self.manifest.data_root).resolve()

    @property
    def labels_path(self) -> Path:
        return self.root / self.manifest.labels

    @property
    def masks_dir(self) -> Path:
        return self.root / self.manifest.masks

    @property
    def cache_dir(self) -> Path:
        if self.manifest.cache_dir:
            return (self.root / self.manifest.cache_dir).resolve()
        digest = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]
        return self.root.resolve().parent / f".orthofed-cache-{self.root.name}-{digest}"

    def case_dirs(self) -> list[Path]:
        """Case folders, sorted by case id."""
        reserved = set(RESERVED_NAMES) | {Path(self.manifest.masks).name}
        root = self.data_root
        if not root.is_dir():
            raise ValueError(f"{root}: site data folder not found")
        return sorted(
            p
            for p in root.iterdir()
            if p.is_dir() and p.name not in reserved and not p.name.startswith(".")
        )

    def is_heldout(self, case_id: str) -> bool:
        return is_heldout(
            case_id, fraction=self.manifest.heldout_fraction, salt=self.manifest.split_salt
        )


def is_heldout(case_id: str, *, fraction: float, salt: str = "orthofed") -> bool:
    """Deterministic held-out membership from a hash of the case id (order-independent)."""
    digest = hashlib.sha256(f"{salt}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def load_site(path: str | Path, *, joint: str | None = None) -> Site:
    """Open a site from its folder or its `site.yaml`.

    A folder without a manifest needs `joint`. Raises ValueError with an actionable message.
    """
    p = Path(path)
    if p.is_file():
        root, manifest_path = p.parent, p
    elif p.is_dir():
        root, manifest_path = p, p / MANIFEST_NAME
    else:
        raise ValueError(f"{p}: no such site folder or manifest")
    if manifest_path.is_file():
        manifest = load_config(SiteManifest, path=manifest_path)
        if not manifest.joint:
            raise ValueError(
                f"{manifest_path}: no joint given; add a line 'joint: knee|ankle|shoulder'"
            )
        if joint is not None and parse_joint(joint) != parse_joint(manifest.joint):
            raise ValueError(
                f"{manifest_path}: manifest says joint '{manifest.joint}' "
                f"but --joint {joint} was given"
            )
    elif joint is None:
        raise ValueError(
            f"{root}: no {MANIFEST_NAME} here; pass --joint or run 'orthofed data init'"
        )
    else:
        manifest = SiteManifest(joint=parse_joint(joint).value, site_id=root.name)
    parse_joint(manifest.joint)
    if not 0.0 <= manifest.heldout_fraction < 1.0:
        raise ValueError(f"{manifest_path}: heldout_fraction must be in [0, 1)")
    return Site(root=root, manifest=manifest)


def write_manifest(manifest: SiteManifest, path: Path) -> None:
    """Write a manifest as YAML (atomically)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.structured(manifest)))
    tmp.replace(path)
