"""No secret reaches a log line at any level: the message and the traceback are redacted as they are formatted."""
import io
import logging
import subprocess
import sys

from infra.redaction import RedactingFormatter, keep_out_of_logs, redacted, shown
from tests.conftest import REPO

SECRETS = ("hunter2", "s3cr3t-hook-token", "AC0123456789abcdef0123456789abcdef", "eyJhbGciOiJIUzI1NiJ9abc123",
           "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5")


def failing_request():
    raise ConnectionError("POST https://ops:hunter2@hooks.example.net/alert?token=s3cr3t-hook-token failed; "
                          "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9abc123; "
                          "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json; "
                          "stream http://its.example.kr/live/Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5/playlist.m3u8")


def test_a_debug_traceback_of_a_request_error_shows_no_secret():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("tests.redaction")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        failing_request()
    except ConnectionError as exc:
        log.debug("delivery to %s failed: %s", "https://ops:hunter2@hooks.example.net/alert", exc, exc_info=True)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "Traceback" in text and "ConnectionError" in text and "hooks.example.net" in text
    assert not [secret for secret in SECRETS if secret in text]


def test_urls_keep_their_host_and_plain_path():
    assert redacted("GET http://127.0.0.1:9100/metrics ok") == "GET http://127.0.0.1:9100/metrics ok"
    assert redacted("rtsp://cam:pw@10.0.0.5:554/stream1?channel=2") == "rtsp://10.0.0.5:554/stream1?…"


def test_a_camera_password_holding_a_slash_or_an_at_sign_is_masked_where_the_url_cannot_show_where_it_ends():
    for password in ("2024/Spring!cam", "p@ss/word99"):
        keep_out_of_logs(password)  # as the producer does with the values of a source's variables
    assert shown("rtsp://viewer:2024/Spring!cam@10.0.0.5/stream1") == "rtsp://10.0.0.5/stream1"
    assert shown("rtsp://viewer:p@ss/word99@10.0.0.5:554/s?channel=1") == "rtsp://10.0.0.5:554/s?…"
    assert shown("http://cam.example/stream@2x/index.m3u8") == "http://cam.example/stream@2x/index.m3u8"
    keep_out_of_logs("2026")  # too short, and digits alone: it would mask years and counts
    assert redacted("2026-12-06 camera up") == "2026-12-06 camera up"


def test_a_secret_this_process_was_given_is_masked_wherever_it_appears():
    keep_out_of_logs("Winter/2026#cam")
    assert redacted("retrying with Winter/2026#cam and Winter%2F2026%23cam") == "retrying with <secret> and <secret>"
    assert shown("rtsp://10.0.0.5/Winter/2026#cam") == "rtsp://10.0.0.5/<secret>"


def test_a_logged_value_cannot_start_a_log_line_of_its_own():
    record = logging.LogRecord("tests", logging.INFO, __file__, 1, "incident %s marked by %s", ("x", "ann\nERROR forged"
                               "\r\x1b[31m"), None)
    assert RedactingFormatter("%(levelname)s %(message)s").format(record) == (
        "INFO incident x marked by ann\n    ERROR forged\\x0d\\x1b[31m")


def test_every_command_logs_through_the_redacting_formatter():
    script = ("import logging, sys; from cityguard.cli import main; "
              "sys.exit(main(['--log-level', 'DEBUG', 'check-config', '--config', sys.argv[1]]) or "
              "logging.getLogger('probe').debug('webhook https://u:hunter2@h.example/x?token=s3cr3t-hook-token'))")
    done = subprocess.run([sys.executable, "-c", script, str(REPO / "configs" / "demo.yaml")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "webhook https://h.example/x?…" in done.stderr and "hunter2" not in done.stderr


def test_a_url_ending_a_clause_keeps_its_host_and_a_long_line_is_redacted_at_once():
    assert redacted("stream broke: rtsp://10.0.0.5:554: timeout") == "stream broke: rtsp://10.0.0.5:554: timeout"
    assert redacted("see (http://u:p@h.example/a?x=1).") == "see (http://h.example/a?…)."
    assert redacted("a:" * 16_000).startswith("a:a:")  # no backtracking blow-up on a pathological line


def test_the_error_line_a_command_ends_with_shows_no_secret(capsys):
    from cityguard.cli import run_reporting_errors

    def failing():
        raise ConnectionError("POST https://ops:hunter2@hooks.example.net/alert?token=s3cr3t-hook-token failed")

    assert run_reporting_errors(failing, debug=False) == 1
    error = capsys.readouterr().err
    assert "hooks.example.net/alert" in error and "hunter2" not in error and "s3cr3t-hook-token" not in error


def test_libraries_that_log_request_lines_or_keep_their_own_handlers_show_no_secret():
    script = ("import logging, sys; from cityguard.cli import main; main(['--log-level', 'DEBUG', 'check-config', "
              "'--config', sys.argv[1]]); "
              "logging.getLogger('urllib3.connectionpool').debug('\"POST /hook/T0/B0?token=s3cr3t-hook-token\" 200'); "
              "logging.getLogger('ultralytics').addHandler(logging.StreamHandler(sys.stderr)); "
              "logging.getLogger('ultralytics').propagate = False; "
              "logging.getLogger('ultralytics').warning('download https://u:hunter2@h.example/w.pt failed'); "
              "raise RuntimeError('at https://u:hunter2@h.example/x')")
    done = subprocess.run([sys.executable, "-c", script, str(REPO / "configs" / "demo.yaml")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert "download https://h.example/w.pt failed" in done.stderr
    assert "RuntimeError: at https://h.example/x" in done.stderr  # the traceback of an uncaught error
    assert "hunter2" not in done.stderr and "s3cr3t-hook-token" not in done.stderr
