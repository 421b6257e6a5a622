"""The mining scheduler's bookkeeping: the detector pool (actors are opaque handles here) and how it tells a
miner that crashed from a miner whose node left (real Ray actors; the node-loss side is in test_cluster.py)."""

from __future__ import annotations

import os
import signal

import pytest

from maskahand.mine.scheduler import _Detectors, _miner_node_lost


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

        def die(self) -> None:
            os.kill(os.getpid(), signal.SIGKILL)  # like a decoder segfault on a bad video

    return ray.remote(Victim).remote()


def test_a_miner_that_crashed_on_a_live_node_is_not_a_lost_node(ray_session):
    """The video is at fault: the verdict is "not lost" as soon as the GCS marks the actor dead."""
    ray = ray_session
    victim = _victim(ray)
    ray.get(victim.pid.remote())
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(victim.die.remote())
    node = ray.get_runtime_context().get_node_id()
    assert _miner_node_lost(victim, node, timeout_s=60.0) is False
    assert _miner_node_lost(victim, "", timeout_s=60.0) is False  # died before start() said where it runs


def test_a_node_the_gcs_lists_as_dead_is_lost_whatever_its_actor_state(ray_session):
    ray = ray_session
    alive = _victim(ray)
    ray.get(alive.pid.remote())
    assert _miner_node_lost(alive, "ff" * 28, timeout_s=60.0) is True  # a node id the cluster never had
    # A live actor on a live node (an RPC hiccup) gets no verdict: after the timeout the video counts as failed.
    assert _miner_node_lost(alive, ray.get_runtime_context().get_node_id(), timeout_s=0.5) is False
    ray.kill(alive)
