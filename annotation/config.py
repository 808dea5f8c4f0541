"""The generated Label Studio labeling config (XML) and the names results use.

Layout: the instruction as text, then the source and the edited image side by side. Brush
regions (one label per region kind) live on the edited image; while a region is selected
the annotator rates it (edit success and preservation, 1..5 stars) and gives a verdict.
Whole-image ratings: overall, naturalness, artifacts (5 = no artifacts).
Ratings are stored raw (1..5); curation maps them to the 0..25 region-reward scale with
warehouse/scale.py (1 star = 0, 5 stars = 25; docs/architecture.md, "Scales"). See annotation/README.md for the result format.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

# Tag names: the `from_name` / `to_name` of every result.
SOURCE = "source"
EDITED = "edited"
# Task data keys of the two images ("source" itself is not usable: the editor resolves $source
# to the whole task).
SOURCE_KEY = "source_image"
EDITED_KEY = "edited_image"
INSTRUCTION = "instruction"
BRUSH = "region"
SUCCESS = "success"
PRESERVE = "preserve"
VERDICT = "verdict"
OVERALL = "overall"
NATURALNESS = "naturalness"
ARTIFACTS = "artifacts"

REGION_KINDS = ("edit", "context", "background")
VERDICTS = ("correct_edit", "artifact", "unintended_change", "missed_edit", "fine")
REGION_RATINGS = (SUCCESS, PRESERVE)
IMAGE_RATINGS = (OVERALL, NATURALNESS, ARTIFACTS)
MAX_RATING = 5

_KIND_COLORS = {"edit": "#e6194b", "context": "#3cb44b", "background": "#4363d8"}
_HINTS = {
    SUCCESS: "Edit success here: the instruction was carried out in this region",
    PRESERVE: "Preservation here: what should not change did not change",
    VERDICT: "Verdict for this region",
    OVERALL: "Overall quality of the edit",
    NATURALNESS: "Naturalness of the edited image",
    ARTIFACTS: "Artifacts (5 = none)",
}


@dataclass
class LabelConfig:
    """Options of the generated interface. The tag names above are fixed: sync depends on them."""

    region_kinds: tuple[str, ...] = REGION_KINDS
    verdicts: tuple[str, ...] = VERDICTS
    max_rating: int = MAX_RATING
    image_height: str = "420px"
    extra_css: str = field(default="")

    def xml(self) -> str:
        labels = "\n".join(
            f'    <Label value={quoteattr(k)} background={quoteattr(_KIND_COLORS.get(k, "#911eb4"))}/>'
            for k in self.region_kinds)
        choices = "\n".join(f"      <Choice value={quoteattr(v)}/>" for v in self.verdicts)

        def rating(name: str, per_region: bool) -> str:
            pr = ' perRegion="true"' if per_region else ""
            return (f'    <Header value={quoteattr(_HINTS[name])} size="6"/>\n'
                    f'    <Rating name="{name}" toName="{EDITED}" maxRating="{self.max_rating}" '
                    f'icon="star" size="medium"{pr}/>')

        h = quoteattr(self.image_height)
        return f"""<View>
  <Header value="Instruction" size="5"/>
  <Text name="{INSTRUCTION}" value="${INSTRUCTION}"/>
  <View style="display: flex; gap: 12px;">
    <View style="flex: 1;">
      <Header value="Source" size="6"/>
      <Image name="{SOURCE}" value="${SOURCE_KEY}" zoom="true" height={h}/>
    </View>
    <View style="flex: 1;">
      <Header value="Edited (regions are drawn here)" size="6"/>
      <Image name="{EDITED}" value="${EDITED_KEY}" zoom="true" height={h}/>
    </View>
  </View>
  <BrushLabels name="{BRUSH}" toName="{EDITED}">
{labels}
  </BrushLabels>
  <View visibleWhen="region-selected">
    <Header value="Selected region" size="5"/>
{rating(SUCCESS, True)}
{rating(PRESERVE, True)}
    <Header value={quoteattr(_HINTS[VERDICT])} size="6"/>
    <Choices name="{VERDICT}" toName="{EDITED}" perRegion="true" choice="single-radio">
{choices}
    </Choices>
  </View>
  <Header value="Whole image" size="5"/>
{rating(OVERALL, False)}
{rating(NATURALNESS, False)}
{rating(ARTIFACTS, False)}
</View>
"""

    def hash(self) -> str:
        return hashlib.sha256(self.xml().encode()).hexdigest()[:16]


def to_reward_scale(stars: int | None) -> float | None:
    """1..5 stars -> 0..25 on the region-reward scale (the one definition:
    warehouse.scale.stars_to_reward); None stays None (never 0)."""
    from warehouse.scale import stars_to_reward
    return stars_to_reward(stars)


def prefill_result_id(idx: int) -> str:
    """Result id of the prefilled region for proposal region `idx` (stable across pushes)."""
    return f"p{idx}"


def parse_prefill_result_id(result_id: str) -> int | None:
    if len(result_id) > 1 and result_id[0] == "p" and result_id[1:].isdigit():
        return int(result_id[1:])
    return None
