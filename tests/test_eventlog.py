"""The run log: numbered atomic parts, concatenation, schema errors, checkpoint and rollback."""

import json

import pytest

from simenv.eventlog import RunLog, read_table


def _row(episode, page, item, watched=True, rating=4):
    return {
        "run": "r",
        "policy": "p",
        "episode": episode,
        "user": 3,
        "page": page,
        "position": 0,
        "item": item,
        "watched": watched,
        "rating": rating if watched else None,
        "liked": watched and rating >= 4,
        "left": False,
        "reward": 1.0,
        "llm_call_id": "",
        "propensity": float("nan"),
        "feeling": "ok",
    }


def test_parts_are_numbered_and_concatenated_in_order(tmp_path):
    log = RunLog(tmp_path / "run")
    log.write_config({"seed": 1, "name": "x"})
    assert log.append("events", [_row(0, 0, 10), _row(0, 0, 11, watched=False)]).name == "part-00000.parquet"
    assert log.append("events", []) is None
    assert log.append("events", [_row(0, 1, 12)]).name == "part-00001.parquet"
    df = read_table(tmp_path / "run", "events")
    assert df["item"].tolist() == [10, 11, 12]
    assert df["rating"].isna().tolist() == [False, True, False]
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"name": "x", "seed": 1}
    assert read_table(tmp_path / "run", "interviews").empty
    assert "score" in read_table(tmp_path / "run", "interviews").columns


def test_reopened_log_continues_numbering_and_cleans_temp_files(tmp_path):
    RunLog(tmp_path).append("pages_x", [{"a": 1}])
    (tmp_path / "pages_x" / "part-00001.parquet.tmp").write_bytes(b"half")
    log = RunLog(tmp_path)
    assert not list(tmp_path.glob("**/*.tmp"))
    assert log.append("pages_x", [{"a": 2}]).name == "part-00001.parquet"
    assert read_table(tmp_path, "pages_x")["a"].tolist() == [1, 2]


def test_bad_rows_name_the_table(tmp_path):
    with pytest.raises(ValueError, match="events rows"):
        RunLog(tmp_path).append("events", [{**_row(0, 0, 1), "episode": "zero"}])


def test_rollback_to_checkpoint(tmp_path):
    log = RunLog(tmp_path)
    log.append("events", [_row(0, 0, 1)])
    log.checkpoint({"chunks_done": 1})
    log.append("events", [_row(1, 0, 2)])
    log.append("interviews_x", [{"a": 1}])
    cp = log.read_checkpoint()
    assert cp == {"state": {"chunks_done": 1}, "parts": {"events": 1}}
    log.rollback(cp["parts"])
    assert read_table(tmp_path, "events")["item"].tolist() == [1]
    assert read_table(tmp_path, "interviews_x").empty
    assert log.append("events", [_row(1, 0, 3)]).name == "part-00001.parquet"
