"""The authors' event-based mining windows (``mine.windows=authors``) on hand-built detection sequences.

Expected spans are written out by hand from the authors' released miner (affominer/miner.py: a clip
opens with the 31 sampled frames queued before the first contact frame, closes after 31 frames without
contact, or at the video's end; affodist/dataset.py: 32-frame cuts every 16 frames inside a clip, plus
one ending at its end; contact: state "in contact" and score > 0.99).
"""

from __future__ import annotations

import random

import pytest

from maskahand.core.config import DetectorConfig, MineConfig
from maskahand.mine.rule import (
    ClipSpan,
    HandRule,
    StreamingClipSelector,
    hand_interacts,
    interaction_events,
    rule_record,
    select_clips,
)

AUTHORS = MineConfig(windows="authors")
GRID = MineConfig(windows="grid")


def mask_with(n: int, hits: list[int]) -> list[bool]:
    return [i in hits for i in range(n)]


def spans(mask: list[bool], cfg: MineConfig) -> list[tuple[int, int]]:
    return [(s.start, s.stop) for s in select_clips(mask, cfg)]


def streamed(mask: list[bool], cfg: MineConfig) -> list[tuple[ClipSpan, list]]:
    selector = StreamingClipSelector(cfg)
    out = [clip for i, hit in enumerate(mask) for clip in selector.push(i, hit)]
    return out + selector.finish()


def their_loop(mask: list[bool], side: int = 31, length: int = 32, stride: int = 16) -> list[tuple[int, int]]:
    """An independent oracle: the released miner's frame loop and the dataset's cuts, frame by frame."""
    queue: list[int] = []  # positions of the last `side` frames seen
    clips: list[list[int]] = []
    clip: list[int] = []
    quiet = 0
    for pos, hit in enumerate(mask):
        if hit and not clip:
            clip = queue + [pos]
        elif clip:
            quiet = 0 if hit else quiet + 1
            clip.append(pos)
            if quiet == side:
                clips.append(clip)
                clip, quiet = [], 0
        queue = (queue + [pos])[-side:]
    if clip:
        clips.append(clip)
    cuts = []
    for c in clips:
        if len(c) < length:  # their dataset asserts this away; only a video shorter than a clip has it
            cuts.append((c[0], c[-1] + 1))
            continue
        last = len(c) - length
        starts = list(range(0, last + 1, stride))
        if starts[-1] < last:
            starts.append(last)
        cuts += [(c[0] + s, c[0] + s + length) for s in starts]
    return cuts


def test_one_contact_frame_gives_three_event_windows_where_the_grid_gives_two():
    mask = mask_with(100, [40])
    # event: 31 frames before frame 40 (from 9) to 31 contact-free frames after it (41..71): [9, 72)
    assert interaction_events(mask, AUTHORS) == [(9, 72)]
    assert select_clips(mask, AUTHORS) == [
        ClipSpan(9, 41, (31,)),
        ClipSpan(25, 57, (15,)),
        ClipSpan(40, 72, (0,)),
    ]
    assert select_clips(mask, GRID) == [ClipSpan(16, 48, (24,)), ClipSpan(32, 64, (8,))]


def test_an_event_closes_after_exactly_31_frames_without_contact():
    # 30 quiet frames (41..70) between two contacts: one event, closing 31 frames after frame 71
    assert interaction_events(mask_with(200, [40, 71]), AUTHORS) == [(9, 103)]
    # 31 quiet frames (41..71): the first event closes at frame 71; frame 72 opens a second one whose
    # 31 frames before it lie in the first event's tail, as their queue is never cleared
    assert interaction_events(mask_with(200, [40, 72]), AUTHORS) == [(9, 72), (41, 104)]
    assert spans(mask_with(200, [40, 72]), AUTHORS) == [
        (9, 41),
        (25, 57),
        (40, 72),
        (41, 73),
        (57, 89),
        (72, 104),
    ]


def test_an_event_open_at_the_video_end_keeps_its_frames_and_aligns_its_last_window():
    mask = mask_with(50, [45])
    assert interaction_events(mask, AUTHORS) == [(14, 50)]
    assert spans(mask, AUTHORS) == [(14, 46), (18, 50)]
    assert spans(mask, GRID) == [(16, 48), (18, 50)]


def test_a_contact_in_the_first_frames_starts_the_event_at_the_first_frame():
    assert interaction_events(mask_with(80, [3]), AUTHORS) == [(0, 35)]
    assert spans(mask_with(80, [3]), AUTHORS) == [(0, 32), (3, 35)]


def test_a_video_shorter_than_a_clip_is_one_short_clip_with_either_windows():
    for cfg in (AUTHORS, GRID):
        assert spans(mask_with(20, [7]), cfg) == [(0, 20)]
        assert spans(mask_with(3, [1]), cfg) == []  # under mine.min_frames
    assert spans(mask_with(20, [7]), MineConfig(windows="authors", short_video="drop")) == []


def test_no_contact_no_event():
    assert interaction_events([False] * 300, AUTHORS) == []
    assert select_clips([False] * 300, AUTHORS) == []


def test_the_authors_compare_scores_strictly():
    at = {"box": [0, 0, 4, 4], "state": "contact", "score": 0.99}
    above = {**at, "score": 0.9901}
    assert not hand_interacts(at, AUTHORS) and hand_interacts(above, AUTHORS)
    assert hand_interacts(at, GRID)
    # a clip records its windows, and synth re-applies the same comparison from that record
    assert not hand_interacts(at, HandRule.from_record(rule_record(AUTHORS)))
    assert hand_interacts(at, HandRule.from_record(rule_record(GRID)))
    assert hand_interacts(at, HandRule.from_record({"contact_score": 0.99}))  # clips mined before: grid


def test_random_sequences_match_their_loop_stream_and_always_hold_a_contact():
    rng = random.Random(19)
    for _ in range(400):
        n = rng.randint(0, 260)
        density = rng.choice([0.005, 0.03, 0.1, 0.5])
        mask = [rng.random() < density for _ in range(n)]
        whole = select_clips(mask, AUTHORS)
        assert [(s.start, s.stop) for s in whole] == [w for w in their_loop(mask) if n >= 4]
        assert all(s.interacting for s in whole)  # every window of an event holds a contact frame
        clips = streamed(mask, AUTHORS)
        assert [span for span, _ in clips] == whole
        for span, items in clips:
            assert items == list(range(span.start, span.stop))


@pytest.mark.parametrize("backend,judged", [("hircnn", True), ("precomputed", True), ("mediapipe", False)])
def test_rule_record_names_the_windows_and_whether_contact_is_judged(backend, judged):
    rec = rule_record(AUTHORS, DetectorConfig(backend=backend))
    assert rec["windows"] == "authors"
    assert rec["text"].startswith("the authors' windows: an interaction event runs from 31 frames before")
    assert "score > 0.99" in rec["text"]
    assert rec["detector_backend"] == backend and rec["contact_judged"] is judged
    assert ("contact is NOT judged" in rec["text"]) is not judged
    assert "score >= 0.99" in rule_record(GRID)["text"] and "contact_judged" not in rule_record(GRID)


def test_the_default_windows_are_the_authors():
    assert MineConfig().windows == "authors"


def write_video(path, frames: int, fps: int = 5) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.full((48, 64, 3), (i * 5) % 256, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


@pytest.mark.ray
def test_mining_a_video_uses_the_authors_windows_by_default_and_records_them(ray_session, tmp_path):
    """A 100-frame 5 fps video, precomputed detections: a contact (0.995) at sampled frame 40 and one
    scored exactly 0.99 at frame 80, which only the grid's >= counts."""
    import json

    from maskahand.core.config import MineRecipe
    from maskahand.core.configbase import apply_overrides
    from maskahand.mine.pipeline import mine

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "long.mp4", 100)
    lines = []
    for pos in range(100):
        score = {40: 0.995, 80: 0.99}.get(pos)
        hands = [] if score is None else [{"box": [0.2, 0.2, 0.5, 0.6], "state": "contact", "score": score}]
        lines.append(
            json.dumps({"video": "long.mp4", "frame": pos + 1, "width": 64, "height": 48, "hands": hands})
        )
    (tmp_path / "detections.jsonl").write_text("\n".join(lines) + "\n")
    base = ["detector.backend=precomputed", f"detector.precomputed.path={tmp_path / 'detections.jsonl'}"]

    def spans_and_rules(out, extra: list[str]):
        mine(apply_overrides(MineRecipe(), [*base, *extra]), str(videos), out, progress=False)
        rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        summary = json.loads((out / "summary.json").read_text())
        return [(r["start"], r["stop"]) for r in rows], summary["rule"]

    spans, rule = spans_and_rules(tmp_path / "authors", [])
    assert spans == [(9, 41), (25, 57), (40, 72)]
    assert rule["windows"] == "authors" and rule["contact_judged"] is True
    from maskahand.shards.reader import clip_dataset

    clips = list(
        clip_dataset(str(tmp_path / "authors" / "shards"), split_by_node=False, split_by_worker=False)
    )
    assert sorted(c.meta["interacting"] for c in clips) == [[0], [15], [31]]
    assert all(c.meta["rule"] == rule for c in clips)

    spans, rule = spans_and_rules(tmp_path / "grid", ["mine.windows=grid"])
    assert spans == [(16, 48), (32, 64), (64, 96), (68, 100)]
    assert rule["windows"] == "grid"
