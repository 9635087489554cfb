"""Sampling from real files (the sample clip and clips ffmpeg makes) and a still-image URL served from 127.0.0.1."""
from __future__ import annotations

import base64
import contextlib
import itertools
import subprocess
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from infra.broker import free_port
from infra.redaction import shown
from producers.capture import (
    MAX_UNDECODABLE_PACKETS,
    REPEAT_WINDOW_S,
    CameraUnavailable,
    PublishedUpTo,
    SampleSlots,
    VideoDecoder,
    decode_still_image,
    image_size,
    sample_frames,
)
from producers.picture import YuvPicture, encode_jpeg, source_size_fields
from schemas import Frame
from schemas.settings.capture import ProducerConfig
from schemas.settings.config import CameraConfig
from tests.asset_server import serving
from tests.conftest import LOT_CLIP, VTEST, video_frames
from tests.producers.conftest import grey_part
from tests.producers.rtsp_server import RtspServer


def test_file_is_sampled_on_its_own_timeline():
    camera = CameraConfig(id="campus", source=str(VTEST), fps=5)
    frames = []
    for frame in sample_frames(camera, str(VTEST), realtime=False):
        frames.append(frame)
        if len(frames) == 10:
            break
    assert np.diff([frame.captured_at for frame in frames]) == pytest.approx([0.2] * 9)  # vtest.avi is 10 fps
    assert (frames[0].picture.width, frames[0].picture.height) == (768, 576)


@pytest.mark.parametrize(("encoder", "muxer"), [(("-c:v", "libx264", "-preset", "ultrafast"), "h264"),
                                                (("-c:v", "libx265", "-x265-params", "log-level=error"), "hevc")])
def test_a_raw_stream_without_timestamps_plays_at_the_rate_its_headers_give(tmp_path, encoder, muxer):
    # A recorder's .264 or .265 export has no container, so no timestamps, and FFmpeg's demuxer assumes 25 frames a
    # second; the encoder wrote the stream's own rate (10 here) into its headers.
    raw = make_clip(tmp_path / f"export.{muxer}", *encoder, "-f", muxer, seconds=2, rate=10)
    camera = CameraConfig(id="recorder", source=raw, fps=5)
    frames = list(sample_frames(camera, raw, realtime=False, clock=lambda: 0.0))
    assert [frame.captured_at for frame in frames] == pytest.approx([index / 5 for index in range(10)])
    assert frames[0].source_fps == 10


def test_a_file_behind_the_clock_skips_the_missed_samples_instead_of_bursting():
    now = [1000.0]

    def sleep(seconds):
        now[0] += seconds

    camera = CameraConfig(id="campus", source=str(VTEST), fps=5)
    frames = sample_frames(camera, str(VTEST), realtime=True, clock=lambda: now[0], sleep=sleep)
    times = [next(frames).captured_at for _ in range(3)]
    now[0] += 2.0  # the machine stalled
    times += [next(frames).captured_at for _ in range(3)]
    assert np.diff(times) == pytest.approx([0.2, 0.2, 2.0, 0.2, 0.2], abs=1e-6)


def test_a_paced_file_is_stamped_on_its_own_timeline_however_late_its_reader_wakes():
    # A recorded clip's speeds and stopped times are measured across these gaps.
    now, late = [1000.0], itertools.cycle([0.0, 0.09, 0.03])

    def sleep(seconds):
        now[0] += seconds + next(late)

    camera = CameraConfig(id="campus", source=str(VTEST), fps=5)
    frames = sample_frames(camera, str(VTEST), realtime=True, clock=lambda: now[0], sleep=sleep)
    times = [next(frames).captured_at for _ in range(7)]
    assert np.diff(times) == pytest.approx([0.2] * 6, abs=1e-6) and times[-1] <= now[0]


@pytest.fixture(scope="module")
def spliced(tmp_path_factory):
    """Two 3 s recordings in one file, the second stamped as it was (the clock back at the start) or an hour later:
    H.264 in MPEG-TS, and MJPEG in Matroska (whose demuxer reads on into a second file's segment)."""
    folder = tmp_path_factory.mktemp("spliced")
    clips = {}
    for codec, extension, encoder in [("h264", "ts", ("-c:v", "libx264", "-preset", "ultrafast")),
                                      ("mjpeg", "mkv", ("-c:v", "mjpeg"))]:
        first = make_clip(folder / f"first.{extension}", *encoder, seconds=3, rate=10)
        later = make_clip(folder / f"later.{extension}", *encoder, "-output_ts_offset", "3600", seconds=3, rate=10)
        for name, second in [("back", first), ("ahead", later)]:
            clips[codec, name] = folder / f"{name}.{extension}"
            clips[codec, name].write_bytes(Path(first).read_bytes() + Path(second).read_bytes())
    return clips


@pytest.mark.parametrize("codec", ["h264", "mjpeg"])
@pytest.mark.parametrize("clip", ["back", "ahead"])
def test_a_file_whose_timestamps_jump_plays_on_at_the_camera_rate(spliced, clip, codec):
    now = [1000.0]

    def sleep(seconds):
        now[0] += seconds

    source = str(spliced[codec, clip])
    camera = CameraConfig(id="spliced", source=source, fps=2)
    paced = [frame.captured_at for frame in
             sample_frames(camera, source, realtime=True, clock=lambda: now[0], sleep=sleep)]
    unpaced = [frame.captured_at for frame in sample_frames(camera, source, realtime=False, clock=lambda: 0.0)]
    assert np.diff(paced) == pytest.approx([0.5] * 11) and now[0] == pytest.approx(1005.5)
    assert np.diff(unpaced) == pytest.approx([0.5] * 11)


def test_missing_file_is_a_permanent_failure(tmp_path):
    camera = CameraConfig(id="gone", source="x.avi")
    with pytest.raises(CameraUnavailable, match="no such file") as error:
        next(sample_frames(camera, str(tmp_path / "x.avi")))
    assert error.value.permanent


def test_a_folder_of_numbered_pictures_is_a_clip_at_the_cameras_rate_in_the_order_of_their_numbers(tmp_path):
    # A square moving right a step a picture, saved as the frame folders of recorders and anomaly datasets are.
    for index in range(12):
        picture = np.full((120, 160, 3), 40, np.uint8)
        picture[40:80, 10 + 8 * index:30 + 8 * index] = 230
        cv2.imwrite(str(tmp_path / f"{index:04d}.tif"), picture)
    (tmp_path / "notes.txt").write_text("not a picture")
    camera = CameraConfig(id="walkway", source=str(tmp_path), fps=10)
    frames = list(sample_frames(camera, str(tmp_path), realtime=False, clock=lambda: 0.0))
    assert [frame.captured_at for frame in frames] == pytest.approx([index / 10 for index in range(12)])
    square_x = [int(np.argmax(frame.picture.y[60] > 128)) for frame in frames]
    assert square_x == pytest.approx([10 + 8 * index for index in range(12)], abs=2)


def test_a_folder_of_pictures_numbered_without_leading_zeros_or_with_none_is_refused_naming_why(tmp_path):
    for index in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"{index}.png"), np.zeros((8, 8, 3), np.uint8))
    camera = CameraConfig(id="walkway", source=str(tmp_path))
    with pytest.raises(CameraUnavailable, match=r"without leading zeros.*\(10.png sorts before 2.png\)") as error:
        next(sample_frames(camera, str(tmp_path)))
    assert error.value.permanent
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CameraUnavailable, match="no pictures") as error:
        next(sample_frames(camera, str(empty)))
    assert error.value.permanent


@pytest.mark.parametrize(("rotate", "pixels", "size"), [(90, "yuv420p", (120, 160)), (180, "yuv420p", (120, 160)),
                                                        (270, "yuv444p", (121, 161))])
def test_a_clip_stored_turned_is_sampled_upright_as_players_and_opencv_show_it(tmp_path, rotate, pixels, size):
    # A phone's portrait clip is stored sideways with a display matrix saying how to turn it; here a picture white at
    # its top left corner (height x width `size`: odd, as a 4:4:4 clip's may be), turned counterclockwise by `rotate`.
    stored, turned = tmp_path / "stored.mp4", tmp_path / "turned.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=160x120:r=10:d=1,"
                    f"drawbox=x=0:y=0:w=40:h=30:color=white:t=fill,scale={size[1]}:{size[0]}", "-c:v", "libx264",
                    "-pix_fmt", pixels, str(stored)], check=True, timeout=60)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(stored), "-c", "copy", "-metadata:s:v:0",
                    f"rotate={rotate}", str(turned)], check=True, timeout=60)
    camera = CameraConfig(id="phone", source=str(turned), fps=5)
    picture = next(sample_frames(camera, str(turned), realtime=False)).picture
    upright = size if rotate == 180 else size[::-1]
    assert picture.y.shape == upright
    assert picture.u.shape == picture.v.shape == ((upright[0] + 1) // 2, (upright[1] + 1) // 2)
    corners = {(row, column): int(picture.y[row, column]) for row in (0, -1) for column in (0, -1)}
    bright_corner = {90: (-1, 0), 180: (-1, -1), 270: (0, -1)}[rotate]
    assert [corner for corner, level in corners.items() if level > 128] == [bright_corner]
    jpeg, width, height = encode_jpeg(picture, 1280, 90)
    assert (height, width) == upright and mean_difference(jpeg, video_frames(turned, 1)[0]) < 4


def test_a_clip_whose_display_matrix_holds_no_turn_is_sampled_as_stored(tmp_path):
    # A track matrix of zeros, as a broken muxer writes one: FFmpeg finds no angle in it, and OpenCV and players show
    # the clip as stored (here white at its top left corner).
    clip = tmp_path / "zeroed.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=160x120:r=10:d=1,"
                    "drawbox=x=0:y=0:w=40:h=30:color=white:t=fill", "-c:v", "libx264", str(clip)], check=True,
                   timeout=60)
    data = bytearray(clip.read_bytes())
    version = data.find(b"tkhd") + 4
    assert data[version] == 0  # a version 0 track header: its matrix 40 bytes on
    data[version + 40:version + 76] = bytes(36)
    clip.write_bytes(data)
    picture = next(sample_frames(CameraConfig(id="phone", source=str(clip), fps=5), str(clip), realtime=False)).picture
    assert picture.y.shape == (120, 160) and picture.y[0, 0] > 128
    assert mean_difference(encode_jpeg(picture, 1280, 90)[0], video_frames(clip, 1)[0]) < 4


def test_a_clip_url_that_opens_but_decodes_nothing_is_retried_and_a_local_one_is_not(tmp_path):
    # Its index arrives but none of its pictures (a recording still being written, a cut-off transfer): the next try
    # may find it whole. The same bytes in a local file are what that file holds.
    whole = tmp_path / "whole.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(VTEST), "-t", "2", "-c:v", "libx264", "-movflags", "+faststart",
                    str(whole)], check=True)
    data = whole.read_bytes()
    index_end = data.index(b"mdat") + 4
    (tmp_path / "cut.mp4").write_bytes(data[:index_end])
    with serving(tmp_path) as (base_url, _):
        source = f"{base_url}/cut.mp4"
        with pytest.raises(CameraUnavailable, match="no frame could be decoded") as from_url:
            next(sample_frames(CameraConfig(id="recorder", source=source), source))
    assert not from_url.value.permanent
    local = str(tmp_path / "cut.mp4")
    with pytest.raises(CameraUnavailable, match="no frame could be decoded") as from_file:
        next(sample_frames(CameraConfig(id="recorder", source=local), local))
    assert from_file.value.permanent


def test_a_camera_that_fails_to_open_is_reported_without_its_credentials():
    # A closed port: FFmpeg fails at once. The reason goes to the log, the camera-status topic and the console.
    source = "rtsp://admin:hunter2@127.0.0.1:1/stream?token=s3cret"
    camera = CameraConfig(id="gate", source=source)
    with pytest.raises(CameraUnavailable) as error:
        next(sample_frames(camera, source, settings=ProducerConfig(open_timeout_s=2, read_timeout_s=2)))
    assert str(error.value) == "cannot open: rtsp://127.0.0.1:1/stream?…"
    assert not error.value.permanent


@pytest.mark.parametrize(("source", "expected"), [
    ("https://cctv.example/live/1.m3u8?key=abc&exp=1", "https://cctv.example/live/1.m3u8?…"),
    ("rtsp://user@[fe80::1]:554/h264", "rtsp://[fe80::1]:554/h264"),
    ("rtsp://u:p@host:99999/x", "rtsp://<unparsable URL>"),
    ("clips/gate.mp4", "clips/gate.mp4"),
    ("0", "0"),
    # ITS stream URLs carry their token in the path
    ("http://cctv.example/270/rWSK4DQ8ZAZxCK6lH8C+zUD0ni1ZcCsJIIyLfJrGYrBU==", "http://cctv.example/270/…"),
    ("http://cctv.example/270/qA7Ubl5+OwmUqjGjDfxb+I+2fTm%2F0IqjRgErU5+WmeQ=", "http://cctv.example/270/…"),
    ("http://127.0.0.1:8080/ad6185f4eac5cc26/live.m3u8", "http://127.0.0.1:8080/…/live.m3u8"),
    ("https://relay.example/hls/Xk3_9aB-Qz7LmN0pR2sT4uV/index.m3u8", "https://relay.example/hls/…/index.m3u8"),
    # readable words, numeric ids and timestamps stay
    ("https://relay.example/cams/north-gate/index.m3u8", "https://relay.example/cams/north-gate/index.m3u8"),
    ("https://cdn.example/videostreamingservice/270/1.m3u8", "https://cdn.example/videostreamingservice/270/1.m3u8"),
    ("https://nvr.example/record/20240101123456/1700000000123.jpg",
     "https://nvr.example/record/20240101123456/1700000000123.jpg"),
    ("http://cctv.example/%EC%84%9C%EC%9A%B8%EA%B0%95%EB%82%A8/1.jpg",
     "http://cctv.example/%EC%84%9C%EC%9A%B8%EA%B0%95%EB%82%A8/1.jpg"),
])
def test_sources_are_shown_without_credentials_query_or_tokens(source, expected):
    assert shown(source) == expected


def make_clip(path, *encoder: str, size: str = "320x240", seconds: float = 4, rate: int = 25):
    """A clip of the sample video made by ffmpeg with the given encoder options."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(VTEST), "-t", str(seconds),
                    "-vf", f"scale={size.replace('x', ':')}", "-r", str(rate), "-an", *encoder, str(path)],
                   check=True, timeout=60)
    return str(path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        # B-frames that nothing refers to, keyframes 2 s apart
        "b_frames": make_clip(folder / "b.mp4", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "3",
                              "-b-pyramid", "none", "-g", "50"),
        # B-frames, keyframes 2 s apart and one at a scene cut 0.32 s after the second
        "scene_cut": make_clip(folder / "cut.mp4", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "3",
                               "-b-pyramid", "none", "-g", "50", "-force_key_frames", "2.32"),
        # a keyframe every 0.2 s and no B-frames
        "short_gop": make_clip(folder / "gop.mp4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "5"),
        # keyframes 2 s apart and no B-frames, long enough to skip whole groups
        "long_gop": make_clip(folder / "long.mp4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
                              seconds=10),
        # full-range 4:2:2 like many webcams, odd size
        "mjpeg": make_clip(folder / "cam.avi", "-c:v", "mjpeg", "-pix_fmt", "yuvj422p", "-q:v", "3",
                           size="333x241", seconds=1),
        # every one of the 25 frames a second its own picture (ffmpeg would leave out the repeats of the 10 fps source)
        "mjpeg_25": make_clip(folder / "cam25.avi", "-c:v", "mjpeg", "-q:v", "3", "-fps_mode", "cfr"),
        # an HLS playlist of 1 s MPEG-TS segments, whose timestamps start at 1.4 s as live encoders' do
        "playlist": make_clip(folder / "live.m3u8", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
                              "-f", "hls", "-hls_time", "1", "-hls_list_size", "0"),
    }


def all_frames(source: str) -> dict[float, YuvPicture]:
    """Every frame of a clip decoded, by its time in the clip."""
    decoder = VideoDecoder(source, ProducerConfig())
    try:
        return {round(at, 6): YuvPicture.from_frame(frame) for at, frame in decoder.frames()}
    finally:
        decoder.close()


def mean_difference(jpeg: bytes, reference: np.ndarray) -> float:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == reference.shape
    return float(np.abs(image.astype(np.int16) - reference).mean())


def test_published_jpegs_decode_to_the_picture_opencv_reads(clips):
    """The planes go to JPEG without a BGR round trip: the inference stage still decodes the same colours and range."""
    camera = CameraConfig(id="campus", source=str(VTEST), fps=5)
    sampled = itertools.islice(sample_frames(camera, str(VTEST), realtime=False), 3)
    for frame, reference in zip(sampled, video_frames(VTEST, 3, step=2), strict=True):  # limited-range MPEG-4
        assert mean_difference(encode_jpeg(frame.picture, 1280, 80)[0], reference) < 4
    picture = next(sample_frames(camera.model_copy(update={"fps": 25}), clips["mjpeg"], realtime=False)).picture
    jpeg, width, height = encode_jpeg(picture, 1280, 90)  # full range, 4:2:2, odd size
    assert (width, height) == (333, 241)
    assert mean_difference(jpeg, video_frames(clips["mjpeg"], 1)[0]) < 4


def test_frames_before_the_next_sample_are_not_decoded_where_the_codec_allows(clips):
    with_b_frames = VideoDecoder(clips["b_frames"], ProducerConfig())
    with_b_frames.wanted_from = 1.0
    times = [at for at, _ in with_b_frames.frames()]
    with_b_frames.close()
    assert len([at for at in times if at < 1.0]) < 10  # 25 frames, three in four of them B-frames
    assert [round(at, 2) for at in times if at >= 1.0] == [round(1 + index / 25, 2) for index in range(75)]
    short_gop = VideoDecoder(clips["short_gop"], ProducerConfig())
    short_gop.wanted_from = 3.0
    times = [at for at, _ in short_gop.frames()]
    short_gop.close()
    assert all(round(at * 25) % 5 == 0 for at in times if 0.4 < at < 3.0 - 0.2)  # keyframes only, once the GOP is known
    assert [round(at, 2) for at in times if at >= 3.0] == [round(3 + index / 25, 2) for index in range(25)]


def test_the_pictures_of_an_intra_only_stream_before_the_next_sample_are_not_decoded(clips):
    """Every MJPEG packet is a whole picture: one presented before the next sample is due is passed over undecoded,
    with its time (the sampler sees every picture's)."""
    decoder = VideoDecoder(clips["mjpeg_25"], ProducerConfig())
    decoder.wanted_from = 1.0
    frames = [(round(at, 2), frame is not None) for at, frame in decoder.frames()]
    decoder.close()
    assert [at for at, _ in frames] == [round(index / 25, 2) for index in range(100)]
    decoded = [at for at, was_decoded in frames if was_decoded]
    assert len([at for at in decoded if at < 1.0]) <= 2  # the first, before the stream's timeline is known
    assert [at for at in decoded if at >= 1.0] == [round(1 + index / 25, 2) for index in range(75)]


def test_an_intra_only_file_publishes_the_frames_it_would_if_every_frame_were_decoded(clips):
    """A 25 fps MJPEG file sampled at 5 fps decodes a fifth of its frames, and samples the same ones at the same
    times, also across a loop (which goes on from the file's last frame, decoded or not)."""
    camera = CameraConfig(id="c", source=clips["mjpeg_25"], fps=5, loop=True)
    every = all_frames(clips["mjpeg_25"])
    sampled = list(itertools.islice(sample_frames(camera, camera.source, realtime=False, clock=lambda: 0.0), 40))
    assert [round(frame.captured_at, 6) for frame in sampled] == [round(index / 5, 6) for index in range(40)]
    for frame in sampled:
        assert np.array_equal(frame.picture.y, every[round(frame.captured_at % 4, 6)].y)


@pytest.mark.parametrize("clip, fps", [("b_frames", 5), ("short_gop", 0.5), ("short_gop", 5)])
def test_skipping_leaves_the_sampled_frames_unchanged(clips, clip, fps):
    camera = CameraConfig(id="c", source=clips[clip], fps=fps)
    every = all_frames(clips[clip])
    sampled = list(sample_frames(camera, clips[clip], realtime=False, clock=lambda: 0.0))
    expected = [round(index / fps, 6) for index in range(int(4 * fps))]
    assert [round(frame.captured_at, 6) for frame in sampled] == expected
    for frame in sampled:
        assert np.array_equal(frame.picture.y, every[round(frame.captured_at, 6)].y)


@pytest.mark.parametrize("kind", ["file", "rtsp"])  # rtsp: the file read as a live stream
def test_a_frame_the_decoder_hands_back_late_is_not_sampled(clips, kind):
    # Skipping to the keyframe after the scene cut, the decoder releases that keyframe after frames a second later.
    ticks = itertools.count()
    camera = CameraConfig(id="c", source=clips["scene_cut"], fps=1, kind=kind)
    sampled = []
    with contextlib.suppress(CameraUnavailable):  # how a live stream ends
        sampled.extend(sample_frames(camera, camera.source, realtime=False, clock=lambda: next(ticks) / 1000))
    times = [frame.captured_at for frame in sampled]
    assert len(times) == 4 and all(np.diff(times) > 0)  # one a second of the 4 s clip, never back in time


def test_a_live_frame_a_rounding_error_before_its_slot_takes_that_slot_once():
    slots = SampleSlots(0.2, skip_missed=True)
    slots.skip_to(3.2000000000000006)  # five slots summed from 2.2
    assert slots.take(4.6 - 1.4, None)  # 3.1999999999999997
    assert not slots.take(3.24, None) and slots.take(3.4, None)


def test_a_frame_that_was_not_decoded_is_never_sampled_and_leaves_its_slot_to_the_next():
    slots = SampleSlots(0.2, skip_missed=True)
    assert slots.take(10.0, None)
    assert not slots.take(10.2, None, decoded=False) and slots.take(10.24, None)
    assert not slots.take(3.0, None, decoded=False)  # a new timeline starts at a frame that was not decoded
    assert slots.take(3.04, None) and not slots.take(3.08, None) and slots.take(3.24, None)


def test_a_camera_at_its_streams_rate_takes_every_frame_of_rounded_timestamps():
    for rate, ticks in ((30, 1000), (7, 90_000), (30000 / 1001, 1000)):  # milliseconds, or MPEG-TS 90 kHz ticks
        slots = SampleSlots(1 / rate, skip_missed=True)
        times = [round((95_000 + index / rate) * ticks) / ticks for index in range(3000)]
        assert sum(slots.take(at, None) for at in times) == 3000


def published_times(camera: CameraConfig, published: PublishedUpTo, limit: int | None = None) -> list[float]:
    """The stream time `published` holds after each frame one connection samples, up to `limit` frames."""
    times = []
    with contextlib.suppress(CameraUnavailable):  # how a live stream ends
        for _ in itertools.islice(sample_frames(camera, camera.source, realtime=False, published=published), limit):
            times.append(published.stream_s)
    return times


def test_a_playlist_no_longer_updated_is_not_published_again(clips):
    camera = CameraConfig(id="c", source=clips["playlist"], fps=5, kind="hls")
    published = PublishedUpTo()
    first = published_times(camera, published)
    assert len(first) == 20 and first[0] >= 1.0  # 4 s at 5 fps, on the stream's own timeline
    with pytest.raises(CameraUnavailable, match=r"no new frames, only \d+ already published"):
        list(sample_frames(camera, camera.source, realtime=False, published=published))
    assert published.stream_s == first[-1]


def test_a_reconnected_stream_goes_on_after_the_last_frame_published_at_the_camera_rate(clips):
    camera = CameraConfig(id="c", source=clips["playlist"], fps=5, kind="hls")
    published = PublishedUpTo()
    before = published_times(camera, published, limit=8)
    after = published_times(camera, published)  # the playlist served from its start again
    assert len(before) == 8 and len(after) == 12
    assert np.allclose(np.diff(before + after), 0.2)


@pytest.mark.parametrize("shift", [REPEAT_WINDOW_S + 10, -1000.0])
def test_a_stream_far_from_the_last_frame_published_is_a_new_timeline(clips, shift):
    """An encoder restarted from zero (the last frame published far ahead) or a stream far ahead of it: every frame
    is sampled."""
    camera = CameraConfig(id="c", source=clips["playlist"], fps=5, kind="hls")
    fresh = published_times(camera, PublishedUpTo())
    assert published_times(camera, PublishedUpTo(fresh[-1] + shift)) == fresh


def test_a_recording_read_again_goes_on_after_the_last_frame_published_at_the_camera_rate(clips):
    """A recording that broke off (an ITS camera's clip whose URL expired) is read again from the frame after the
    last one published, not from its start."""
    camera = CameraConfig(id="c", source=clips["short_gop"], fps=5)
    published = PublishedUpTo()
    before = published_times(camera, published, limit=8)
    after = published_times(camera, published)
    assert len(before) == 8 and len(after) == 12  # 4 s at 5 fps, once
    assert np.allclose(np.diff(before + after), 0.2)


def test_a_looping_recording_read_again_starts_from_its_beginning(clips):
    # Going on after the last frame published would skim every loop played before: hours of them.
    camera = CameraConfig(id="c", source=clips["short_gop"], fps=5, loop=True)
    published = PublishedUpTo(3600.0)
    assert published_times(camera, published, limit=3) == pytest.approx([0.0, 0.2, 0.4])


def test_an_rtsp_source_ignores_what_was_published(clips):
    camera = CameraConfig(id="c", source=clips["long_gop"], fps=5, kind="rtsp")
    published = PublishedUpTo(5.0)
    assert len(published_times(camera, published)) > 40 and published.stream_s == 5.0


def test_a_file_behind_the_clock_resumes_at_the_clock_where_only_keyframes_were_decoded(clips):
    now = [1000.0]

    def sleep(seconds):
        now[0] += seconds

    camera = CameraConfig(id="c", source=clips["long_gop"], fps=5)
    frames = sample_frames(camera, clips["long_gop"], realtime=True, clock=lambda: now[0], sleep=sleep)
    last_before = [next(frames) for _ in range(12)][-1]  # 2.2 s: the decoder has seen two keyframes
    now[0] += 5.0  # the machine stalled: up to 7.2 s the file is skipped, keyframes only
    after = [next(frames) for _ in range(3)]
    assert np.diff([frame.captured_at for frame in [last_before, *after]]) == pytest.approx([5.0, 0.2, 0.2], abs=1e-6)
    every = all_frames(clips["long_gop"])
    assert all(np.array_equal(frame.picture.y, every[at].y) for frame, at in zip(after, (7.2, 7.4, 7.6), strict=True))


def test_unavailable_hardware_decoding_falls_back_to_the_cpu(clips):
    """This machine may have no NVIDIA GPU: frames come all the same, decoded on the CPU."""
    camera = CameraConfig(id="c", source=clips["short_gop"], fps=5)
    frames = sample_frames(camera, clips["short_gop"], realtime=False,
                           settings=ProducerConfig(hardware_decoding="cuda"))
    assert next(frames).picture.width == 320


def test_encode_scales_down_to_the_max_width_and_the_frame_keeps_the_cameras_own_size():
    picture = YuvPicture.from_bgr(np.zeros((576, 768, 3), np.uint8))
    jpeg, width, height = encode_jpeg(picture, max_width=384, quality=70)
    assert (width, height) == (384, 288) and cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1).shape == (288, 384, 3)
    frame = Frame(camera_id="c", seq=0, captured_at=1.0, width=width, height=height, jpeg=jpeg,
                  **source_size_fields(picture, width))
    assert frame.source_size == (768, 576)  # where the site's geometry is drawn
    assert source_size_fields(picture, 768) == {}  # not scaled: nothing to add


def test_still_image_url_is_polled_at_the_camera_rate(snapshot_server):
    url, state = snapshot_server
    camera = CameraConfig(id="snap", source=url, fps=20)
    frames = sample_frames(camera, url)
    first = [next(frames) for _ in range(4)]
    assert state["gets"] == 4 and (first[0].picture.width, first[0].picture.height) == (64, 48)
    assert np.diff([frame.captured_at for frame in first]) == pytest.approx([0.05] * 3, abs=0.03)
    state["status"] = 404  # an expired tokenised URL
    with pytest.raises(CameraUnavailable, match="HTTP 404"):
        next(frames)


def test_a_still_image_url_with_credentials_authenticates_and_never_shows_them(snapshot_server):
    url, state = snapshot_server
    state["authorization"] = "Basic " + base64.b64encode(b"admin:S3cret pw").decode()
    with_credentials = url.replace("http://", "http://admin:S3cret%20pw@")
    frame = next(sample_frames(CameraConfig(id="snap", source=with_credentials), with_credentials))
    assert (frame.picture.width, frame.picture.height) == (64, 48)
    nothing_there = f"http://admin:Wr0ngPw@127.0.0.1:{free_port()}/a.jpg"
    for wrong in [url.replace("http://", "http://admin:Wr0ngPw@"), nothing_there]:
        with pytest.raises(CameraUnavailable, match="HTTP 401|unreachable: ConnectionRefusedError") as error:
            next(sample_frames(CameraConfig(id="snap", source=wrong), wrong))
        assert "Wr0ngPw" not in str(error.value) and "admin" not in str(error.value)


@pytest.mark.parametrize("path, kind, extension", [
    ("/cgi-bin/snapshot.cgi", "auto", ".jpg"),  # read as a live stream: FFmpeg's jpeg_pipe
    ("/cgi-bin/snapshot.cgi", "auto", ".png"),  # png_pipe
    ("/cam/snapshot.jpg", "mjpeg", ".jpg"),  # image2
])
def test_a_stream_url_that_answers_with_a_single_picture_is_polled_as_a_still_image(snapshot_server, path, kind,
                                                                                     extension):
    """Read as a stream, its one picture would end every connection and the camera would go down."""
    url, state = snapshot_server
    url = url.replace("/snapshot.jpg", path)
    state["body"] = cv2.imencode(extension, state["image"])[1].tobytes()
    now = [1000.0]

    def sleep(seconds):
        now[0] += seconds

    camera = CameraConfig(id="snap", source=url, fps=2, kind=kind)
    frames = list(itertools.islice(sample_frames(camera, url, clock=lambda: now[0], sleep=sleep), 4))
    assert [frame.captured_at for frame in frames] == [1000.0, 1000.5, 1001.0, 1001.5]
    assert all((frame.picture.width, frame.picture.height) == (64, 48) for frame in frames)


def test_an_mjpeg_camera_is_sampled_on_arrival_not_on_the_rate_ffmpeg_guesses(mjpeg_server):
    """MJPEG parts carry no timestamps (FFmpeg numbers them at 25 fps): sampled by when they arrive, at the camera
    rate, also at a URL that names no kind."""
    url, state = mjpeg_server
    camera = CameraConfig(id="mjpeg", source=url, fps=5)
    ticks = itertools.count()
    frames = []
    with pytest.raises(CameraUnavailable, match="stream"):  # the camera drops the connection after its 20 parts
        for frame in sample_frames(camera, url, clock=lambda: next(ticks) / 10):  # a part every 0.1 s
            frames.append(frame)
    assert [grey_part(frame.picture.y) for frame in frames] == list(range(0, 20, 2))
    assert np.diff([frame.captured_at for frame in frames]) == pytest.approx([0.2] * 9)


def test_the_mjpeg_parts_that_arrive_between_samples_are_not_decoded(mjpeg_server):
    """Every part is a whole picture, so one that arrives before the next sample is due is dropped undecoded: a 25 fps
    camera sampled at 5 fps decodes a fifth of its parts. Those between two samples here are corrupt, so many in a
    row that decoding them would fail the stream as undecodable."""
    url, state = mjpeg_server
    state.update(parts=401, corrupt=range(1, 1 + MAX_UNDECODABLE_PACKETS))
    camera = CameraConfig(id="mjpeg", source=url, fps=0.25)
    ticks = itertools.count()
    frames = []
    with pytest.raises(CameraUnavailable, match="^stream (broke|ended)"):  # the camera drops it after 401 parts
        for frame in sample_frames(camera, url, clock=lambda: next(ticks) / 100):  # a part every 0.01 s
            frames.append(frame)
    assert [grey_part(frame.picture.y) for frame in frames] == [0, 400 % 30]  # parts 0 and 400, 4 s apart
    assert {frame.source_fps for frame in frames} == {None}  # no rate of its own: held to the camera's


def test_an_mjpeg_camera_goes_on_sampling_when_the_wall_clock_steps_back(mjpeg_server):
    """Sampled on arrival, the first part after the clock stepped back 5 s (an NTP correction) starts a new timeline:
    it is decoded, though it arrives before the next sample was due on the old one."""
    url, state = mjpeg_server
    state.update(parts=50)
    camera = CameraConfig(id="mjpeg", source=url, fps=5)
    ticks = itertools.count()

    def clock() -> float:  # a part every 0.1 s, the clock 5 s back from part 25 on
        tick = next(ticks)
        return tick / 10 - (5.0 if tick > 25 else 0.0)

    frames = []
    with pytest.raises(CameraUnavailable, match="stream"):  # the camera drops the connection after its 50 parts
        for frame in sample_frames(camera, url, clock=clock):
            frames.append(frame)
    expected = [*range(0, 25, 2), *range(25, 50, 2)]
    assert [grey_part(frame.picture.y) for frame in frames] == [part % 30 for part in expected]


def png_of_zeros(width: int, height: int) -> bytes:
    """A grey PNG that compresses width x height pixels into a few kilobytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    compressor = zlib.compressobj(9)
    rows = b"".join(compressor.compress(bytes(1 + width)) for _ in range(height)) + compressor.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def black_picture(extension: str, *params: int) -> bytes:
    """An 8000x4321 black picture as OpenCV writes it."""
    return cv2.imencode(extension, np.zeros((4321, 8000, 3), np.uint8), params)[1].tobytes()


@pytest.mark.parametrize("encode", [
    pytest.param(lambda: png_of_zeros(8000, 4321), id="png"),  # refused from its header
    pytest.param(lambda: black_picture(".webp", cv2.IMWRITE_WEBP_QUALITY, 101), id="webp"),  # lossless: 1.4 kB
    pytest.param(lambda: black_picture(".tiff"), id="tiff"),
    pytest.param(lambda: black_picture(".gif"), id="gif"),
])
def test_a_still_image_larger_than_a_camera_picture_is_refused(snapshot_server, encode):
    url, state = snapshot_server
    state["body"] = encode()
    with pytest.raises(CameraUnavailable, match="returned a 8000x4321 image, more than the 33177600 pixels"):
        next(sample_frames(CameraConfig(id="snap", source=url), url))


def tiff_header(order: str, width: int, height: int, width_kind: int = 4) -> bytes:
    """A TIFF's header and first image directory, declaring a picture with no pixel data after it."""
    def number(value: int, size: int) -> bytes:
        return value.to_bytes(size, order)

    def entry(tag: int, kind: int, value: int) -> bytes:
        size = 2 if kind == 3 else 4
        return number(tag, 2) + number(kind, 2) + number(1, 4) + number(value, size) + bytes(4 - size)

    mark = b"II*\0" if order == "little" else b"MM\0*"
    return (mark + number(8, 4) + number(3, 2) + entry(254, 4, 0) + entry(256, width_kind, width)
            + entry(257, 3, height) + number(0, 4))


@pytest.mark.parametrize("body", [
    pytest.param(tiff_header("little", 100_000, 50_000), id="tiff-little-endian"),
    pytest.param(tiff_header("big", 100_000, 50_000), id="tiff-big-endian"),
    pytest.param(tiff_header("little", 65_000, 60_000, width_kind=3), id="tiff-short-width"),
    pytest.param(b"GIF89a" + (65_000).to_bytes(2, "little") + (60_000).to_bytes(2, "little") + bytes(3), id="gif"),
])
def test_a_huge_tiff_or_gif_is_refused_from_its_header_before_any_decoding(body):
    """Headers alone, with no pixels behind them: were they decoded first, OpenCV would find no image in them."""
    width, height = image_size(body)
    assert width * height >= 3_000_000_000
    with pytest.raises(ValueError, match=f"returned a {width}x{height} image, more than"):
        decode_still_image(body)


def test_a_still_image_url_answering_with_no_bytes_is_a_camera_without_a_picture(snapshot_server):
    url, state = snapshot_server
    state["body"] = b""
    with pytest.raises(CameraUnavailable, match=r"did not return an image \(0 bytes\)"):
        next(sample_frames(CameraConfig(id="snap", source=url), url))


@pytest.mark.parametrize("extension", [".webp", ".tiff", ".png", ".bmp"])
def test_a_still_image_may_be_in_any_format_opencv_reads(snapshot_server, extension):
    url, state = snapshot_server
    state["body"] = cv2.imencode(extension, state["image"])[1].tobytes()
    frame = next(sample_frames(CameraConfig(id="snap", source=url), url))
    assert (frame.picture.width, frame.picture.height) == (64, 48)


@pytest.mark.skipif(not RtspServer.available(), reason="rtsp-server-perl (Debian) is not installed")
def test_two_rtsp_servers_on_one_host_each_serve_their_own_stream(tmp_path):
    # The server falls back to the same RTP ports whenever no stream is mounted; the second one's readers then got
    # nothing at all (timeouts on every reconnect) while the first one ran.
    servers = [RtspServer(VTEST, tmp_path / name).start() for name in ("first", "second")]
    try:
        for server in servers:
            camera = CameraConfig(id="rtsp", source=server.url, fps=5)
            settings = ProducerConfig(rtsp_transport="udp", open_timeout_s=10, read_timeout_s=10)
            frame = next(sample_frames(camera, server.url, settings=settings))
            assert (frame.picture.width, frame.picture.height) == (768, 576)
    finally:
        for server in servers:
            server.stop()


def test_a_file_with_uneven_frame_times_keeps_every_frame_at_its_own_average_rate():
    # The GIF's frames come 0.08 to 0.17 s apart, about 12 a second: a slot passed in a long gap is made up by the
    # next frame, as the rate averages out, instead of losing a third of the frames.
    frames = list(sample_frames(CameraConfig(id="lot", source=str(LOT_CLIP), fps=12), str(LOT_CLIP), realtime=False))
    times = [frame.captured_at for frame in frames]
    assert np.diff(times).max() > 0.16
    assert len(frames) == 40 and 11 < len(frames) / (times[-1] - times[0]) < 13
