import math

import numpy as np
import pytest
import torch

from dlcvkit.engine.metrics import Confusion, accuracy, iou_per_class, mean_iou, per_class_accuracy


def test_confusion_counts_rows_labels_cols_predictions():
    c = Confusion(3)
    c.update(torch.tensor([0, 1, 2, 2, 1]), torch.tensor([0, 1, 1, 2, 0]))
    assert c.matrix.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert accuracy(c.matrix) == pytest.approx(3 / 5)
    torch.testing.assert_close(per_class_accuracy(c.matrix), torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))


def test_confusion_wide_classes_and_images():
    # 50 classes take the int32 index path; 2-d inputs are flattened
    c = Confusion(50)
    pred = torch.tensor([[49, 3], [3, 0]])
    label = torch.tensor([[49, 3], [4, 0]])
    c.update(pred, label)
    assert int(c.matrix.sum()) == 4 and c.matrix[49, 49] == 1 and c.matrix[4, 3] == 1 and c.matrix[0, 0] == 1


def test_course_mean_iou_hand_computed_with_unknown_false_positive():
    # 7 classes; 8 pixels. label / prediction pairs:
    label = torch.tensor([0, 0, 1, 1, 6, 6, 2, 3])
    pred = torch.tensor([0, 1, 1, 1, 0, 6, 2, 2])
    c = Confusion(7)
    c.update(pred, label)
    iou = iou_per_class(c.matrix, 6)
    # class 0: TP 1, predicted 0 on pixels 0 and 4 (Unknown counts as false positive) -> P=2, L=2 -> 1/3
    # class 1: TP 2, P=3, L=2 -> 2/3 ; class 2: TP 1, P=2, L=1 -> 1/2 ; class 3: TP 0, P=0, L=1 -> 0
    # classes 4, 5: absent from labels and predictions -> NaN (the course's 0/0)
    expected = [1 / 3, 2 / 3, 1 / 2, 0.0]
    assert iou[:4].tolist() == pytest.approx(expected)
    assert math.isnan(iou[4]) and math.isnan(iou[5])
    assert math.isnan(mean_iou(c.matrix))


def test_course_mean_iou_all_present():
    label = torch.arange(6).repeat(2)
    pred = torch.cat([torch.arange(6), torch.tensor([0, 1, 2, 3, 4, 0])])
    c = Confusion(7)
    c.update(pred, label)
    # classes 0..4 perfect except class 0 gets one false positive from a 5: IoU0 = 2/3, IoU5 = 1/2
    assert mean_iou(c.matrix) == pytest.approx((2 / 3 + 1 + 1 + 1 + 1 + 1 / 2) / 6)


def test_counts_are_summed_over_the_set_not_averaged_per_image():
    # image A: class 0 perfect on 1 pixel; image B: class 0 has 1 TP of 3 pixels -> pooled IoU 2/4 (not (1 + 1/3)/2)
    c = Confusion(7)
    c.update(torch.tensor([0]), torch.tensor([0]))
    c.update(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 0]))
    assert iou_per_class(c.matrix, 1)[0].item() == pytest.approx(2 / 4)


def test_mean_iou_absent_policy_nan_as_the_course_or_skip_the_absent_classes():
    # the first test's pixels: IoU 1/3, 2/3, 1/2, 0 for classes 0..3, classes 4 and 5 in neither labels nor predictions
    c = Confusion(7)
    c.update(torch.tensor([0, 1, 1, 1, 0, 6, 2, 2]), torch.tensor([0, 0, 1, 1, 6, 6, 2, 3]))
    assert math.isnan(mean_iou(c.matrix, absent="nan"))
    assert mean_iou(c.matrix, absent="skip") == pytest.approx((1 / 3 + 2 / 3 + 1 / 2 + 0) / 4)
    assert math.isnan(mean_iou(torch.zeros(7, 7, dtype=torch.int64), absent="skip"))  # nothing left to average


def test_training_and_eval_seg_share_the_mean_iou():
    from dlcvkit.runs.scoring import iou_report
    from dlcvkit.tasks.segment import segmentation_metrics

    c = Confusion(7)
    c.update(torch.tensor([0, 1, 1, 1, 0, 6, 2, 2]), torch.tensor([0, 0, 1, 1, 6, 6, 2, 3]))
    assert segmentation_metrics(c.matrix)["miou"] == mean_iou(c.matrix, absent="skip")
    assert iou_report(c.matrix, "skip")[1]["mean_iou"] == mean_iou(c.matrix, absent="skip")


@pytest.mark.parametrize("k", [1, 20, 200])
def test_knn_predict_equals_scikit_learns_cosine_majority_vote(k):
    from sklearn.neighbors import KNeighborsClassifier

    from dlcvkit.engine.metrics import knn_predict

    rng = np.random.default_rng(k)
    centres = rng.normal(size=(7, 16))
    bank_y, query_y = rng.integers(0, 7, 300), rng.integers(0, 7, 90)
    bank_x = (centres[bank_y] + 1.5 * rng.normal(size=(300, 16))).astype(np.float32)
    query_x = (centres[query_y] + 1.5 * rng.normal(size=(90, 16))).astype(np.float32)
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute", weights="uniform")
    expected = knn.fit(bank_x, bank_y).predict(query_x)
    predicted = knn_predict(torch.from_numpy(bank_x), torch.from_numpy(bank_y), torch.from_numpy(query_x), k, chunk=32)
    assert predicted.tolist() == expected.tolist()
    assert 0.3 < (expected == query_y).mean() < 1  # a vote that is neither trivial nor chance


def test_pixels_with_the_ignored_label_are_not_counted():
    label = torch.tensor([0, 0, 255, 1, 6, 255, 2])
    pred = torch.tensor([0, 1, 3, 1, 6, 4, 2])
    c = Confusion(7, ignore_index=255)
    c.update(pred, label)
    # the five labelled pixels only: (0,0) (0,1) (1,1) (6,6) (2,2); the predictions 3 and 4 of ignored pixels are
    # no false positives of classes 3 and 4
    expected = torch.zeros(7, 7, dtype=torch.int64)
    for row, col in ((0, 0), (0, 1), (1, 1), (6, 6), (2, 2)):
        expected[row, col] += 1
    assert torch.equal(c.matrix, expected)
    # a class id as the ignored label: the Unknown row is left out, its column (predictions of 6) is not
    c = Confusion(7, ignore_index=6)
    c.update(torch.tensor([6, 6, 0]), torch.tensor([6, 0, 0]))
    assert c.matrix[6].sum() == 0 and c.matrix[0, 6] == 1 and c.matrix[0, 0] == 1 and int(c.matrix.sum()) == 2
    # 16 classes: 16 * 16 + 1 bins leave the uint8 index path; still exact
    c = Confusion(16, ignore_index=255)
    c.update(torch.tensor([15, 3, 15]), torch.tensor([15, 255, 14]))
    assert int(c.matrix.sum()) == 2 and c.matrix[15, 15] == 1 and c.matrix[14, 15] == 1
