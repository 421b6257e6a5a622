"""OPRA reader on the real test annotations, its errors, and the ground-truth cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from maskahand.evaluation.benchmark import AnnotationError, load_benchmark
from maskahand.evaluation.groundtruth import GroundTruth
from maskahand.evaluation.metrics import gt_map_28, gt_map_256

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_real_opra_test_annotations_counts(shared_data):
    bench = load_benchmark("opra", shared_data / "opra" / "test.json")
    assert len(bench.entries) == 3777
    assert len({e.image for e in bench.entries}) == 252
    assert len(bench.pairs()) == 921
    assert bench.num_maps() == 3785  # 3798 point lists; 13 entries repeat an action (merged into one map)
    assert sum(len(e.points) for e in bench.entries) == 3798
    assert all(0 <= a < 7 for e in bench.entries for a in e.actions)
    e = bench.entries[0]
    assert e.actions == (0,) and len(e.points[0]) == 10 and (e.width, e.height) == (256, 256)


def _write(tmp_path: Path, entries) -> Path:
    p = tmp_path / "a.json"
    p.write_text(json.dumps(entries))
    return p


GOOD = {
    "image_path": "datasets/opra/images/x/1.jpg",
    "video_path": "datasets/opra/clips/x/1.mp4",
    "width": 32,
    "height": 32,
    "actions": [2],
    "heatmaps": [[[3.0, 4.0], [10.0, 31.5]]],
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"actions": [8]}, r"entry 1 \(datasets/opra/images/x/1.jpg\): unknown action 8"),
        ({"actions": [0]}, "unknown action 0"),
        ({"heatmaps": []}, "one point list per action"),
        ({"heatmaps": [[[1.0]]]}, "finite"),
        ({"width": 0}, "width/height"),
        ({"image_path": None, "_drop": "image_path"}, "entry 1: missing key"),
    ],
)
def test_bad_entries_name_the_entry(tmp_path, change, message):
    bad = dict(GOOD, **{k: v for k, v in change.items() if k != "_drop"})
    if "_drop" in change:
        del bad[change["_drop"]]
    with pytest.raises(AnnotationError, match=message):
        load_benchmark("opra", _write(tmp_path, [GOOD, bad]))


def test_bad_files(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        load_benchmark("opra", tmp_path / "none.json")
    (tmp_path / "b.json").write_text("[{")
    with pytest.raises(AnnotationError, match="b.json: not valid JSON"):
        load_benchmark("opra", tmp_path / "b.json")
    with pytest.raises(AnnotationError, match="unknown dataset"):
        load_benchmark("nope", tmp_path / "b.json")


def test_media_paths_resolve_against_the_root(tmp_path):
    bench = load_benchmark("opra", _write(tmp_path, [GOOD]), root=tmp_path / "root")
    assert bench.resolve(GOOD["image_path"]) == tmp_path / "root" / "images/x/1.jpg"
    assert load_benchmark("opra", _write(tmp_path, [GOOD])).root is None


def test_ground_truth_cache_is_reused_and_a_stale_one_replaced(tmp_path, caplog):
    second = dict(GOOD, image_path="datasets/opra/images/x/2.jpg", actions=[1, 1, 3])
    second["heatmaps"] = [[[1.0, 1.0]], [[30.0, 2.0]], [[16.0, 16.0]]]
    ann = _write(tmp_path, [GOOD, second])
    gt = GroundTruth(load_benchmark("opra", ann), progress=False)
    m = gt.maps_256(1)
    assert m.shape == (2, 32, 32)  # actions 0 (two point lists, one map) and 2
    np.testing.assert_allclose(
        m[0].numpy(), gt_map_256([[(1.0, 1.0)], [(30.0, 2.0)]], 32, 32).numpy(), rtol=1e-6
    )
    assert gt.maps_28().shape == (3, 28, 28)
    cached = gt.path("256")
    assert cached.exists() and cached.parent == tmp_path
    assert oct(cached.stat().st_mode & 0o077) != "0o0"  # not a private mkstemp file
    # a second reader loads the cache: make the cached values recognisable first
    arr = np.load(cached, mmap_mode="r+")
    arr[:] = 7.0
    arr.flush()
    del arr
    assert float(GroundTruth(load_benchmark("opra", ann), progress=False).maps_256(0).max()) == 7.0
    # changed annotations: a new cache name, the stale file is removed, values recomputed
    second["heatmaps"][2] = [[5.0, 5.0]]
    ann.write_text(json.dumps([GOOD, second]))
    gt3 = GroundTruth(load_benchmark("opra", ann), progress=False)
    fresh = gt3.maps_256(1)[1]
    np.testing.assert_allclose(fresh.numpy(), gt_map_256([[(5.0, 5.0)]], 32, 32).numpy(), rtol=1e-6)
    assert not cached.exists() and gt3.path("256").exists()
    np.testing.assert_allclose(
        gt3.maps_28()[2].numpy(), gt_map_28([[(5.0, 5.0)]], 32, 32).numpy(), rtol=1e-6
    )  # pair (x/2.jpg, action 2): the third pair in file order
    assert not list(tmp_path.glob(".*.tmp"))


def test_truncated_cache_is_rebuilt(tmp_path):
    ann = _write(tmp_path, [GOOD])
    gt = GroundTruth(load_benchmark("opra", ann), progress=False)
    gt.prepare_256()
    np.save(gt.path("256"), np.zeros(5, np.float32))  # wrong size
    again = GroundTruth(load_benchmark("opra", ann), progress=False)
    assert float(again.maps_256(0).max()) > 0


def test_cache_dir_option_moves_the_cache(tmp_path):
    ann = _write(tmp_path, [GOOD])
    gt = GroundTruth(load_benchmark("opra", ann), cache_dir=tmp_path / "cache", progress=False)
    gt.prepare_256()
    assert gt.folder == tmp_path / "cache" and gt.path("256").parent == tmp_path / "cache"
    assert gt.path("256").exists() and not list(tmp_path.glob("a.gt256.*"))
