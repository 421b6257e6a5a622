"""EPIC-Hotspots reader (the Interaction Hotspots release layout) on a small tree the test writes:
its data/epic/annotations.json, the annotated crops, and the real shared EPIC frame folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from maskahand.cli import main
from maskahand.core.config import EvalConfig
from maskahand.evaluation.benchmark import AnnotationError, load_benchmark
from maskahand.evaluation.clips import load_clips, resize_square
from maskahand.evaluation.epic import EPIC_HOTSPOTS_VERBS
from maskahand.evaluation.groundtruth import GroundTruth
from tests.test_eval_e2e import SMALL, save_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")

JAR = "P01_01_16827_100_40_300_200.jpg"  # <v_id>_<f_id>_<box>: the name of an inactive_images crop
BOTTLE = "P01_01_16863_10_10_110_90.jpg"


def clip(start: int, stop: int, verb: int, noun: int) -> dict:
    return {"v_id": "P01_01", "start": start, "stop": stop, "verb": verb, "noun": noun}


def annotations() -> dict:
    take, put, open_ = 0, 1, 2
    bottle, jar = 0, 1
    return {
        "verbs": list(EPIC_HOTSPOTS_VERBS),
        "nouns": ["bottle", "jar", "pan"],
        "train_clips": [clip(16827, 16887, take, jar)],
        "test_clips": [
            clip(16827, 16857, take, jar),
            clip(16851, 16887, take, jar),
            clip(16833, 16869, open_, jar),
            clip(16827, 16887, put, bottle),
        ],
        "inactive_images": {
            "jar": [{"v_id": "P01_01", "f_id": 16827, "box": [100, 40, 300, 200]}],
            "bottle": [{"v_id": "P01_01", "f_id": 16863, "box": [10, 10, 110, 90]}],
        },
        "train_images": [],
        "test_images": [
            {"image": [JAR], "verb": take, "points": [[150, 20]], "shape": [200, 160]},
            {"image": [JAR], "verb": open_, "points": [[10, 150], [12, 150]], "shape": [200, 160]},
            {"image": [BOTTLE], "verb": take, "points": [[50, 40]], "shape": [100, 80]},  # no (bottle, take) clip
            {"image": [BOTTLE], "verb": put, "points": [[50, 40], [60, 41]], "shape": [100, 80]},
        ],
    }  # fmt: skip


def make_tree(root: Path, shared: Path, ann: dict | None = None) -> Path:
    frames = shared / "frames" / "epic_P01_01"
    folder = root / "frames_rgb_flow" / "rgb" / "train" / "P01" / "P01_01"
    folder.parent.mkdir(parents=True)
    folder.symlink_to(frames)
    images = root / "data" / "epic" / "images"
    images.mkdir(parents=True)
    Image.open(frames / "frame_0000016827.jpg").convert("RGB").crop((100, 40, 300, 200)).save(images / JAR)
    Image.open(frames / "frame_0000016863.jpg").convert("RGB").crop((10, 10, 110, 90)).save(images / BOTTLE)
    write(root, ann or annotations())
    return root


def write(root: Path, ann: dict | str) -> Path:
    p = root / "data" / "epic" / "annotations.json"
    p.write_text(ann if isinstance(ann, str) else json.dumps(ann))
    return p


@pytest.fixture
def tree(shared_data, tmp_path) -> Path:
    return make_tree(tmp_path / "epic", shared_data)


def test_each_annotated_image_pairs_with_the_test_clips_of_its_noun_and_verb(tree, caplog):
    bench = load_benchmark("epic_hotspots", None, tree)
    got = [
        (Path(e.image).name, e.actions, e.extra["clip"], e.extra["start_frame"], e.extra["stop_frame"])
        for e in bench.entries
    ]
    assert got == [
        (JAR, (0,), 0, 16827, 16857),  # (jar, take): test clips 0 and 1
        (JAR, (0,), 1, 16851, 16887),
        (JAR, (2,), 2, 16833, 16869),  # (jar, open): clip 2
        (BOTTLE, (1,), 3, 16827, 16887),  # (bottle, put): clip 3; (bottle, take) has no clip
    ]
    assert "1 of 4 annotated (image, verb) pairs have no test clip" in caplog.text
    assert [e.index for e in bench.entries] == [0, 1, 2, 3]
    assert all(e.video == "frames_rgb_flow/rgb/train/P01/P01_01" for e in bench.entries)
    assert bench.resolve(bench.entries[0].image).is_file() and bench.resolve(bench.entries[0].video).is_dir()
    assert bench.action_names[:3] == ["take", "put", "open"] and bench.num_actions == 20


def test_ground_truth_one_map_per_image_and_verb(tree):
    bench = load_benchmark("epic_hotspots", None, tree)
    gt = GroundTruth(bench, progress=False)
    assert [(Path(i).name, a) for i, a in gt.pair_keys] == [(JAR, 0), (JAR, 2), (BOTTLE, 1)]
    maps = gt.maps_28()
    assert maps.shape == (3, 28, 28)
    # the (jar, take) pair holds two entries (two clips) with the same single point: the map is that of
    # one point -- x = 150, y = 20 on a 200 x 160 crop peaks at row 20 * 28 / 160, column 150 * 28 / 200
    r, c = divmod(int(maps[0].argmax()), 28)
    assert (r, c) == (3, 21)
    # shape is [W, H]: the 256-rule map of an entry is H x W with the point at row y, column x
    m = gt.maps_256(0)[0]
    assert m.shape == (160, 200) and divmod(int(m.argmax()), 200) == (20, 150)


def test_eval_center_bias_end_to_end(tree, tmp_path):
    out = tmp_path / "cb"
    args = ["eval", "--dataset", "epic_hotspots", "--data", str(tree), "--baseline", "center-bias"]
    assert main([*args, "--out", str(out), "--protocol", "28"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == "epic_hotspots" and m["split"] == "test" and m["model"] == "center-bias"
    p = m["protocols"]["28"]
    assert set(m["protocols"]) == {"28"} and p["n"] == 3 and len(p["kld"]) == 2
    assert p["kld"][0] > 0 and 0 < p["sim"][0] < 1


def test_clip_frame_range_reads_only_its_frames(shared_data):
    folder = shared_data / "frames" / "epic_P01_01"  # every 6th frame of a 60 fps video: 10 fps
    cfg = EvalConfig(clip_fps=10, image_size=32)
    (clip,) = load_clips(folder, cfg, frame_range=(16845, 16869))
    assert len(clip) == 5  # 16845, 16851, 16857, 16863, 16869
    from torchvision.io import read_image

    for frame, number in ((clip[0], 16845), (clip[-1], 16869)):
        want = resize_square(read_image(str(folder / f"frame_{number:010d}.jpg")), 32)
        assert torch.equal(frame, want)
    assert sum(len(c) for c in load_clips(folder, cfg)) >= 11  # no range: the whole folder


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a["test_images"][1].update(verb=25), r"test_images\[1\] \(P01_01_16827_100_40_300_200.jpg\): unknown verb 25"),
        (lambda a: (a["verbs"].append("insert"), a["test_images"][0].update(verb=20)), r"test_images\[0\] .*unknown verb 20 \(0-based index, 0..19\)"),
        (lambda a: a["test_clips"][2].update(noun=9), r"test_clips\[2\] \(P01_01 16833-16869\): unknown noun 9"),
        (lambda a: a["test_clips"][0].update(verb="take"), r"test_clips\[0\] \(P01_01 16827-16857\): unknown verb 'take'"),
        (lambda a: a["test_images"][3].pop("shape"), r"test_images\[3\]: missing key\(s\) shape"),
        (lambda a: a["test_images"][0].update(points=[[1, "x"]]), r"test_images\[0\] \(P01_01_16827.*'points'"),
        (lambda a: a["inactive_images"].pop("bottle"), r"test_images\[2\] \(P01_01_16863.*cannot tell the image's noun"),
        (lambda a: a.update(verbs=["put", "take"]), r"verbs\[0\] is 'put', expected 'take'"),
        (lambda a: a.pop("test_clips"), r"missing key\(s\) test_clips"),
    ],
)  # fmt: skip
def test_bad_annotations_name_the_entry(shared_data, tmp_path, change, message):
    ann = annotations()
    change(ann)
    root = make_tree(tmp_path / "epic", shared_data, ann)
    with pytest.raises(AnnotationError, match=message):
        load_benchmark("epic_hotspots", None, root)


def test_missing_or_unreadable_annotation_file(tmp_path):
    with pytest.raises(AnnotationError, match=r"data/epic/annotations.json: annotation file not found"):
        load_benchmark("epic_hotspots", None, tmp_path)
    p = tmp_path / "annotations.json"
    p.write_text('{"verbs": [')
    with pytest.raises(AnnotationError, match=r"annotations.json: not valid JSON"):
        load_benchmark("epic_hotspots", p)


def test_image_noun_from_its_noun_field(shared_data, tmp_path):
    ann = annotations()
    ann["inactive_images"] = {}
    for item, noun in zip(ann["test_images"], ("jar", 1, 0, "bottle")):
        item["noun"] = noun
    bench = load_benchmark("epic_hotspots", None, make_tree(tmp_path / "epic", shared_data, ann))
    assert [e.extra["clip"] for e in bench.entries] == [0, 1, 2, 3]


def test_checkpoint_eval_reads_the_clip_range_and_names_a_missing_file(tree, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "zs.pt", heatmaps=1, actions=0)
    args = ["eval", "--dataset", "epic_hotspots", "--data", str(tree), "--checkpoint", str(ckpt)]
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--protocol", "256", *SMALL]) == 0
    assert json.loads((out / "metrics.json").read_text())["protocols"]["256"]["n"] == 4
    # a clip whose range has no frame in the folder: the evaluator must look at the range, not the folder
    ann = annotations()
    ann["test_clips"][0].update(start=16888, stop=16900)
    write(tree, ann)
    assert main([*args, "--out", str(tmp_path / "o2"), "--protocol", "256", *SMALL]) != 0
    err = capsys.readouterr().err
    assert f"entry 0 (data/epic/images/{JAR})" in err and "no frame_*.jpg numbered 16888..16900" in err
    # a missing image names its entry
    write(tree, annotations())
    (tree / "data" / "epic" / "images" / JAR).unlink()
    assert main([*args, "--out", str(tmp_path / "o3"), "--protocol", "256", *SMALL]) != 0
    assert f"entry 0 (data/epic/images/{JAR})" in capsys.readouterr().err


def test_finetune_sample_reads_the_clip_range(tree):
    from maskahand.core.config import FinetuneRecipe
    from maskahand.evaluation.benchmark import MediaError
    from maskahand.finetune.task import FinetuneTask

    bench = load_benchmark("epic_hotspots", None, tree)
    task = FinetuneTask(FinetuneRecipe(), bench, None, "none")
    sample = task.sample(bench.entries[2], 0)
    assert sample["key"] == "2#0" and sample["image"].shape == (3, 256, 256)
    ann = annotations()
    ann["test_clips"][2].update(start=16888, stop=16900)
    write(tree, ann)
    bench = load_benchmark("epic_hotspots", None, tree)
    with pytest.raises(MediaError, match=r"entry 2 \(data/epic/images/P01_01_16827.*numbered 16888..16900"):
        FinetuneTask(FinetuneRecipe(), bench, None, "none").sample(bench.entries[2], 0)


def test_hotspots_training_and_evaluation_read_the_same_default_annotations(tree):
    """One default for both commands: the release path, and ROOT/annotations.json when only that exists."""
    from maskahand.core.config import HotspotsDataConfig
    from maskahand.hotspots.data import load_training_set

    cfg = HotspotsDataConfig(dataset="epic_hotspots")
    release = tree / "data" / "epic" / "annotations.json"
    assert load_benchmark("epic_hotspots", None, tree).annotations == release
    [item] = load_training_set(cfg, tree).items  # the one train clip of data/epic/annotations.json
    assert item.key == "P01_01:16827"

    moved = annotations()
    moved["train_clips"] = [clip(16851, 16887, 1, 0)]  # put bottle: tells the two files apart
    (tree / "annotations.json").write_text(json.dumps(moved))
    [item] = load_training_set(cfg, tree).items
    assert item.key == "P01_01:16827"  # the release file still wins while it exists
    release.unlink()
    [item] = load_training_set(cfg, tree).items
    assert (item.key, item.inactive) == ("P01_01:16851", "bottle")
    assert load_benchmark("epic_hotspots", None, tree).annotations == tree / "annotations.json"
