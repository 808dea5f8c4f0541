"""The generated Label Studio labeling config (XML) and the names results use.

Layout: short guidelines, the instruction, then the source and the edited image side by side.
Brush regions (one label per region kind) live on the edited image, drawn faint so the edit
stays visible. While an `edit` region is selected the annotator rates it: edit success (1..5 stars, required:
Label Studio refuses Submit without it), preservation (default 5 unless its verdict is
artifact) and verdict (default: correct_edit at 4-5 stars success, missed_edit below). One
required question covers everything else: "everything outside the edit preserved?". Yes fills
the preserve rating (5) and verdict (fine) of every context/background region as a recorded
default; No means the annotator selected the regions that changed and rated them (preserve,
verdict), the unrated ones count as preserved (default). Whole-image ratings: overall and
naturalness (required), artifacts (5 = no artifacts; default 5 unless a region is marked artifact). Sync stores which values were explicit
and which came from a default (annotation_regions.*_default).
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
# Preservation of a context/background region, asked only when something outside the edit changed.
PRESERVE_OUTSIDE = "preserve_outside"
OUTSIDE = "outside"
OUTSIDE_YES = "yes_all_preserved"
OUTSIDE_NO = "no_something_changed"
OVERALL = "overall"
NATURALNESS = "naturalness"
ARTIFACTS = "artifacts"

REGION_KINDS = ("edit", "context", "background")
# "unsure": the annotator cannot judge this region; curation treats its ratings as missing.
VERDICTS = ("correct_edit", "artifact", "unintended_change", "missed_edit", "fine", "unsure")
UNSURE = "unsure"
REGION_RATINGS = (SUCCESS, PRESERVE)
IMAGE_RATINGS = (OVERALL, NATURALNESS, ARTIFACTS)
MAX_RATING = 5

_KIND_COLORS = {"edit": "#e6194b", "context": "#3cb44b", "background": "#4363d8"}
_HOTKEYS = {"edit": "1", "context": "2", "background": "3"}
# Choice keys are fixed: Label Studio's automatic ones run out of digits and continue with
# q, w, e, r, ... where e is also the eraser (one key press would both pick the eraser and
# answer a question).
_VERDICT_KEYS = dict(zip(VERDICTS, ["6", "7", "8", "9", "0", "u"]))
_HINTS = {
    SUCCESS: "Edit success here: the instruction was carried out in this region",
    PRESERVE: "Preservation here: what should not change did not change (left empty: 5)",
    PRESERVE_OUTSIDE: "Preservation of this region (it was meant to stay as it is)",
    OUTSIDE: "Everything outside the edit region(s) preserved?",
    VERDICT: "Verdict for this region",
    OVERALL: "Overall quality of the edit",
    NATURALNESS: "Naturalness of the edited image",
    ARTIFACTS: "Artifacts (5 = none; left empty: 5 unless a region is marked artifact)",
}


@dataclass
class LabelConfig:
    """Options of the generated interface. The tag names above are fixed: sync depends on them."""

    region_kinds: tuple[str, ...] = REGION_KINDS
    verdicts: tuple[str, ...] = VERDICTS
    max_rating: int = MAX_RATING
    image_height: str = "560px"
    region_opacity: float = 0.3       # brush masks are drawn this faint (Label Studio's own is 0.6)
    extra_css: str = field(default="")

    def xml(self) -> str:
        labels = "\n".join(
            f'    <Label value={quoteattr(k)} background={quoteattr(_KIND_COLORS.get(k, "#911eb4"))}'
            f'{" hotkey=" + quoteattr(_HOTKEYS[k]) if k in _HOTKEYS else ""}/>'
            for k in self.region_kinds)
        choices = "\n".join(
            f"      <Choice value={quoteattr(v)}{' hotkey=' + quoteattr(_VERDICT_KEYS[v]) if v in _VERDICT_KEYS else ''}/>"
            for v in self.verdicts)

        def rating(name: str, per_region: bool, required: bool = True, when: str | None = None) -> str:
            pr = ' perRegion="true"' if per_region else ""
            wl = f' whenLabelValue="{when}"' if when else ""
            req = (f' required="true" requiredMessage={quoteattr(_required_message(name))}' if required else "")
            return (f'    <Header value={quoteattr(_HINTS[name])} size="6"/>\n'
                    f'    <Rating name="{name}" toName="{EDITED}" maxRating="{self.max_rating}" '
                    f'icon="star" size="medium"{pr}{wl}{req}/>')

        h = quoteattr(self.image_height)
        # Brush regions are canvases whose opacity Label Studio sets inline: only !important wins.
        css = (f".konvajs-content canvas[style*=\"opacity: 0.6\"] {{ opacity: {self.region_opacity} !important; }}\n"
               f"{self.extra_css}")
        return f"""<View>
  <Style>{css}</Style>
  <View style="padding: 4px 8px; background: #f4f4f4; border-radius: 4px;">
    <Header value={quoteattr(GUIDELINES)} size="6"/>
  </View>
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
  </View>
  <View visibleWhen="region-selected" whenLabelValue="edit">
{rating(SUCCESS, True, when="edit")}
{rating(PRESERVE, True, required=False, when="edit")}
  </View>
  <View visibleWhen="region-selected" whenLabelValue="context,background">
{rating(PRESERVE_OUTSIDE, True, required=False, when="context,background")}
  </View>
  <View visibleWhen="region-selected">
    <Header value={quoteattr(_HINTS[VERDICT])} size="6"/>
    <Choices name="{VERDICT}" toName="{EDITED}" perRegion="true" choice="single-radio">
{choices}
    </Choices>
  </View>
  <Header value="Whole image" size="5"/>
  <Header value={quoteattr(_HINTS[OUTSIDE])} size="6"/>
  <Choices name="{OUTSIDE}" toName="{EDITED}" choice="single-radio" required="true"
           requiredMessage={quoteattr(_required_message(OUTSIDE))}>
    <Choice value="{OUTSIDE_YES}" hotkey="y"/>
    <Choice value="{OUTSIDE_NO}" hotkey="n"/>
  </Choices>
{rating(OVERALL, False)}
{rating(NATURALNESS, False)}
{rating(ARTIFACTS, False, required=False)}
</View>
"""

    def hash(self) -> str:
        return hashlib.sha256(self.xml().encode()).hexdigest()[:16]


GUIDELINES = ("Stars: 5 = instruction fully carried out / region untouched; 3 = partly done / "
              "visibly altered; 1 = not done or wrong / ruined. Rate each red edit region (select it in "
              "the Regions list), answer the 'outside' question; if something changed, select "
              "the regions that changed and rate them. Keys are shown in [brackets]. Verdict 'unsure' = cannot judge (ignored). "
              "Eye icon in the Regions panel: hide all regions.")


def _required_message(name: str) -> str:
    if name in (SUCCESS, PRESERVE):
        return f"Every edit region needs its {name} rating: the region without it is now selected."
    if name == ARTIFACTS:
        return "A region is marked artifact: rate the artifacts of the whole image."
    if name == OUTSIDE:
        return "Answer 'Everything outside the edit region(s) preserved?' before submitting."
    return f"The whole-image rating '{_HINTS[name]}' is missing."


def default_edit_verdict(success: int | None) -> str | None:
    """The verdict an edit region gets when the annotator leaves it: correct at 4-5 stars."""
    if success is None:
        return None
    return "correct_edit" if success >= 4 else "missed_edit"


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
