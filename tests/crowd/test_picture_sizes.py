"""What a crowd zone works out per picture and map size is made once, and kept for the few sizes a camera sends."""
from processors.analytics.crowd.picture_sizes import SIZES_KEPT, PerPictureSize


def test_a_size_is_worked_out_once_and_a_stream_changing_size_every_frame_keeps_only_a_few():
    made = []
    area = PerPictureSize(lambda width, height: made.append((width, height)) or width * height)
    assert area(640, 480) == area(640, 480) == 307_200
    assert made == [(640, 480)]
    for width in range(1, 1000):
        assert area(width, 2) == 2 * width
        assert len(area.made) <= SIZES_KEPT
