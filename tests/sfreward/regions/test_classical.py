"""The weight-free proposer's regions follow image structure."""
import numpy as np
import pytest
from skimage import filters, segmentation

from sfreward.regions import ProposerConfig, propose_sample
from sfreward.regions.classical import segment
from tests.fixtures.core import photo


def collage(size=96):
    """Four real photos in quadrants: the strongest structure an image can have."""
    a, b, c, d = (photo(n, size) for n in ("astronaut", "coffee", "chelsea", "rocket"))
    return np.vstack([np.hstack([a, b]), np.hstack([c, d])])


# Felzenszwalb follows edges; SLIC trades boundary adherence for compact superpixels, so it
# is held to an area-weighted bound instead of a per-region one.
@pytest.mark.parametrize("segmenter,worst,weighted", [("felzenszwalb", 0.9, 0.95), ("slic", 0.6, 0.85)])
def test_context_regions_stay_inside_one_photo(segmenter, worst, weighted):
    img = collage()
    regions = propose_sample(img, img.copy(), ProposerConfig(segmenter=segmenter, max_regions=10))
    context = [r for r in regions if r.kind == "context"]
    assert len(context) >= 4
    quadrant = np.zeros(img.shape[:2], int)
    quadrant[:96, 96:], quadrant[96:, :96], quadrant[96:, 96:] = 1, 2, 3
    inside = np.array([np.bincount(quadrant[r.mask], minlength=4).max() for r in context])
    areas = np.array([r.area for r in context])
    assert (inside / areas).min() >= worst, f"a region straddles photos: {(inside / areas).round(2)}"
    assert inside.sum() / areas.sum() >= weighted


def test_segment_boundaries_lie_on_image_edges():
    img = photo("coffee", 192)
    labels = segment(img, ProposerConfig())
    edges = filters.sobel(img.mean(axis=2) / 255.0)
    on_boundary = segmentation.find_boundaries(labels, mode="inner")
    # A grid with the same number of cells follows no structure: the baseline.
    n = labels.max() + 1
    k = max(2, int(round(np.sqrt(n))))
    grid = (np.arange(192)[:, None] * k // 192) * k + (np.arange(192)[None, :] * k // 192)
    grid_boundary = segmentation.find_boundaries(grid, mode="inner")
    assert edges[on_boundary].mean() > 1.5 * edges[grid_boundary].mean()


def test_metadata_says_classical():
    img = photo("chelsea", 96)
    regions = propose_sample(img, img.copy(), ProposerConfig())
    assert {r.proposer for r in regions} == {"classical"}
    assert ProposerConfig().proposer == "classical"
