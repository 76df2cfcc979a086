# ruff: noqa  (a study record kept verbatim: the code that produced the table, not project code)
"""The throwaway prototype behind docs/feature-study.md section 1 (kept verbatim so that the
table can be re-measured; the design it chose lives in core/models/heads.py).

Trains a segmentation head on frozen diffusion features of one knee site's sagittal view and
prints mean Dice on the site's held-out-flagged cases, which here serve as the validation split
of a site used for nothing else. Run from the repository root:

    SITE=/tmp/exp/knee-3t [SMALL=1] [CTX=1] [STEM1=1] [PROJ=8] [WIDTH=16] [LR=2e-3] \
        .venv/bin/python docs/studies/seg_head_prototype.py SIZE STEPS TAPS [CHECKPOINT]

SIZE: in-plane size (32 or 64); TAPS: "10@up.2,10@up.1,10@up.0,10@down.0" or "none" (image
only); SMALL=1: backbone channels 8/16/32; CTX=1: pooled context branch; STEM1=1: 1x1x1 stem.
"""

import sys, time, json, os
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

sys.path.insert(0, ".")
from core.data.manifest import load_site
from core.data.cache import load_site_tensors
from core.models.presets import load_model_config, preprocess_for
from core.models.registry import build_model
from core.models.features import extract_taps, case_seed
from core.config import FeatureTap
from monai.losses import DiceCELoss
from core.eval.metrics import dice_rows

torch.set_num_threads(2)
size = int(sys.argv[1])
steps = int(sys.argv[2])
taps_arg = sys.argv[3]
ckpt = sys.argv[4] if len(sys.argv) > 4 else ""
cfg = load_model_config(
    "tiny",
    overrides=[f"input_size={size}"]
    + (
        [
            "backbone.channels=[8,16,32]",
            "backbone.norm_num_groups=4",
            "backbone.num_head_channels=8",
        ]
        if os.environ.get("SMALL")
        else []
    ),
)
site = load_site(os.environ.get("SITE", "/tmp/exp/knee-3t"))
cases = [
    c
    for c in load_site_tensors(site, preprocess=preprocess_for(cfg))
    if c.mask is not None and "sagittal" in [v.value for v in c.views]
]
train = [c for c in cases if not c.heldout]
val = [c for c in cases if c.heldout]
print(len(train), len(val))
model = build_model(cfg, joint="knee", seed=0)
if ckpt:
    from core.checkpoint import load_tensors

    sd = load_tensors(ckpt)
    model.load_state_dict({k: v for k, v in sd.items() if k.startswith("backbone")}, strict=False)
unet = model.backbone["sagittal"].eval()
taps = (
    [FeatureTap(timestep=int(t), block=b) for t, b in (x.split("@") for x in taps_arg.split(","))]
    if taps_arg != "none"
    else []
)
from core.views import View


def feats(cs):
    x = torch.from_numpy(
        np.stack([np.asarray(c.views[View.SAGITTAL], dtype=np.float32) for c in cs])
    )
    with torch.no_grad():
        maps = (
            extract_taps(
                unet, model.scheduler, x, taps=taps, seeds=[case_seed(0, c.case_id) for c in cs]
            )
            if taps
            else []
        )
    y = torch.from_numpy(np.stack([np.asarray(c.mask, dtype=np.int64) for c in cs]))[:, None]
    return x, maps, y


t0 = time.time()
Xtr, Mtr, Ytr = feats(train)
Xva, Mva, Yva = feats(val)
print("feat s", time.time() - t0, [m.shape for m in Mtr])


class Head(nn.Module):
    def __init__(self, chans, proj=16, width=32, ncls=12):
        super().__init__()
        self.proj = nn.ModuleList([nn.Conv3d(c, proj, 1) for c in chans])
        cin = 1 + proj * len(chans)
        self.ctxon = bool(int(os.environ.get("CTX", "0")))
        k = 1 if os.environ.get("STEM1") else 3
        self.stem = nn.Sequential(
            nn.Conv3d(cin, width, k, padding=k // 2), nn.GroupNorm(8, width), nn.SiLU()
        )
        self.ctx = nn.Sequential(
            nn.Conv3d(width, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.SiLU(),
            nn.Conv3d(width, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.SiLU(),
        )
        self.body = nn.Sequential(
            nn.Conv3d(width, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.SiLU(),
            nn.Conv3d(width, ncls, 1),
        )

    def forward(self, x, maps):
        parts = [x]
        for p, m in zip(self.proj, maps):
            m = (m - m.mean(dim=(2, 3, 4), keepdim=True)) / (
                m.std(dim=(2, 3, 4), keepdim=True) + 1e-5
            )
            parts.append(
                F.interpolate(p(m), size=x.shape[2:], mode="trilinear", align_corners=False)
            )
        h = self.stem(torch.cat(parts, 1))
        if self.ctxon:
            c = self.ctx(F.avg_pool3d(h, 4))
            h = h + F.interpolate(c, size=h.shape[2:], mode="trilinear", align_corners=False)
        return self.body(h)


torch.manual_seed(0)
import os

head = Head(
    [m.shape[1] for m in Mtr],
    proj=int(os.environ.get("PROJ", 16)),
    width=int(os.environ.get("WIDTH", 32)),
)
opt = torch.optim.AdamW(
    head.parameters(), lr=float(__import__("os").environ.get("LR", "2e-3")), weight_decay=1e-2
)
loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, lambda_ce=1.0, lambda_dice=1.0)
g = torch.Generator().manual_seed(0)
bs = int(os.environ.get("BS", 4))
t0 = time.time()


def evaluate():
    with torch.no_grad():
        pred = head(Xva, Mva).argmax(1, keepdim=True)
        d = dice_rows(pred, Yva, n_classes=12)
    m = torch.nanmean(d, 0)
    return m


for step in range(1, steps + 1):
    idx = torch.randint(len(train), (bs,), generator=g)
    out = head(Xtr[idx], [m[idx] for m in Mtr])
    loss = loss_fn(out, Ytr[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % (steps // 4) == 0:
        m = evaluate()
        print(
            step,
            f"{time.time() - t0:.0f}s loss {loss.item():.3f} mean {m.nanmean():.3f} bones {m[:3].numpy().round(3)} rest {m[3:].numpy().round(2)}",
            flush=True,
        )
