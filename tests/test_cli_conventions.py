"""One house style for every command: real sub-parsers, overrides anywhere, one exit-status convention."""

from __future__ import annotations

import argparse
import logging

import pytest

from maskahand.cli import build_parser, main, split_overrides
from maskahand.core.cli_util import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, UsageError, run_handler
from maskahand.core.configbase import FILE_NAME_HINT, ConfigError
from maskahand.mine import cli as mine_cli
from maskahand.synth import cli as synth_cli


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def parse(parser: argparse.ArgumentParser, *argv: str) -> argparse.Namespace:
    rest, overrides = split_overrides(parser, list(argv))
    args = parser.parse_args(rest)
    args.overrides = overrides
    return args


# --- sub-actions are sub-parsers ------------------------------------------------------------------------


def test_mine_and_mine_show_are_separate_parsers(parser):
    args = parse(parser, "mine", "--videos", "v/", "--out", "o/", "mine.fps=10", "--detector", "hircnn")
    assert args.func is mine_cli.run_mine
    assert (args.videos, args.out, args.detector, args.overrides) == ("v/", "o/", "hircnn", ["mine.fps=10"])
    args = parse(parser, "mine", "show", "o/", "--out", "sheet.png", "--clips", "3", "--frames", "2")
    assert args.func is mine_cli.run_show
    assert (args.dir, args.out, args.clips, args.frames) == ("o/", "sheet.png", 3, 2)


def test_synth_and_synth_preview_are_separate_parsers(parser):
    args = parse(parser, "synth", "synth.seed=3", "--clips", "c/", "--out", "o/", "--variants", "2")
    assert args.func is synth_cli._run
    assert (args.clips, args.out, args.variants, args.overrides) == ("c/", "o/", 2, ["synth.seed=3"])
    args = parse(parser, "synth", "preview", "o/", "--out", "p.png", "--samples", "2", "--strip-frames", "3")
    assert args.func is synth_cli._preview
    assert (args.dir, args.out, args.samples, args.strip_frames) == ("o/", "p.png", 2, 3)


@pytest.mark.parametrize(
    ("argv", "options", "absent"),
    [
        (["mine", "show", "--help"], ["--out", "--clips", "--frames"], ["--videos"]),
        (["synth", "preview", "--help"], ["--out", "--samples", "--strip-frames"], ["--variants"]),
        (["mine", "--help"], ["--videos", "show"], ["--frames"]),
        (["synth", "--help"], ["--clips", "preview"], ["--strip-frames"]),
    ],
)
def test_each_action_has_its_own_help(argv, options, absent, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert all(o in out for o in options), out
    assert not any(a in out for a in absent), out


def test_overrides_are_found_anywhere_but_option_values_stay_values(parser):
    argv = [
        "synth",
        "--out",
        "run=1",
        "--clips",
        "a.b=c",
        "synth.fill=zero",
        "--no-progress",
        "ray.num_cpus=2",
    ]
    rest, overrides = split_overrides(parser, argv)
    assert rest == ["synth", "--out", "run=1", "--clips", "a.b=c", "--no-progress"]
    assert overrides == ["synth.fill=zero", "ray.num_cpus=2"]
    # an abbreviated option (argparse accepts unambiguous prefixes) keeps its value as well
    assert split_overrides(parser, ["synth", "--ou", "x=1", "synth.seed=1"]) == (
        ["synth", "--ou", "x=1"],
        ["synth.seed=1"],
    )
    # after `show`, the show parser's options count
    rest, overrides = split_overrides(
        parser, ["mine", "show", "o", "--out", "s=1.png", "--clips", "2", "k=1"]
    )
    assert rest == ["mine", "show", "o", "--out", "s=1.png", "--clips", "2"] and overrides == ["k=1"]
    # a file named like an override: after `--`, or with a path prefix, it stays an argument
    assert split_overrides(parser, ["ground", "v.mp4", "./a=b.jpg", "eval.k=1"]) == (
        ["ground", "v.mp4", "./a=b.jpg"],
        ["eval.k=1"],
    )
    assert split_overrides(parser, ["ground", "eval.k=1", "--", "v.mp4", "a=b.jpg"]) == (
        ["ground", "--", "v.mp4", "a=b.jpg"],
        ["eval.k=1"],
    )


def test_a_file_name_taken_for_an_override_says_how_to_pass_it(tmp_path, capsys):
    # argparse misses the positional it was meant for: the note says where it went
    assert main(["ground", str(tmp_path / "v.mp4"), "a=b.jpg"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "required: image" in err
    assert err.strip().splitlines()[-1] == "note: a=b.jpg read as config override(s): " + FILE_NAME_HINT
    assert "after `--` or as ./NAME" in FILE_NAME_HINT
    # with every positional there, the override is refused by the config, with the same hint
    image = tmp_path / "i.jpg"
    argv = [
        "ground",
        str(tmp_path / "v.mp4"),
        str(image),
        "--checkpoint",
        "c.pt",
        "--out",
        "o.png",
        "a=b.jpg",
    ]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown config key 'a' in override 'a=b.jpg'" in err and FILE_NAME_HINT in err


# --- exit statuses ------------------------------------------------------------------------------------


def test_usage_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["mine", "--out", str(tmp_path)]) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == (
        "maskahand mine: --videos and --out are required (or `maskahand mine show OUT --out sheet.png`)"
    )
    assert main(["mine", "show", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s.png")]) == EXIT_USAGE
    assert "nowhere is not a folder" in capsys.readouterr().err
    assert main(["mine", "show", str(tmp_path)]) == EXIT_USAGE  # argparse: --out is required
    assert "--out" in capsys.readouterr().err
    assert main(["synth", "frobnicate"]) == EXIT_USAGE
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_config_errors_exit_2(tmp_path, capsys):
    argv = ["synth", "--clips", str(tmp_path), "--out", str(tmp_path / "o"), "synth.nope=1"]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("maskahand synth: config error: ") and "synth.nope" in err


def test_a_runtime_failure_exits_1_naming_the_file(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["mine", "show", str(tmp_path / "empty"), "--out", str(tmp_path / "s.png")]) == EXIT_FAILURE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("maskahand mine: ") and "empty/manifest.jsonl" in err[0]


def _raises(exc: BaseException):
    def handler(args: argparse.Namespace) -> int:
        raise exc

    return handler


def test_run_handler_maps_exceptions_to_statuses(capsys, caplog):
    quiet = argparse.Namespace(verbose=False)
    assert run_handler(lambda a: None, quiet, "maskahand x") == 0
    assert run_handler(lambda a: 1, quiet, "maskahand x") == 1  # a handler's own status stands
    assert run_handler(_raises(UsageError("bad flag")), quiet, "maskahand x") == EXIT_USAGE
    assert run_handler(_raises(ConfigError("key 'a.b'")), quiet, "maskahand x") == EXIT_USAGE
    assert run_handler(_raises(FileNotFoundError("in.tar: no such file")), quiet, "maskahand x") == EXIT_USAGE
    assert capsys.readouterr().err.splitlines() == [
        "maskahand x: bad flag",
        "maskahand x: config error: key 'a.b'",
        "maskahand x: in.tar: no such file",
    ]
    assert run_handler(_raises(KeyboardInterrupt()), quiet, "maskahand x") == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "maskahand x: interrupted\n"
    # A bare builtin exception is a bug: its type is named and -v offered; -v logs the traceback.
    assert run_handler(_raises(KeyError("frames")), quiet, "maskahand x") == EXIT_FAILURE
    assert capsys.readouterr().err == "maskahand x: KeyError: 'frames' (run with -v for the traceback)\n"
    with caplog.at_level(logging.ERROR, logger="maskahand"):
        assert run_handler(_raises(KeyError("frames")), argparse.Namespace(verbose=True), "maskahand x") == 1
    assert "Traceback" in caplog.text and "KeyError: 'frames'" in caplog.text


def test_a_stage_error_says_its_exit_status_by_its_base_not_by_a_list_in_core(capsys):
    """core names no stage: a video that does not exist or an unreadable manifest is exit 2 through the
    ``UnusableInputError`` they mix in; one truncated video is a runtime failure (1)."""
    from maskahand.mine.sources import ManifestError
    from maskahand.video.errors import TruncatedVideoError, VideoNotFoundError

    quiet = argparse.Namespace(verbose=False)
    assert (
        run_handler(_raises(VideoNotFoundError("a.mp4", "no such file")), quiet, "maskahand m") == EXIT_USAGE
    )
    assert run_handler(_raises(ManifestError("l.csv", "no header line")), quiet, "maskahand m") == EXIT_USAGE
    assert (
        run_handler(_raises(TruncatedVideoError("b.mp4", "ends early")), quiet, "maskahand m") == EXIT_FAILURE
    )
    assert capsys.readouterr().err.splitlines() == [
        "maskahand m: a.mp4: not found: no such file",
        "maskahand m: l.csv: cannot read the manifest: no header line",
        "maskahand m: b.mp4: truncated: ends early",
    ]
