import numpy as np
import pytest

from training.run.metrics import confusion_matrix, scores


def test_confusion_matrix_and_miou_match_hand_computation():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = confusion_matrix(pred, target, num_classes=3)
    # rows: truth, columns: prediction; the 255 pixel is left out.
    expected = np.array([[1, 1, 0],
                         [1, 2, 0],
                         [1, 0, 1]])
    np.testing.assert_array_equal(cm, expected)
    result = scores(cm)
    # IoU = TP / (truth row sum + prediction column sum - TP)
    iou = [1 / (2 + 3 - 1), 2 / (3 + 3 - 2), 1 / (2 + 1 - 1)]
    np.testing.assert_allclose(result.iou, iou)
    assert result.miou == pytest.approx(np.mean(iou))
    assert result.pixel_accuracy == pytest.approx(4 / 7)


def test_class_absent_everywhere_is_left_out_of_miou():
    cm = confusion_matrix(np.array([0, 1]), np.array([0, 1]), num_classes=3)
    result = scores(cm)
    assert np.isnan(result.iou[2])
    assert result.miou == 1.0


def test_target_class_out_of_range_is_refused():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0]), np.array([7]), num_classes=3)
