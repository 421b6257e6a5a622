"""``eval`` and ``finetune`` reading their annotations, images and clips from an S3 bucket (moto's real S3
server): the same results as the same tree read from local disk, ground-truth caches kept off the bucket,
and the errors of a missing annotation object, bucket or media object."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from maskahand.cli import main
from maskahand.core import storage
from maskahand.core.config import EvalConfig, VideoConfig
from maskahand.evaluation.benchmark import load_benchmark
from maskahand.finetune.clipindex import clip_index
from tests.eval_standin import make_opra_tree, pick_entries
from tests.test_eval_e2e import SMALL, save_checkpoint
from tests.test_eval_epic import make_tree as make_epic_tree
from tests.test_finetune import TINY

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def opra_tree(shared_data, tmp_path_factory) -> Path:
    real = json.loads((shared_data / "opra" / "test.json").read_text())
    two = next(e for e in real if len(e["actions"]) == 2)  # an entry scored against two action maps
    return make_opra_tree(
        tmp_path_factory.mktemp("opra_s3"), shared_data, [*pick_entries(real, 2, 3), two], clip_frames=5
    )


def upload(folder: Path, prefix: str) -> list[str]:
    """Every file under ``folder`` to ``prefix``; returns the object names written."""
    names = []
    for here, _, files in sorted(os.walk(folder, followlinks=True)):  # EPIC frame folders are links
        for name in sorted(files):
            p = Path(here) / name
            names.append(storage.join(prefix, str(p.relative_to(folder))))
            storage.upload_file(p, names[-1])
    return names


def bucket_objects(bucket: str) -> list[str]:
    return sorted(storage.walk_files(bucket))


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_center_bias_from_a_bucket_equals_local_and_caches_off_the_bucket(opra_tree, s3_bucket, tmp_path):
    uploaded = upload(opra_tree, f"{s3_bucket}/opra")
    ann = f"{s3_bucket}/opra/annotations/test.json"
    cache = tmp_path / "gtcache"
    base = ["eval", "--baseline", "center-bias"]
    assert main([*base, "--annotations", ann, "--out", str(tmp_path / "s3"), f"eval.cache_dir={cache}"]) == 0
    local = ["--annotations", str(opra_tree / "annotations/test.json"), "--out", str(tmp_path / "local")]
    assert main([*base, *local, f"eval.cache_dir={tmp_path / 'local.gt'}"]) == 0
    assert metrics(tmp_path / "s3") == metrics(tmp_path / "local")
    assert metrics(tmp_path / "s3")["protocols"]["28"]["n"] == len(load_benchmark("opra", ann).pairs())
    # the bucket holds only what was uploaded; the ground truth went to eval.cache_dir, named by content
    assert bucket_objects(s3_bucket) == sorted(uploaded)
    cached = sorted(p.name for p in cache.glob("test.gt*.npy"))
    assert len(cached) == 2 and all(".gt256." in n or ".gt28." in n for n in cached)


def test_checkpoint_from_a_bucket_equals_local(opra_tree, s3_bucket, tmp_path):
    upload(opra_tree, f"{s3_bucket}/opra")
    ckpt = save_checkpoint(tmp_path / "ft.pt", heatmaps=7, actions=7)
    args = ["eval", "--checkpoint", str(ckpt), "--protocol", "256", *SMALL]
    for data, name in ((f"{s3_bucket}/opra/", "s3"), (str(opra_tree), "local")):  # each its own GT cache
        assert main([*args, "--data", data, "--out", str(tmp_path / name), f"eval.cache_dir={tmp_path / name}.gt"]) == 0  # fmt: skip
    got, want = metrics(tmp_path / "s3"), metrics(tmp_path / "local")
    assert got == want and got["protocols"]["256"]["top1"] is not None


def test_missing_annotation_object_or_bucket_exits_2_naming_the_url(s3_bucket, tmp_path, capsys):
    for url in (f"{s3_bucket}/opra/annotations/test.json", "s3://no-such-bucket-i18c/opra/test.json"):
        code = main(["eval", "--annotations", url, "--baseline", "uniform", "--out", str(tmp_path / "o")])
        assert code == 2
        errors = capsys.readouterr().err.splitlines()  # run_handler's one line
        assert len(errors) == 1 and errors[0].startswith("maskahand eval: ") and url in errors[0], errors
    assert not (tmp_path / "o").exists()


def test_missing_media_object_names_the_entry(opra_tree, s3_bucket, tmp_path, capsys):
    upload(opra_tree, f"{s3_bucket}/opra")
    bench = load_benchmark("opra", None, f"{s3_bucket}/opra")
    for media in (bench.entries[0].video, bench.entries[0].image):
        storage.remove(str(bench.resolve(media)))
        ckpt = save_checkpoint(tmp_path / "zs.pt", heatmaps=1, actions=0)
        args = [
            "eval",
            "--data",
            f"{s3_bucket}/opra",
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "o"),
        ]
        assert main([*args, *SMALL, f"eval.cache_dir={tmp_path / 'gt'}"]) != 0
        err = capsys.readouterr().err
        assert "entry 0 (datasets/opra/images/" in err and storage.redact(str(bench.resolve(media))) in err
        storage.upload_file(opra_tree / media[len("datasets/opra/") :], str(bench.resolve(media)))


def test_clip_count_streams_packet_times_from_the_bucket(opra_tree, s3_bucket):
    upload(opra_tree, f"{s3_bucket}/opra")
    cfg = EvalConfig(clip_length=2, clip_stride=1)  # 5 frames at 2 fps -> 4 windows per video
    local = clip_index(load_benchmark("opra", None, opra_tree), cfg, VideoConfig())
    remote = clip_index(load_benchmark("opra", None, f"{s3_bucket}/opra"), cfg, VideoConfig())
    assert remote == local and len(local) > len(load_benchmark("opra", None, opra_tree).entries)


def test_short_finetune_from_a_bucket(opra_tree, s3_bucket, tmp_path):
    upload(opra_tree, f"{s3_bucket}/opra")
    run = tmp_path / "run"
    args = [
        "finetune",
        "--dataset",
        "opra",
        "--data",
        f"{s3_bucket}/opra",
        "--init",
        "none",
        "--out",
        str(run),
    ]
    assert main([*args, *TINY, f"eval.cache_dir={tmp_path / 'gt'}"]) == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("val_kld" in json.dumps(r) for r in records)  # the periodic evaluation read the bucket too
    assert (run / "afformer_finetuned.pth").exists()


def make_assistq_tree(root: Path, shared: Path) -> Path:
    """Relative image and frame paths (so both resolve under the bucket), boxes in 320 x 240 images."""
    frames = sorted((shared / "frames" / "epic_P01_01").glob("frame_*.jpg"))[:3]
    entries = []
    for i in range(2):
        for j, f in enumerate(frames):
            (root / "frames").mkdir(parents=True, exist_ok=True)
            Image.open(f).convert("RGB").resize((96, 72)).save(root / "frames" / f"{i}_{j}.jpg")
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.open(frames[i]).convert("RGB").resize((320, 240)).save(root / "images" / f"{i}.jpg")
        entries.append({"image_path": f"datasets/assistq_button/images/{i}.jpg",
                        "frames_path": [f"frames/{i}_{j}.jpg" for j in range(len(frames))],
                        "boxes": [[0, 0, 159, 119]] if i == 0 else [[10, 10, 200, 20]]})  # fmt: skip
    (root / "test_v2.json").write_text(json.dumps(entries))
    return root


def test_assistq_boxes_and_frame_lists_from_a_bucket_equal_local(shared_data, s3_bucket, tmp_path):
    root = make_assistq_tree(tmp_path / "aq", shared_data)
    upload(root, f"{s3_bucket}/aq")
    ckpt = save_checkpoint(tmp_path / "zs.pt", heatmaps=1, actions=0)
    args = ["eval", "--dataset", "assistq", "--protocol", "256", *SMALL]
    for what in (["--baseline", "center-bias"], ["--checkpoint", str(ckpt)]):
        s3, local = tmp_path / f"s3{len(what[1])}", tmp_path / f"local{len(what[1])}"
        for data, out in ((f"{s3_bucket}/aq", s3), (str(root), local)):  # each its own GT cache
            assert main([*args, *what, "--data", data, "--out", str(out), f"eval.cache_dir={out}.gt"]) == 0
        assert metrics(s3) == metrics(local) and metrics(s3)["protocols"]["256"]["n"] == 2


def test_epic_frame_ranges_and_images_from_a_bucket_equal_local(shared_data, s3_bucket, tmp_path):
    root = make_epic_tree(tmp_path / "epic", shared_data)
    upload(root, f"{s3_bucket}/epic")
    remote, local = (load_benchmark("epic_hotspots", None, r) for r in (f"{s3_bucket}/epic", root))
    assert remote.annotations == f"{s3_bucket}/epic/data/epic/annotations.json"  # the release default
    assert [e.image for e in remote.entries] == [e.image for e in local.entries]  # relative to ROOT
    assert str(remote.resolve(remote.entries[0].video)).startswith(f"{s3_bucket}/epic/frames_rgb_flow/")
    cfg = EvalConfig(clip_length=2, clip_stride=1)
    assert clip_index(remote, cfg, VideoConfig()) == clip_index(local, cfg, VideoConfig())
    ckpt = save_checkpoint(tmp_path / "zs.pt", heatmaps=1, actions=0)
    args = ["eval", "--dataset", "epic_hotspots", "--checkpoint", str(ckpt), "--protocol", "256", *SMALL]
    for data, name in ((f"{s3_bucket}/epic", "s3"), (str(root), "local")):
        assert main([*args, "--data", data, "--out", str(tmp_path / name), f"eval.cache_dir={tmp_path / name}.gt"]) == 0  # fmt: skip
    assert metrics(tmp_path / "s3") == metrics(tmp_path / "local")
    assert metrics(tmp_path / "s3")["protocols"]["256"]["n"] == 4


def test_ground_a_video_and_image_in_a_bucket_equals_local(opra_tree, s3_bucket, tmp_path):
    upload(opra_tree, f"{s3_bucket}/opra")
    entry = load_benchmark("opra", None, opra_tree).entries[0]
    video, image = (m[len("datasets/opra/") :] for m in (entry.video, entry.image))
    ckpt = save_checkpoint(tmp_path / "ft.pt", heatmaps=7, actions=7)
    small = ["eval.image_size=64", "eval.device=cpu", "eval.clip_batch=2"]
    for base, name in ((f"{s3_bucket}/opra/", "s3"), (f"{opra_tree}/", "local")):
        out = tmp_path / f"{name}.png"
        assert main(["ground", base + video, base + image, "--checkpoint", str(ckpt), "--out", str(out), *small]) == 0  # fmt: skip
    assert (tmp_path / "s3.png").read_bytes() == (tmp_path / "local.png").read_bytes()
