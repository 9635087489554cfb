"""`cityguard calibrate --write`: the fitted calibration goes into the site file as the console's scene editor writes
it, the file's comments and layout kept."""
from __future__ import annotations

from cityguard.cli import main
from schemas.settings.config import load_config

SITE = """\
# Site comment kept.
site: calibrated
cameras:
  - id: alley
    source: clip.mp4
    calibration:
      # measured on site
      image_points: [[340, 650], [940, 650], [700, 130], [580, 130], [640, 325]]
      ground_points: [[0.0, 0.0], [3.2, 0.0], [3.2, 40.0], [0.0, 40.0], [1.6, 10.0]]
    zones:
      - id: alley
        polygon: [[340, 650], [940, 650], [700, 130], [580, 130]]   # area from the calibration
"""


def test_writing_the_calibration_keeps_the_files_comments_and_layout(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    assert main(["calibrate", "--config", str(path), "--camera", "alley", "--write"]) == 0
    assert "wrote calibration of camera alley" in capsys.readouterr().out
    written = path.read_text()
    assert written.startswith(SITE.split("    zones:")[0].rstrip("\n"))  # up to the new matrix, as it was
    assert "# area from the calibration" in written and "      homography: [[" in written
    calibration = load_config(path).camera("alley").calibration
    assert calibration.homography is not None and len(calibration.image_points) == 5
    assert main(["calibrate", "--config", str(path), "--camera", "alley", "--write"]) == 0
    assert "(unchanged)" in capsys.readouterr().out and path.read_text() == written


def test_pairs_no_homography_fits_or_that_miss_the_limit_end_in_one_line_and_write_nothing(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    assert main(["calibrate", "--config", str(path), "--camera", "alley", "--pair", "1,2=3,4", "--write"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("cityguard: error: camera alley: no homography can be fitted: ") and error.count("\n") == 1
    pairs = ["--pair", "340,650=0,0", "--pair", "940,650=3.2,0", "--pair", "700,130=3.2,40", "--pair", "580,130=0,40",
             "--pair", "640,325=9,25"]  # the fifth measured wrong, 7 m off
    assert main(["calibrate", "--config", str(path), "--camera", "alley", *pairs, "--write"]) == 2
    assert "a pair is off by" in capsys.readouterr().err and path.read_text() == SITE
    crossed = ["--pair", "340,650=3.2,0", "--pair", "940,650=0,0", "--pair", "700,130=3.2,40", "--pair", "580,130=0,40"]
    assert main(["calibrate", "--config", str(path), "--camera", "alley", *crossed, "--write"]) == 2
    error = capsys.readouterr().err
    assert "puts pair 1, 2 past its horizon" in error and error.count("\n") == 1 and path.read_text() == SITE


def test_pairs_in_degrees_of_longitude_and_latitude_are_refused_in_one_line_without_writing(tmp_path, capsys):
    """Without --write too: the matrix they fit exactly would make every zone a speck."""
    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    pairs = ["--pair", "340,650=126.978,37.5665", "--pair", "940,650=126.97804,37.5665", "--pair",
             "700,130=126.97804,37.56686", "--pair", "580,130=126.978,37.56686"]
    for write in ([], ["--write"]):
        assert main(["calibrate", "--config", str(path), "--camera", "alley", *pairs, *write]) == 2
        error = capsys.readouterr().err
        assert "longitude and latitude in degrees?" in error and error.count("\n") == 1 and path.read_text() == SITE
