"""The people count a zone reports for one frame, and whether it may be trusted.

The rule was chosen on a labelled set of 68 real images (tests/devsets/crowd: ShanghaiTech A/B test splits, 9 to
2,256 people; figures in its measurements.csv, checked by tests/crowd/test_devset_fusion.py). Mean absolute error
(mean relative error) by true crowd size; the rule's fitted settings chosen by leave-one-out:

| counter                                        | <= 60 people | 61-250       | > 250         |
|------------------------------------------------|--------------|--------------|---------------|
| box detector, whole frame                      | 23.7 (51 %)  | 137 (89 %)   | 565 (98 %)    |
| box detector, tiled                            | 13.2 (31 %)  | 126 (80 %)   | 559 (97 %)    |
| density map, image <= 512 px wide              | 5.4 (16 %)   | 34.6 (29 %)  | 155 (23 %)    |
| density map, image <= 1024 px wide             | 24.8 (81 %)  | 44.0 (40 %)  | 87.5 (17 %)   |
| multi-scale map, detector floor                | 5.3 (16 %)   | 33.5 (28 %)  | 89.9 (18 %)   |
| this rule (also rescaled for people's height)  | 3.4 (9 %)    | 33.4 (28 %)  | 89.9 (18 %)   |

A sparse fixed view is where the rule is weakest: the map answers static texture with people. On frames of fixed
cameras (not in the 68 above; measurements_cctv.csv counted by eye, measurements_mot.csv from 2D MOT 2015 boxes),
MAE:

| camera (frames, people)                  | detector | map alone | this rule | map alone, background floor |
|------------------------------------------|----------|-----------|-----------|-----------------------------|
| street, vtest.avi (11 frames, 3-9)       | 0.36     | 4.47      | 0.36      | 1.10                        |
| car-park aisle from above (4 frames, 0)  | 0        | 15.2      | 15.2      | 15.2 (clip too short)       |
| PETS09-S2L1 walkway (20 frames, 3-8)     | 1.05     | 5.78      | 1.05      |                             |
| TUD-Campus, eye level (20 frames, 4-6)   | 2.90     | 8.73      | 8.73      |                             |
| TUD-Stadtmitte, eye level (20, 5-8)      | 0.80     | 3.24      | 3.24      |                             |
| shopping mall, Mall dataset (80, 16-50)  | 12.6     | 3.57      | 4.26      |                             |

On the street and the walkway the map puts 0.16-0.36 of a person under each detected person and 5-10 people's worth on
the scene around them: it does not see these people, large and apart, and the inference stage takes its faint cells
around the person boxes off, up to 8 people (processors.inference.density_map.without_texture; on every one of the
68 images the map sees its people, so the table above stands). At eye level (TUD) it sees them and over-counts their
bodies, and the detector stays the better counter: what is left for a stronger density model. In the mall (640x480,
people 20-100 px tall in perspective) the 512 px map puts 0.28-0.75 of a person under each box and its faint cells hold
the far people the detector misses, so there the texture rule costs people. `min_people_per_person_box` is 0.4, a round
value 0.04 above the street cameras' highest, chosen on these frames (not by leave-one-out) to leave the street and the
walkway as they were: 67 of the 80 mall frames see their people in part and are mapped wider (below), 12 still lose up
to 8 people as texture, and one's people are already about 90 px tall at 512 px (4.26; without the texture rule, the map
with the detector floor, 3.57, where the street camera goes 0.36 -> 4.47 and the walkway 1.05 -> 5.78). Before the wider
map, the reduced width lost the far heads: the mall was 4.83 (6.74 at a per-box ratio of 0.5).

The background floor (processors.inference.density_floor, on by default) is the camera's own learnt response to its
static scene, taken off its maps by the inference stage within bounds that keep a packed crowd's count (at most 8
people per map, never in a locally dense crowd's cells); above it was learnt from each clip's other frames, never the
scored one. The car-park clip lasts 30 s, less than the 60 s of sparse maps the floor needs before it subtracts
anything (and its camera drifts 16 px, which forgets the floor); the ShanghaiTech stills have no history, so the
68-image table above is without it and unchanged.

The box detector never leads on the 68 images: it finds 0-40 people whatever the crowd, and neither occlusion nor
saturation cues fire where it fails (too few boxes). The density map leads everywhere, at a small input where people
are large in the frame (full size over-counts them several-fold) and at full size where they are small and packed (a
small input loses heads). The choice is made per map cell, not per frame: a switch of the whole frame's width on its
count trades the moderate crowds against the packed ones (switching at 150 people: 41.8 on 61-250; at 300: 100 above
250), because the full-width map over-counts some moderate crowds (up to 2.8x). Per cell, the rule beats every
single counter up to 250 people and stays about 3 % behind the full-width map above. Tried and not used:
averaging each map with the mirrored image's (no regime better, 0-0.4 people worse, for twice the
cost), and a least-squares fit of the count on the map's count with the detector's, the tiled detector's, the
boxes' occlusion or their height, on the frames the map counts under 70 (4.4-5.2 on <= 60 people against the rule's
3.9 before maps were widened:
what is left there is scatter, not bias). A log-linear fit of the count on the 640 and 1024 px maps' counts
over the frames the map counts above 200 reaches 15 % above 250 people under leave-one-out, but 50 on 61-250,
17 % when the gate is 250 instead, and it gets there by shrinking packed counts (about count^0.8) and
extrapolating from the two widths' ratio: fitted on 22 packed images, it would lower a crush's count on
evidence too thin to trust. Hence:

- the inference stage makes each map at a reduced width and, where that map finds a locally dense crowd
  (`analytics.density_model.dense_cell_people`), also the region around it at the full width, whose counts
  replace the reduced map's in those cells (processors.inference.density_map.DensityMapCounter.multi_scale_map);
- where that map counts few people (`rescaled_max_people`), has no dense cells and the frame's detected people are
  not `person_height_px` tall at the reduced width (median person box), the map is made at the width that makes
  them that tall instead: narrower where they are taller (the model, trained on small heads, counts a large person
  more than once); wider, up to the frame's width and `dense_max_width`, where they are shorter and the reduced map
  puts from `min_people_per_person_box` to one person under each person box (it sees them, but loses the far
  heads). 5.3 -> 3.4 on <= 60 people (3.9 narrowing alone), 33.5 -> 33.4 on 61-250 (18 of the 68 images narrowed,
  3 widened; the mall 4.83 -> 4.26). Never wider where the map does not see the detected people, which counts
  texture as people (the street camera above, whose people are 50-60 px tall at 512 px: 4.5 at 512 px, 12.3 at
  640), nor where it counts them whole already (a person or more under each box), and never a packed or locally
  dense crowd;
- a zone's count is its map count, or the detector's count when that is higher (the boxes are people the map
  missed: a floor, never a reason to count fewer);
- without a density map younger than `density_map_max_age_seconds` the count is UNRELIABLE: no other evidence tells a
  calm scene from a packed one the detector cannot see into. The detector's count is then a floor, and the zone's
  level is what that floor proves from warning up, else UNKNOWN, with the reason (processors.analytics.crowd.risk);
- a frame whose picture the producer found frozen or blank (Frame.picture_fault) counts no one and is UNRELIABLE: what
  it shows is not the zone now, and a map of it, however fresh, says nothing of the crowd in front of the camera.
Confidence is 1 - the rule's relative error on the development set in the count's regime.
"""
from __future__ import annotations

from dataclasses import dataclass

from schemas import PictureFault
from schemas.settings.crowd import CountingConfig
from schemas.zone_metrics import CountSource

# (upper bound of the regime in people, confidence) from the development set's relative errors above
CONFIDENCE_BY_SIZE = ((60, 0.91), (250, 0.72), (float("inf"), 0.82))
CONFIDENCE_UNRELIABLE = 0.2
PICTURE_FAULTS = {
    PictureFault.FROZEN: "picture frozen (the camera sends the same old picture again and again)",
    PictureFault.BLANK: "picture blank (the camera sends black or uniform frames)",
}


@dataclass(frozen=True)
class FusedCount:
    people: float
    source: CountSource
    confidence: float
    reliable: bool
    reason: str = ""  # why the count is unreliable


def confidence_for(people: float) -> float:
    return next(confidence for upper, confidence in CONFIDENCE_BY_SIZE if people <= upper)


def fuse_counts(detector_people: int, model_people: float | None, config: CountingConfig,
                model_age_s: float | None = None, maps_enabled: bool = True,
                picture_fault: PictureFault | None = None) -> FusedCount:
    """The count a zone reports for one frame.

    model_people: the zone's count in the newest density map, None when there is none; model_age_s: how old that
    map is at this frame (capture time). A map older than the configured maximum is not used. maps_enabled: whether
    the density model is configured to run (only changes the reason given when there is no map). picture_fault: the
    frame's (None: a normal picture).
    """
    if picture_fault is not None:
        return FusedCount(0, CountSource.DETECTOR, CONFIDENCE_UNRELIABLE, False, PICTURE_FAULTS[picture_fault])
    if model_people is None or model_age_s is None:
        missing = "no density map yet" if maps_enabled else "density model off (analytics.density_model.enabled)"
        return FusedCount(detector_people, CountSource.DETECTOR, CONFIDENCE_UNRELIABLE, False,
                          f"{missing}: the detector alone cannot tell a calm zone from a packed one")
    if model_age_s > config.density_map_max_age_seconds:
        return FusedCount(detector_people, CountSource.DETECTOR, CONFIDENCE_UNRELIABLE, False,
                          f"density map stale ({model_age_s:.0f} s old, more than "
                          f"{config.density_map_max_age_seconds:g} s)")
    if detector_people > model_people:
        return FusedCount(detector_people, CountSource.DETECTOR, confidence_for(detector_people), True)
    return FusedCount(model_people, CountSource.DENSITY_MODEL, confidence_for(model_people), True)
