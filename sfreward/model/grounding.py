"""Weight-free instruction grounding: how well each region matches what the instruction names.

The demo's model has no language model (hashed bag of words), and too few samples to learn that
"orange" means a hue near 30 degrees or that "upper left" means a region there. But whether a
changed region is the instructed edit (success = how well it was done) or damage (success =
preserve) depends exactly on that. This module reads a small fixed English lexicon from the
instruction (colour words, position phrases, tone and colour operations) and compares it with
each region's pixels, giving the model the grounding a real text encoder would learn:

- position: distance of the region's centroid to the named place ("in the upper left", 0..1);
- the region's named colour ("the orange region"): distance of the source region's mean colour
  to it;
- the target colour of a recolour ("... to cyan"): distance of the edited region's mean colour
  (and of the source's) to it;
- tone operations (brighten, darken, remove the colour): the region's change in that direction.

Each feature comes with a flag "the instruction names this", so instructions without these words
(real ones: "make the cat's hat blue") give flags 0 and neutral values. Colours are compared as
chroma vectors (saturation x (cos hue, sin hue), value) so greys have no hue to match.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

# Hue in degrees of the chromatic colour words.
HUES = {"red": 0, "orange": 30, "yellow": 55, "green": 120, "cyan": 180, "teal": 180, "blue": 225,
        "purple": 275, "violet": 275, "magenta": 300, "pink": 320}
# Achromatic colour words: (saturation, value) they stand for.
GREYS = {"white": (0.0, 1.0), "gray": (0.0, 0.5), "grey": (0.0, 0.5), "dark": (0.0, 0.1), "black": (0.0, 0.0)}
# Position phrases -> (x, y) in 0..1 of the image side (x right, y down).
PLACES = {"upper left": (1 / 6, 1 / 6), "top left": (1 / 6, 1 / 6), "upper right": (5 / 6, 1 / 6),
          "top right": (5 / 6, 1 / 6), "lower left": (1 / 6, 5 / 6), "bottom left": (1 / 6, 5 / 6),
          "lower right": (5 / 6, 5 / 6), "bottom right": (5 / 6, 5 / 6), "at the top": (0.5, 1 / 6),
          "at the bottom": (0.5, 5 / 6), "on the left": (1 / 6, 0.5), "on the right": (5 / 6, 0.5),
          "in the center": (0.5, 0.5), "in the centre": (0.5, 0.5), "in the middle": (0.5, 0.5)}
DESATURATE = ("black and white", "remove the color", "remove the colour", "desaturate", "grayscale",
              "greyscale")
BRIGHTEN = ("brighten", "brighter", "lighter", "lighten")
DARKEN = ("darken", "darker")
N_GROUNDING = 14
N_COMPLETION = 3
N_INTENT = 8
# A pixel is at the asked hue within this angle (half the gap between neighbouring colour words),
# and only when it has colour at all (saturation above HUE_MIN_SAT).
HUE_TOLERANCE = math.radians(15)
HUE_MIN_SAT = 0.3


@dataclass
class Parsed:
    """What one instruction names; None / False where it names nothing."""
    place: tuple[float, float] | None = None
    region_colour: str | None = None     # the colour the instruction calls the region by
    target_colour: str | None = None     # the colour a recolour asks for
    brighten: bool = False
    darken: bool = False
    desaturate: bool = False


def parse(instruction: str) -> Parsed:
    """Read the lexicon's words from one instruction (case-insensitive)."""
    text = " ".join(re.findall(r"[a-z]+", instruction.lower()))
    p = Parsed()
    spans = [(text.find(k), v) for k, v in PLACES.items() if k in text]
    if spans:
        p.place = min(spans)[1]
    p.desaturate = any(k in text for k in DESATURATE)
    for k in DESATURATE:   # "black and white" is an operation, not colour names
        text = text.replace(k, " ")
    p.brighten = any(w in text.split() for w in BRIGHTEN)
    p.darken = any(w in text.split() for w in DARKEN)
    colours = [w for w in text.split() if w in HUES or w in GREYS]
    tone = p.brighten or p.darken or p.desaturate
    if len(colours) >= 2:
        p.region_colour, p.target_colour = colours[0], colours[-1]
    elif len(colours) == 1:
        # "Make the orange region darker": the region's colour; "Make the hat blue": the target.
        before_noun = re.search(rf"\b{colours[0]}\s+(region|area|part|one)\b", text) is not None
        if tone or before_noun:
            p.region_colour = colours[0]
        else:
            p.target_colour = colours[0]
    return p


def _colour_vec(word: str) -> torch.Tensor:
    """[3]: saturation x (cos hue, sin hue), value (chromatic words: saturated, mid-bright)."""
    if word in HUES:
        h = math.radians(HUES[word])
        return torch.tensor([math.cos(h), math.sin(h), 0.7])
    s, v = GREYS[word]
    return torch.tensor([0.0, 0.0, v])


def _hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue (radians), saturation, value of RGB in 0..1 along dim 1: [N, 3, ...] -> 3 x [N, ...]."""
    mx, mn = x.max(1).values, x.min(1).values
    c = mx - mn
    r, g, b = x.unbind(1)
    cs = c.clamp_min(1e-6)
    h = torch.where(mx == r, ((g - b) / cs) % 6, torch.where(mx == g, (b - r) / cs + 2, (r - g) / cs + 4))
    s = torch.where(mx > 1e-6, c / mx.clamp_min(1e-6), torch.zeros_like(mx))
    return h * (math.pi / 3), s, mx


def rgb_to_vec(rgb: torch.Tensor) -> torch.Tensor:
    """Mean colours [R, 3] in 0..1 -> [R, 3] chroma vectors (s cos h, s sin h, v) (HSV)."""
    h, s, v = _hsv(rgb)
    return torch.stack([s * torch.cos(h), s * torch.sin(h), v], 1)


def _hue_gap(h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Absolute angle (radians, 0..pi) between hues h and target (broadcast)."""
    return (torch.remainder(h - target + math.pi, 2 * math.pi) - math.pi).abs()


def target_hues(parsed: list[Parsed]) -> torch.Tensor:
    """The hue (radians) of each parsed instruction's chromatic target colour, NaN without
    one: [B]."""
    return torch.tensor([math.radians(HUES[p.target_colour]) if p.target_colour in HUES else float("nan")
                         for p in parsed])


def target_hue_maps(instructions: list[str], sources: torch.Tensor, edits: torch.Tensor) -> torch.Tensor:
    """Per pixel, 1 where the edited (channel 0) / source (channel 1) pixel has the hue the
    instruction asks for (within HUE_TOLERANCE, saturation above HUE_MIN_SAT), else 0; all 0 for
    instructions without a chromatic target colour. sources, edits [B, 3, S, S] in 0..1 ->
    [B, 2, S, S]. Pooled over a region it is the share of the region now in the asked colour: a
    recolour done fully is ~1, a partial one less, a wrong colour or a missed edit ~0."""
    th = target_hues([parse(x) for x in instructions]).to(sources.device, sources.dtype)[:, None, None]  # [B, 1, 1]
    out = []
    for x in (edits, sources):
        h, s, _ = _hsv(x)
        out.append(((_hue_gap(h, th) < HUE_TOLERANCE) & (s > HUE_MIN_SAT)).to(x.dtype))  # NaN -> False
    return torch.stack(out, 1)


def _reads_as(rgb: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """1 where a mean colour [R, 3] reads as the colour word of hue [R] (radians): coloured
    (saturation >= 0.18, value >= 0.2) and nearer to that hue than to any other colour word's."""
    h, s, v = _hsv(rgb)
    words = torch.tensor([math.radians(d) for d in sorted(set(HUES.values()))], dtype=rgb.dtype, device=rgb.device)
    nearest = words[_hue_gap(h[:, None], words[None, :]).argmin(1)]
    return ((s >= 0.18) & (v >= 0.2) & (_hue_gap(nearest, hue) < 1e-4)).to(rgb.dtype)


def grounding_features(instructions: list[str], src_mean: torch.Tensor, edt_mean: torch.Tensor,
                       centroid: torch.Tensor, region_image: torch.Tensor, completion: bool = False,
                       hue_share: torch.Tensor | None = None, lightness: bool = False) -> torch.Tensor:
    """Per-region grounding features [R, N_GROUNDING].

    src_mean, edt_mean: mean colour [R, 3] (0..1) of each region in the source / edited image;
    centroid: [R, 2] (x, y) in 0..1; region_image: [R] image index into `instructions`.
    Columns: named place, distance to it; named region colour, its distance to the source
    colour; named target colour, its distance to the edited and to the source colour; brighten,
    darken, desaturate flags and the change of value / saturation in the asked direction;
    the region's centroid (x, y).
    completion=True appends N_COMPLETION columns. First, how much of the asked change was made,
    as a share of what was possible: for a recolour, the share of the source colour's distance
    to the target colour that the edit covered; for brighten / darken / remove the colour, the
    change of value / saturation over the headroom the source had (1 - value, value,
    saturation). 1 = all the way, 0 = nothing, < 0 = the other way: a partial edit is a
    fraction, whatever the region's starting colour. Then which region of its image the
    instruction describes: the region's distance to the description (named place + named
    colour) minus the smallest such distance in its image, and a flag for the best match. A
    distance alone is ambiguous (a large region's centroid is far from every corner); only
    against the image's other regions does it say "this is the region the edit was for", which
    decides whether the region is judged as the edit or as context to preserve.
    hue_share ([R, 2], target_hue_maps pooled over each region; needs completion=True) appends
    N_INTENT columns (features version 3): the completion split by operation (recolour,
    brighten, darken, remove the colour: each operation's "all the way" is its own scale), the
    share of the region at the asked hue in the edited image and its gain over the source, and
    whether the edited / source region's mean colour reads as the asked colour word.
    lightness=True (features version 4) reads brighten / darken on the mean colour's luma
    (Rec. 601) instead of its HSV value: brightening a saturated blue raises red and green, not
    the maximum channel, so its value hardly moves while a person sees it much lighter.
    """
    dev, dt = src_mean.device, src_mean.dtype
    rows = []
    parsed = [parse(text) for text in instructions]
    for p in parsed:
        rows.append([p.place is not None, *(p.place or (0.5, 0.5)),
                     p.region_colour is not None, *(_colour_vec(p.region_colour).tolist() if p.region_colour else (0, 0, 0)),
                     p.target_colour is not None, *(_colour_vec(p.target_colour).tolist() if p.target_colour else (0, 0, 0)),
                     p.brighten, p.darken, p.desaturate])
    per = torch.tensor(rows, dtype=dt, device=dev)[region_image]                 # [R, 14]
    vs, ve = rgb_to_vec(src_mean.float()).to(dt), rgb_to_vec(edt_mean.float()).to(dt)
    has_place, place = per[:, 0:1], per[:, 1:3]
    has_rc, rc = per[:, 3:4], per[:, 4:7]
    has_tc, tc = per[:, 7:8], per[:, 8:11]
    bri, dar, des = per[:, 11:12], per[:, 12:13], per[:, 13:14]
    d_place = (centroid - place).norm(dim=1, keepdim=True) * has_place
    d_rc = (vs - rc).norm(dim=1, keepdim=True) * has_rc
    d_tc_e = (ve - tc).norm(dim=1, keepdim=True) * has_tc
    d_tc_s = (vs - tc).norm(dim=1, keepdim=True) * has_tc
    if lightness:  # tone (brighten / darken) on luma, else on HSV value
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=dt, device=dev)
        v_s, v_e = (src_mean.to(dt) * luma).sum(1, keepdim=True), (edt_mean.to(dt) * luma).sum(1, keepdim=True)
    else:
        v_s, v_e = vs[:, 2:3], ve[:, 2:3]
    dv = v_e - v_s
    ds = ve[:, :2].norm(dim=1, keepdim=True) - vs[:, :2].norm(dim=1, keepdim=True)
    asked = bri * dv - dar * dv - des * ds
    out = [has_place, d_place, has_rc, d_rc, has_tc, d_tc_e, d_tc_s, bri, dar, des, asked,
           (bri + dar + des).clamp(max=1) * asked.abs(), centroid]
    if completion:
        eps = 0.05   # keeps a region already at its limit (white, black, grey) finite
        sat_s = vs[:, :2].norm(dim=1, keepdim=True)
        by_op = torch.cat([has_tc * (d_tc_s - d_tc_e) / (d_tc_s + eps), bri * dv / (1 - v_s + eps),
                           -dar * dv / (v_s + eps), -des * ds / (sat_s + eps)], 1)
        done = by_op.sum(1, keepdim=True)
        match = d_place + d_rc                                                    # [R, 1]
        best = torch.full((len(instructions),), float("inf"), dtype=match.dtype,
                          device=dev).scatter_reduce(0, region_image, match[:, 0], "amin")
        rel = match - best[region_image][:, None]
        out += [done.clamp(-2.0, 2.0), rel, (rel < 1e-6).to(dt)]
        if hue_share is not None:
            th = target_hues(parsed).to(dev, dt)[region_image]
            has_hue = (~torch.isnan(th)).to(dt)[:, None]
            th = torch.nan_to_num(th)
            reads = torch.stack([_reads_as(edt_mean.float(), th.float()), _reads_as(src_mean.float(), th.float())], 1).to(dt)
            out += [by_op.clamp(-2.0, 2.0), hue_share[:, :1], hue_share[:, :1] - hue_share[:, 1:], reads * has_hue]
    elif hue_share is not None:
        raise ValueError("grounding_features: hue_share (version 3) needs completion=True (version 2)")
    return torch.cat(out, 1)


def region_geometry(region_masks: torch.Tensor, region_image: torch.Tensor, sources: torch.Tensor,
                    edits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean source colour [R, 3], mean edited colour [R, 3] and centroid (x, y) [R, 2] in 0..1
    of each region; region_masks [R, S, S] coverage, sources/edits [B, 3, S, S] in 0..1."""
    m = region_masks.to(sources.dtype)
    s = m.shape[-1]
    area = m.flatten(1).sum(1).clamp_min(1e-6)[:, None]
    src = torch.einsum("rhw,rchw->rc", m, sources[region_image]) / area
    edt = torch.einsum("rhw,rchw->rc", m, edits[region_image]) / area
    coord = (torch.arange(s, device=m.device, dtype=m.dtype) + 0.5) / s
    cx = torch.einsum("rhw,w->r", m, coord)[:, None] / area
    cy = torch.einsum("rhw,h->r", m, coord)[:, None] / area
    return src, edt, torch.cat([cx, cy], 1)
