"""The mining scheduler's bookkeeping: the detector pool (actors are opaque handles here) and how it tells a
miner that crashed from a miner whose node left (real Ray actors; the node-loss side is in test_cluster.py)."""

from __future__ import annotations

import os
import signal

import pytest

from maskahand.mine.scheduler import _Detectors, _names_actor, _node_verdict


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


def _victim(ray):
    class Victim:  # defined here so Ray ships it by value (the tests folder is not importable on workers)
        def pid(self) -> int:
            return os.getpid()

        def take(self, value: int) -> int:
            return value

        def die(self) -> None:
            os.kill(os.getpid(), signal.SIGKILL)  # like a decoder segfault on a bad video

    return ray.remote(Victim).remote()


def test_a_miner_that_crashed_on_a_live_node_is_not_a_lost_node(ray_session):
    """The video is at fault: the verdict is "crashed" as soon as the GCS marks the actor dead."""
    ray = ray_session
    victim = _victim(ray)
    ray.get(victim.pid.remote())
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(victim.die.remote())
    node = ray.get_runtime_context().get_node_id()
    assert _node_verdict(victim, node) == "crashed"
    assert _node_verdict(victim, "") == "crashed"  # died before start() said where it runs


def test_a_node_the_gcs_lists_as_dead_is_lost_whatever_its_actor_state(ray_session):
    ray = ray_session
    alive = _victim(ray)
    ray.get(alive.pid.remote())
    assert _node_verdict(alive, "ff" * 28) == "lost"  # a node id the cluster never had
    # a live actor on a live node (an RPC hiccup) has no verdict yet: the scheduler asks again until its timeout
    assert _node_verdict(alive, ray.get_runtime_context().get_node_id()) == "unknown"
    ray.kill(alive)


def test_an_error_passed_on_from_a_dead_detector_is_not_the_miners_own(ray_session):
    """A miner waiting on a batch of a detector that died gets the detector's error: its node is not in
    question (no waiting for a verdict), the video fails as before and the detector is replaced."""
    ray = ray_session
    detector, miner = _victim(ray), _victim(ray)
    ray.get([detector.pid.remote(), miner.pid.remote()])
    with pytest.raises(ray.exceptions.RayActorError) as died:
        ray.get(detector.die.remote())
    with pytest.raises(ray.exceptions.RayActorError) as passed_on:
        ray.get(miner.take.remote(detector.pid.remote()))  # like add_detections(batch, det_ref)
    assert _names_actor(died.value, detector) and not _names_actor(died.value, miner)
    assert not _names_actor(passed_on.value, miner)
    assert ray.get(miner.take.remote(7)) == 7  # the miner itself is fine
    ray.kill(miner)
