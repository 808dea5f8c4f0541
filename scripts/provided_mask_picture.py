"""The picture in docs/roles/data-engineer.md: region proposals on a real photo without and with
an edit mask that came with the data (MagicBrush-style, drawn looser than the edit).

    .venv/bin/python scripts/provided_mask_picture.py   # writes docs/img/provided_mask.png
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sfreward.regions import ProposerConfig, propose_group  # noqa: E402
from tests.fixtures.core import photo  # noqa: E402
from tests.fixtures.regions import paste_edit  # noqa: E402

COLORS = {"edit": (230, 25, 75), "context": (60, 180, 75), "background": (67, 99, 216)}


def overlay(image: np.ndarray, regions) -> np.ndarray:
    """Regions painted by kind, edits last so that they stay visible where regions overlap
    (provided edit regions outlined in white)."""
    from skimage.segmentation import find_boundaries

    out = image.astype(np.float32)
    order = {"background": 0, "context": 1, "edit": 2}
    for r in sorted(regions, key=lambda r: order[r.kind]):
        c = np.asarray(COLORS[r.kind], np.float32)
        out[r.mask] = 0.55 * out[r.mask] + 0.45 * c
        out[find_boundaries(r.mask, mode="inner")] = (255, 255, 255) if r.proposed_on == "provided" else c
    return out.clip(0, 255).astype(np.uint8)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    src, donor = photo("astronaut", 256), photo("chelsea", 256)
    edited, _ = paste_edit(src, donor, (140, 40, 220, 120))
    yy, xx = np.mgrid[:256, :256]
    given = ((xx - 180) / 52.0) ** 2 + ((yy - 80) / 52.0) ** 2 <= 1   # a loose hand-drawn ellipse
    cfg = ProposerConfig()
    without = propose_group(src, [edited], cfg)
    with_mask = propose_group(src, [edited], cfg, provided=[given])
    panels = [(src, "source"), (edited, "edited"), (np.where(given[..., None], 255, 0).astype(np.uint8).repeat(3, 2),
                                                  "mask_img (provided)"),
              (overlay(edited, without), "proposals: change map only"),
              (overlay(edited, with_mask), "proposals with the provided mask")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4))
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle("regions by kind: red = edit, green = context, blue = background; "
                 "white outline = the provided mask's edit region", fontsize=9)
    out = ROOT / "docs" / "img" / "provided_mask.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(out, [(r.kind, r.proposed_on, r.area) for r in with_mask])


if __name__ == "__main__":
    main()
