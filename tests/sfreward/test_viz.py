import numpy as np
from PIL import Image

from sfreward.viz import score_color, score_grid, score_overlay
from tests.fixtures.core import photo


def test_colors_run_from_red_to_green():
    bad, good = score_color(0), score_color(25)
    assert bad[0] > bad[1] and good[1] > good[0]


def test_overlay_paints_only_the_region_and_by_score():
    img = photo("chelsea", 64)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, :32] = True
    masks[1, 32:] = True
    out = score_overlay(img, masks, [0.0, 25.0])
    top = out[4:28, 4:60].astype(int) - img[4:28, 4:60].astype(int)
    bottom = out[36:60, 4:60].astype(int) - img[36:60, 4:60].astype(int)
    assert top[..., 0].mean() > top[..., 1].mean()      # low score: redder
    assert bottom[..., 1].mean() > bottom[..., 0].mean()  # high score: greener


def test_grid_writes_a_png(tmp_path):
    img = photo("coffee", 64)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 10:30, 10:30] = True
    masks[1] = ~masks[0]
    p = score_grid([{"source": img, "edited": 255 - img, "masks": masks, "scores": [3.0, 20.0],
                     "instruction": "invert", "kinds": ["edit", "background"], "labels": [6.0, 25.0],
                     "truth": [5.0, float("nan")]}],
                   tmp_path / "grid.png", title="t")
    with Image.open(p) as im:
        assert im.format == "PNG" and im.width > 300
