import math

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_absolute_percentage_error, mean_squared_error

from cityguard.evaluation.counting import count_errors, count_errors_by_size, size_bins


def test_hand_computed_errors():
    errors = count_errors([10, 20, 0], [12, 15, 1])  # errors +2, -5, +1
    assert errors.mean_absolute_error == pytest.approx(8 / 3)
    assert errors.root_mean_squared_error == pytest.approx(math.sqrt(30 / 3))
    assert errors.mean_relative_error == pytest.approx((2 / 10 + 5 / 20) / 2)  # the empty image has no relative error
    assert errors.mean_error == pytest.approx(-2 / 3)


def test_errors_match_scikit_learn():
    rng = np.random.default_rng(3)
    true = rng.integers(1, 400, 50).astype(float)
    predicted = np.clip(true + rng.normal(0, 20, 50), 0, None)
    errors = count_errors(true, predicted)
    assert errors.mean_absolute_error == pytest.approx(mean_absolute_error(true, predicted))
    assert errors.root_mean_squared_error == pytest.approx(math.sqrt(mean_squared_error(true, predicted)))
    assert errors.mean_relative_error == pytest.approx(mean_absolute_percentage_error(true, predicted))


def test_errors_split_by_crowd_size_of_the_true_count():
    by_size = count_errors_by_size([0, 3, 10, 30, 500], [1, 4, 10, 20, 400], edges=(10, 50, 200))
    assert list(by_size) == ["0-10", "11-50", "201+"]  # the empty 51-200 bin is left out
    assert by_size["0-10"].images == 3 and by_size["0-10"].mean_absolute_error == pytest.approx(2 / 3)  # 10 is in it
    assert by_size["11-50"].mean_absolute_error == pytest.approx(10)
    assert by_size["201+"].mean_relative_error == pytest.approx(0.2)
    assert list(count_errors_by_size([2, 3], [2, 3], edges=(2.5,))) == ["0-2.5", ">2.5+"]


def test_only_images_without_people_have_no_relative_error():
    assert count_errors([0, 0], [1, 0]).mean_relative_error is None


@pytest.mark.parametrize("edges", [(10, 10), (50, 10), (-1,)])
def test_size_edges_must_increase(edges):
    with pytest.raises(ValueError, match="increasing"):
        size_bins(edges)


def test_mismatched_counts_are_rejected():
    with pytest.raises(ValueError, match="equal"):
        count_errors([1, 2], [1])
