import json

import pytest

from cityguard.cli import main
from cityguard.evaluation.lines import evaluate_line_counts
from cityguard.evaluation.loaders import load_line_count_csv, load_line_count_messages
from schemas import LineCounts


def window(start: float, directions: list[str], counts: list[int], line: str = "l1") -> str:
    return LineCounts(camera_id="cam", line_id=line, window_start=start, window_end=start + 60,
                      class_name=["car"] * len(counts), direction=directions, count=counts).model_dump_json()


def test_each_line_and_direction_is_scored_with_its_error_and_the_totals_do_not_let_errors_cancel():
    truth = {("cam", "l1", "in"): 10, ("cam", "l1", "out"): 0, ("cam", "l2", "in"): 4}
    result = evaluate_line_counts(truth, {("cam", "l1", "in"): 8, ("cam", "l1", "out"): 1, ("cam", "l2", "in"): 5})
    by_key = {(s.line, s.direction): s for s in result.scores}
    assert (by_key["l1", "in"].error, by_key["l1", "in"].relative_error) == (-2, -0.2)
    assert (by_key["l1", "out"].error, by_key["l1", "out"].relative_error) == (1, None)
    assert by_key["l2", "in"].relative_error == 0.25
    assert (result.true_total, result.counted_total, result.absolute_error_total) == (14, 14, 4)
    assert result.relative_absolute_error == pytest.approx(4 / 14)


def test_a_labelled_line_never_counted_scores_as_counting_none_and_unlabelled_counts_are_listed_apart():
    result = evaluate_line_counts({("cam", "l1", "in"): 3}, {("cam", "other", "in"): 2, ("cam", "l2", "in"): 0})
    assert [(s.true, s.counted) for s in result.scores] == [(3, 0)]
    assert result.unlabelled == [("cam", "other", "in")]


def test_windows_add_up_over_classes_and_a_redelivered_window_counts_once(tmp_path):
    first = tmp_path / "a.jsonl"
    first.write_text("\n".join([window(0, ["in", "in", "out"], [2, 1, 4]), window(0, ["in", "in", "out"], [2, 1, 4]),
                                window(60, ["in"], [5])]) + "\n")
    second = tmp_path / "b.jsonl"
    second.write_text(window(0, ["in"], [1], line="l2") + "\n")
    assert load_line_count_messages([first, second]) == {("cam", "l1", "in"): 8, ("cam", "l1", "out"): 4,
                                                         ("cam", "l2", "in"): 1}


def test_two_replays_of_one_camera_count_apart_though_their_windows_start_alike(tmp_path):
    """Each replay's windows count from its clip's start: the evening's clip is no redelivery of the morning's."""
    morning, evening = tmp_path / "morning.jsonl", tmp_path / "evening.jsonl"
    morning.write_text(window(0, ["in", "out"], [5, 3]) + "\n")
    evening.write_text(window(0, ["in", "out"], [7, 4]) + "\n")
    assert load_line_count_messages([morning, evening]) == {("cam", "l1", "in"): 12, ("cam", "l1", "out"): 7}
    with pytest.raises(ValueError, match=r"morning.jsonl: given twice \(its crossings would count twice\)"):
        load_line_count_messages([morning, evening, tmp_path / "." / "morning.jsonl"])


def test_a_truth_csv_with_a_bad_count_or_a_line_counted_twice_is_refused_with_its_line(tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("camera,line,direction,count\ncam,l1,in,3\ncam,l1,out,-1\n")
    with pytest.raises(ValueError, match=r"truth.csv:3: count -1 is negative"):
        load_line_count_csv(truth)
    truth.write_text("camera,line,direction,count\ncam,l1,in,3\ncam,l1,in,4\n")
    with pytest.raises(ValueError, match=r"truth.csv:3: cam,l1,in counted twice"):
        load_line_count_csv(truth)
    truth.write_text("camera,line,count\ncam,l1,3\n")
    with pytest.raises(ValueError, match="header lacks direction"):
        load_line_count_csv(truth)


def test_eval_lines_writes_a_report_of_every_line(tmp_path, capsys):
    truth = tmp_path / "truth.csv"
    truth.write_text("camera,line,direction,count\ncam,l1,in,4\ncam,l1,out,2\n")
    predicted = tmp_path / "counts.jsonl"
    predicted.write_text(window(0, ["in", "out"], [3, 2]) + "\n")
    assert main(["eval", "lines", "--truth", str(truth), "--predicted", str(predicted), "--out",
                 str(tmp_path / "report")]) == 0
    assert "cam l1 in: 4 true, 3 counted (-1, -25%)" in capsys.readouterr().out
    figures = json.loads((tmp_path / "report" / "report.json").read_text())
    assert (figures["true_total"], figures["counted_total"], figures["absolute_error_total"]) == (6, 5, 1)
    assert "| cam | l1 | in | 4 | 3 | -1 | -0.250 |" in (tmp_path / "report" / "report.md").read_text()
