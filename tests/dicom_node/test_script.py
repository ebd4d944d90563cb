"""scripts/dicom_node.py: argument checks and exit status 2 for an unusable configuration."""

from __future__ import annotations

import importlib.util
import logging

import pytest

from litenext_monai.dicom_node import parse_destination
from tests.dicom_node.helpers import REPO


@pytest.fixture
def script(monkeypatch):
    spec = importlib.util.spec_from_file_location("dicom_node_script", REPO / "scripts" / "dicom_node.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield module
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_parse_destination():
    dest = parse_destination("ORTHANC@pacs.example.org:4242")
    assert (dest.ae_title, dest.host, dest.port) == ("ORTHANC", "pacs.example.org", 4242)
    assert str(dest) == "ORTHANC@pacs.example.org:4242"
    assert parse_destination("A B@[::1]:104").host == "::1"
    for bad in (
        "ORTHANC",
        "ORTHANC@host",
        "@host:4242",
        "X@host:0",
        "X@host:70000",
        "A" * 17 + "@h:1",
        "X @h:1",
    ):
        with pytest.raises(ValueError, match="AET@HOST:PORT"):
            parse_destination(bad)


def _args(tmp_path, **overrides):
    args = {
        "--port": "11112",
        "--destination": "ORTHANC@127.0.0.1:4242",
        "--checkpoint": str(tmp_path / "model.pt"),
        "--storage": str(tmp_path / "storage"),
    }
    args.update(overrides)
    return [item for pair in args.items() for item in pair]


def test_bad_destination_exits_2(script, tmp_path, capsys):
    assert script.main(_args(tmp_path, **{"--destination": "pacs:4242"})) == 2
    assert "'pacs:4242' is not AET@HOST:PORT" in capsys.readouterr().err


def test_missing_checkpoint_exits_2_naming_it(script, tmp_path, capsys):
    assert script.main(_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"cannot load checkpoint {tmp_path / 'model.pt'}" in err
    assert not (tmp_path / "storage").exists()  # nothing started


def test_bad_quiet_time_exits_2(script, tmp_path, capsys):
    assert script.main(_args(tmp_path, **{"--quiet-seconds": "0"})) == 2
    assert "--quiet-seconds must be positive" in capsys.readouterr().err


def test_bad_series_timeout_and_segment_code_exit_2(script, tmp_path, capsys):
    assert script.main(_args(tmp_path, **{"--series-timeout": "0"})) == 2
    assert "--series-timeout must be positive" in capsys.readouterr().err
    assert script.main(_args(tmp_path, **{"--segment-code": "SCT-10200004"})) == 2
    assert "SCHEME:VALUE:MEANING" in capsys.readouterr().err


def test_pipeline_flags_are_parsed(script):
    args = script.build_parser().parse_args(
        [
            "--destination", "A@h:1", "--checkpoint", "m.pt", "--storage", "s",
            "--series-timeout", "5", "--max-attempts", "3", "--max-send-hours", "2",
            "--keep-sent-hours", "0", "--segment-label", "Liver", "--segment-code", "SCT:10200004:Liver",
            "--series-description", "RUO", "--segment-timeout", "600",
        ]
    )  # fmt: skip
    assert (args.series_timeout, args.max_attempts, args.max_send_hours, args.keep_sent_hours) == (5, 3, 2, 0)
    assert (args.segment_label, args.segment_code, args.series_description) == (
        "Liver",
        "SCT:10200004:Liver",
        "RUO",
    )
    assert (
        script.build_parser()
        .parse_args(["--destination", "A@h:1", "--checkpoint", "m", "--storage", "s"])
        .series_description
        == "research use only"
    )
