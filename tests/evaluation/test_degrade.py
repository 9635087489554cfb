"""Worse-camera copies of a development set's images (cityguard devset degrade)."""
import cv2
import numpy as np
import pytest

from cityguard.evaluation.degrade import DEGRADATIONS, write_degraded_copies
from tests.evaluation.test_commands import cityguard


def scene(width: int, height: int) -> np.ndarray:
    """Small dark heads on a mid-grey street, with some texture: detail a copy can lose."""
    rng = np.random.default_rng(1)
    image = np.full((height, width, 3), 128, np.uint8) + rng.integers(0, 20, (height, width, 3), dtype=np.uint8)
    for x, y in rng.integers(10, min(width, height) - 10, (300, 2)):
        cv2.circle(image, (int(x), int(y)), 4, (30, 30, 40), -1)
    return image


def sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "street.jpg"), scene(1024, 768), [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(folder / "narrow.png"), scene(480, 360))
    (folder / "truth.csv").write_text("image,count\n")  # not an image: left alone
    return folder


def test_every_copy_keeps_the_file_names_so_the_sets_truth_scores_it(images, tmp_path):
    out = tmp_path / "degraded"
    assert write_degraded_copies(images, out, list(DEGRADATIONS)) == 2
    for name in DEGRADATIONS:
        assert sorted(path.name for path in (out / name).iterdir()) == ["narrow.png", "street.jpg"]
    read = {name: cv2.imread(str(out / name / "street.jpg")) for name in DEGRADATIONS}
    original = cv2.imread(str(images / "street.jpg"))
    assert read["jpeg85"].shape == original.shape  # the control: only saved again
    assert read["w640"].shape == (480, 640, 3) and read["w352"].shape == (264, 352, 3)
    assert cv2.imread(str(out / "w640" / "narrow.png")).shape == (360, 480, 3)  # never widened
    at_85 = cv2.imencode(".jpg", original, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].size
    assert (out / "jpeg20" / "street.jpg").stat().st_size < 0.5 * at_85
    assert read["dark"].mean() == pytest.approx(0.4 * original.mean(), abs=3)
    assert sharpness(read["blur2"]) < 0.2 * sharpness(original)
    # A PNG keeps its format and gets the JPEG's pixels.
    assert not np.array_equal(cv2.imread(str(out / "jpeg20" / "narrow.png")), cv2.imread(str(images / "narrow.png")))


def test_a_folder_without_images_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images"):
        write_degraded_copies(tmp_path, tmp_path / "out", ["w352"])


def test_a_rebuilt_set_gets_the_same_copies(images, tmp_path):
    write_degraded_copies(images, tmp_path / "first", ["dark"])
    write_degraded_copies(images, tmp_path / "second", ["dark"])
    assert (tmp_path / "first" / "dark" / "street.jpg").read_bytes() == \
        (tmp_path / "second" / "dark" / "street.jpg").read_bytes()


def test_devset_degrade_command_writes_the_copies_asked_for(images, tmp_path):
    result = cityguard("devset", "degrade", "--images", str(images), "--out", str(tmp_path / "out"),
                       "--copies", "w352,blur2")
    assert "2 images x 2 copies" in result.stdout
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["blur2", "w352"]
