from __future__ import annotations

import numpy as np
import pytest

from training.metrics import confusion_matrix, scores


def test_confusion_matrix_by_hand() -> None:
    truth = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    assert confusion_matrix(truth, pred, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_confusion_matrix_ignores_out_of_range_truth() -> None:
    assert confusion_matrix(np.array([0, 255, 1]), np.array([0, 1, 1]), 2).tolist() == [[1, 0], [0, 1]]
    assert confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2, ignore=1).tolist() == [[1, 0], [0, 0]]


def test_scores_by_hand() -> None:
    cm = np.array([[50, 10, 0], [5, 20, 5], [0, 0, 10]])
    s = scores(cm, ["a", "b", "c"])
    a, b, c = (s["per_class"][k] for k in "abc")
    assert a["precision"] == pytest.approx(50 / 55) and a["recall"] == pytest.approx(50 / 60)
    assert a["iou"] == pytest.approx(50 / 65) and a["f1"] == pytest.approx(100 / 115)
    assert b["precision"] == pytest.approx(20 / 30) and b["recall"] == pytest.approx(20 / 30)
    assert b["iou"] == pytest.approx(20 / 40)
    assert c["precision"] == pytest.approx(10 / 15) and c["recall"] == 1.0 and c["iou"] == pytest.approx(10 / 15)
    assert s["accuracy"] == pytest.approx(80 / 100)
    assert s["miou"] == pytest.approx((50 / 65 + 20 / 40 + 10 / 15) / 3)
    assert a["support"] == 60 and s["pixels"] == 100


def test_absent_class_is_left_out_of_the_means() -> None:
    cm = np.array([[3, 1, 0], [1, 3, 0], [0, 0, 0]])
    s = scores(cm, ["a", "b", "c"])
    assert s["per_class"]["c"]["iou"] is None and s["per_class"]["c"]["f1"] is None
    assert s["miou"] == pytest.approx(3 / 5)


def test_empty_matrix() -> None:
    s = scores(np.zeros((2, 2)), ["a", "b"])
    assert s["accuracy"] is None and s["miou"] is None
