"""The ITS client against a local fake of the API: documented shapes, odd shapes, errors, and the key never shown."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from producers.its_client import (
    BoundingBox,
    ItsAuthError,
    ItsCameraGone,
    ItsClient,
    ItsRequestError,
    ItsResolver,
    ItsUnavailable,
    parse_xml,
    stable_camera_id,
)
from schemas.settings.capture import ItsCameraRef, ProducerConfig
from schemas.settings.config import ConfigError
from tests.producers.fake_its import FakeItsApi, record

KEY = "s3cr3t-key/+="  # characters that URL-encoding changes, so masking must cover the encoded form too
SEOUL = BoundingBox(126.76, 37.41, 127.18, 37.70)
CAMERAS = [record("[경부선] 금토분기점2", 127.086135, 37.414184, "http://cctv.example/270/tokenA"),
           record("[경부선] 양재", 127.0381, 37.4705, "http://cctv.example/271/tokenB"),
           record("부산 해운대", 129.1188, 35.1587, "http://cctv.example/9/tokenC")]


@pytest.fixture
def api():
    fake = FakeItsApi(KEY, cameras=lambda: CAMERAS).start()
    yield fake
    fake.stop()


def client_for(api: FakeItsApi, key: str = KEY, timeout_s: float = 5.0) -> ItsClient:
    return ItsClient(api.url, key, timeout_s)


def test_lists_the_cameras_in_the_box_with_the_documented_parameters(api):
    cameras = client_for(api).cctv_info(SEOUL, "ex", 1)
    assert [camera.name for camera in cameras] == ["[경부선] 금토분기점2", "[경부선] 양재"]
    assert cameras[0].lon == pytest.approx(127.086135) and cameras[0].lat == pytest.approx(37.414184)
    assert cameras[0].url.endswith("tokenA") and cameras[0].cctv_type == 1
    query = api.requests[-1]
    assert query["apiKey"] == KEY and query["type"] == "ex" and query["cctvType"] == "1"
    assert (float(query["minX"]), float(query["maxY"])) == (126.76, 37.70) and query["getType"] == "json"


@pytest.mark.parametrize("shape, expected", [("single", 1), ("empty", 0), ("missing", 0)])
def test_odd_shapes(shape, expected):
    api = FakeItsApi(KEY, cameras=lambda: CAMERAS[:1], shape=shape).start()
    try:
        assert len(client_for(api).cctv_info(SEOUL)) == expected
    finally:
        api.stop()


def test_numbers_as_strings_and_xml_give_the_same_cameras(api):
    plain = client_for(api).cctv_info(SEOUL)
    api.numbers_as_strings = True
    assert client_for(api).cctv_info(SEOUL) == plain
    assert client_for(api).cctv_info(SEOUL, get_type="xml") == plain


def test_a_recorded_clip_is_listed_with_the_time_it_was_made_in_json_and_xml():
    clips = [record("CAM MP4", 127.0, 37.5, "http://cctv.example/mp4/tokenD", cctv_type=2,
                    file_created="20261207090000"),
             record("CAM HLS", 127.1, 37.5, "http://cctv.example/270/tokenA")]
    api = FakeItsApi(KEY, cameras=lambda: clips).start()
    try:
        for get_type in ("json", "xml"):
            cameras = client_for(api).cctv_info(SEOUL, "ex", 2, get_type)
            assert [(camera.cctv_type, camera.file_created) for camera in cameras] == [(2, "20261207090000"), (1, None)]
    finally:
        api.stop()


@pytest.mark.parametrize("encoding", ["euc-kr", "cp949", "iso-8859-1"])
def test_xml_in_a_legacy_encoding_it_declares_gives_the_same_cameras(api, encoding):
    plain = client_for(api).cctv_info(SEOUL)
    api.xml_encoding = encoding  # Korean servers' legacy encodings, which the XML parser itself does not read
    assert client_for(api).cctv_info(SEOUL, get_type="xml") == plain


def test_xml_that_its_declared_encoding_cannot_read_is_unavailable_naming_it():
    body = b'<?xml version="1.0" encoding="EUC-KR"?><response><data><cctvname>\xff\xfe</cctvname></data></response>'
    with pytest.raises(ItsUnavailable, match="not in the EUC-KR it declares"):
        parse_xml(body)
    with pytest.raises(ItsUnavailable, match="declares an encoding unknown here: no-such-codec"):
        parse_xml('<?xml version="1.0" encoding="no-such-codec"?><response/>'.encode())


def test_a_rejected_key_is_an_auth_error_without_the_key(api, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ItsAuthError, match="HTTP 401") as error:
        client_for(api, key=KEY + "wrong").cctv_info(SEOUL)
    assert "wrong" not in str(error.value) and KEY not in caplog.text


def test_server_error_and_slow_answer_are_unavailable(api):
    api.fail_status = 500
    with pytest.raises(ItsUnavailable, match="HTTP 500"):
        client_for(api).cctv_info(SEOUL)
    api.fail_status, api.delay_s = None, 2.0
    started = time.monotonic()
    with pytest.raises(ItsUnavailable, match="not complete within 0.3 s") as error:
        client_for(api, timeout_s=0.3).cctv_info(SEOUL)
    assert time.monotonic() - started < 1.5
    assert KEY not in str(error.value) and error.value.__cause__ is None  # nothing chained could print the URL


def test_an_api_url_that_does_not_parse_is_unavailable_without_the_key():
    ref = ItsCameraRef(name="[경부선] 양재", lon=127.0381, lat=37.4705, road_type="ex")
    resolver = ItsResolver(ItsClient("http://[openapi.its.go.kr]:9443/cctvInfo", KEY), [ref], refresh_min_s=10)
    with pytest.raises(ItsUnavailable, match="not a valid URL") as error:
        resolver.resolve(ref)
    assert KEY not in str(error.value)


def test_bad_parameters_fail_before_sending(api):
    with pytest.raises(ItsRequestError, match="MINX"):
        BoundingBox.parse("127.2,37.4,126.7,37.7")
    with pytest.raises(ItsRequestError, match="four numbers"):
        BoundingBox.parse("127,37")
    with pytest.raises(ItsRequestError, match="road type"):
        client_for(api).cctv_info(SEOUL, road_type="highway")
    assert api.requests == []


def test_key_comes_from_the_named_environment_variable(api, monkeypatch):
    settings = ProducerConfig(its_api_url=api.url, its_api_key_env="CITYGUARD_TEST_ITS_KEY")
    monkeypatch.delenv("CITYGUARD_TEST_ITS_KEY", raising=False)
    with pytest.raises(ItsAuthError, match="CITYGUARD_TEST_ITS_KEY"):
        ItsClient.from_config(settings)
    monkeypatch.setenv("CITYGUARD_TEST_ITS_KEY", "bad\x07key")
    with pytest.raises(ConfigError, match="CITYGUARD_TEST_ITS_KEY holds a control character"):
        ItsClient.from_config(settings)
    monkeypatch.setenv("CITYGUARD_TEST_ITS_KEY", f"{KEY}\n")  # as `echo` leaves it in a file
    client = ItsClient.from_config(settings)
    assert len(client.cctv_info(SEOUL)) == 2
    assert client.mask(f"GET {api.url}?apiKey=s3cr3t-key%2F%2B%3D") == f"GET {api.url}?apiKey=***"


def test_stable_ids_depend_on_name_and_place_only():
    first = stable_camera_id("[경부선] 양재", 127.0381, 37.4705)
    assert first == stable_camera_id(" [경부선] 양재 ", 127.038100001, 37.4705)
    assert first != stable_camera_id("[경부선] 양재", 127.0391, 37.4705)
    assert first != stable_camera_id("[경부선] 양재2", 127.0381, 37.4705)


def test_resolver_shares_one_listing_and_refetches_for_a_failed_url():
    tokens = {"n": 0}

    def cameras():
        tokens["n"] += 1
        return [record(name, lon, lat, f"http://cctv.example/{index}/token{tokens['n']}")
                for index, (name, lon, lat) in enumerate([("A", 127.0, 37.5), ("B", 127.1, 37.6)])]

    api = FakeItsApi(KEY, cameras=cameras).start()
    try:
        refs = [ItsCameraRef(name=name, lon=lon, lat=lat, road_type="ex") for name, lon, lat in
                [("A", 127.0, 37.5), ("B", 127.1, 37.6)]]
        resolver = ItsResolver(client_for(api), refs, refresh_min_s=60)
        url_a = resolver.resolve(refs[0]).url
        assert resolver.resolve(refs[1]).url.endswith("token1") and len(api.requests) == 1
        assert resolver.resolve(refs[0], failed_url=url_a).url.endswith("token2") and len(api.requests) == 2
        with pytest.raises(ItsCameraGone):
            resolver.resolve(ItsCameraRef(name="A", lon=127.01, lat=37.5, road_type="ex"))
    finally:
        api.stop()


def test_cameras_failing_together_on_urls_the_api_still_lists_cost_one_call():
    records = [record(f"CAM {index}", 127.0 + index / 100, 37.5, f"http://cctv.example/{index}/token")
               for index in range(3)]
    api = FakeItsApi(KEY, cameras=lambda: records).start()
    try:
        refs = [ItsCameraRef(name=f"CAM {index}", lon=127.0 + index / 100, lat=37.5, road_type="ex")
                for index in range(3)]
        resolver = ItsResolver(client_for(api), refs, refresh_min_s=60)
        urls = [camera["cctvurl"] for camera in records]
        # Every stream broke at once (a network blip) on its configured URL, which the API still lists.
        assert [resolver.resolve(ref, failed_url=url).url for ref, url in zip(refs, urls, strict=True)] == urls
        assert len(api.requests) == 1
        # The URL handed out fails again: the listing is no newer than it, so the API is asked again.
        assert resolver.resolve(refs[0], failed_url=urls[0]).url == urls[0] and len(api.requests) == 2
    finally:
        api.stop()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cameras_asking_while_the_api_hangs_share_its_one_call():
    api = FakeItsApi(KEY, cameras=lambda: CAMERAS, delay_s=3.0).start()
    try:
        refs = [ItsCameraRef(name=f"CAM {index}", lon=127.0 + index / 100, lat=37.5, road_type="ex")
                for index in range(4)]
        resolver = ItsResolver(client_for(api, timeout_s=0.5), refs, refresh_min_s=60)
        together = threading.Barrier(len(refs))
        failures = []

        def reconnect(ref: ItsCameraRef) -> None:
            together.wait()
            try:
                resolver.resolve(ref)
            except ItsUnavailable as exc:
                failures.append(exc)

        threads = [threading.Thread(target=reconnect, args=(ref,)) for ref in refs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(failures) == len(refs) and len(api.requests) == 1
    finally:
        api.stop()


def test_a_failed_call_is_remembered_until_the_next_refresh():
    api = FakeItsApi(KEY, cameras=lambda: CAMERAS, fail_status=500).start()
    try:
        refs = [ItsCameraRef(name="[경부선] 금토분기점2", lon=127.086135, lat=37.414184, road_type="ex"),
                ItsCameraRef(name="[경부선] 양재", lon=127.0381, lat=37.4705, road_type="ex")]
        clock = FakeClock()
        resolver = ItsResolver(client_for(api), refs, refresh_min_s=10, clock=clock)
        for ref in refs:
            with pytest.raises(ItsUnavailable, match="HTTP 500"):
                resolver.resolve(ref)
        assert len(api.requests) == 1
        api.fail_status, clock.now = None, clock.now + 10
        assert resolver.resolve(refs[1]).url.endswith("tokenB") and len(api.requests) == 2
    finally:
        api.stop()


@pytest.mark.parametrize("body", [b'{"response": {"datacount": ' + b"9" * 5000 + b"}}",
                                  b'{"response": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
                         ids=["a number too long", "nesting too deep"])
def test_an_answer_json_cannot_parse_is_unavailable_and_remembered(body):
    api = FakeItsApi(KEY, cameras=lambda: CAMERAS, body=body).start()
    try:
        refs = [ItsCameraRef(name="[경부선] 금토분기점2", lon=127.086135, lat=37.414184, road_type="ex"),
                ItsCameraRef(name="[경부선] 양재", lon=127.0381, lat=37.4705, road_type="ex")]
        resolver = ItsResolver(client_for(api), refs, refresh_min_s=10, clock=FakeClock())
        for ref in refs:
            with pytest.raises(ItsUnavailable, match="not JSON"):
                resolver.resolve(ref)
        assert len(api.requests) == 1
    finally:
        api.stop()


def test_a_camera_the_api_no_longer_lists_waits_for_the_next_refresh():
    api = FakeItsApi(KEY, cameras=lambda: CAMERAS).start()
    try:
        renamed = ItsCameraRef(name="[경부선] 옛 이름", lon=127.0381, lat=37.4705, road_type="ex")
        clock = FakeClock()
        resolver = ItsResolver(client_for(api), [renamed], refresh_min_s=10, clock=clock)
        for _ in range(3):
            with pytest.raises(ItsCameraGone, match="no longer lists"):
                resolver.resolve(renamed, failed_url="http://cctv.example/271/old")
        assert len(api.requests) == 1
        clock.now += 10
        with pytest.raises(ItsCameraGone):
            resolver.resolve(renamed, failed_url="http://cctv.example/271/old")
        assert len(api.requests) == 2
    finally:
        api.stop()
