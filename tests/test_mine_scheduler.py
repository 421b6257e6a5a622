"""Detector-pool bookkeeping of the mining scheduler (no Ray needed: actors are opaque handles here)."""

from __future__ import annotations

from maskahand.mine.scheduler import _Detectors


def test_a_dead_detector_is_replaced_once_however_many_of_its_batches_fail():
    dead, other = object(), object()
    pool = _Detectors([dead, other])
    made: list[object] = []

    def new_actor() -> object:
        made.append(object())
        return made[-1]

    # three batches were in flight on actor 0 when it died: each failure reports (0, dead)
    replaced = [pool.replace_dead(0, dead, new_actor) for _ in range(3)]
    assert replaced == [True, False, False]
    assert len(made) == 1 and pool.actors == [made[0], other]
    # the replacement dying later is replaced again
    assert pool.replace_dead(0, made[0], new_actor) and pool.actors == [made[1], other]


def test_pick_balances_load_across_detectors():
    pool = _Detectors(["a", "b"])
    picks = [pool.pick() for _ in range(4)]
    assert sorted(picks) == [0, 0, 1, 1] and pool.load == [2, 2]
    pool.load[0] -= 2  # actor 0 finished its batches
    assert pool.pick() == 0
