"""Atomic writes and crash-tolerant JSON-lines ledgers."""

from __future__ import annotations

import json

import pytest

from maskahand.core.fsutil import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_atomic_write_json_is_valid_json(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1, 2], "b": 1}


def test_ledger_skips_a_torn_last_line_but_not_a_corrupt_middle(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    append_jsonl(ledger, {"video": "a", "status": "ok"})
    append_jsonl(ledger, {"video": "b", "status": "failed"})
    with open(ledger, "a") as f:
        f.write('{"video": "c", "sta')  # a crash mid-append
    assert [r["video"] for r in read_jsonl(ledger)] == ["a", "b"]

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        list(read_jsonl(broken))
    assert list(read_jsonl(tmp_path / "absent.jsonl")) == []
