"""Local stand-ins for services that cannot exist offline, speaking their documented wire formats on 127.0.0.1.

FakeTwilio implements the two Programmable Messaging calls (the Message resource) the dispatcher makes:
  POST /2010-04-01/Accounts/{AccountSid}/Messages.json  form fields To, From, Body; HTTP basic auth SID:token
  GET  /2010-04-01/Accounts/{AccountSid}/Messages.json?To=&From=&PageSize=&Page=  newest first, in pages linked
       by next_page_uri (null on the last page)
and rejects anything else the way Twilio does (401 bad credentials, 400 missing parameter, 404 unknown path).
It can also behave as Twilio does at its edges: a listing that shows new messages only after a lag, is answered late
or cannot be read at all (an API key without the right to list), and a trial account's prefix ("Sent from your
Twilio trial account - ") before every body.
Scripted answers can also take the RFC 9457 problem-details format of Twilio's newer APIs (twilio-python raises
TwilioServiceException for it), or be an HTML page or JSON of another shape, as a proxy in the way answers.
FakeWebhook answers POSTs with scripted statuses (and headers: Retry-After, Location) before 200, and GETs with a page,
as a web server at a webhook's address may.
"""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages\.json$")


def respond(handler: BaseHTTPRequestHandler, status: int, content_type: str, raw: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


@dataclass
class Scripted:
    """One response the fake gives instead of creating a message."""

    status: int
    code: int
    message: str
    # "twilio" (the Messaging API's JSON error), "problem" (RFC 9457), "html", or "json": `message` itself as the
    # JSON body, such as one no Twilio answer has (a proxy's, a gateway's)
    style: str = "twilio"
    after_create: bool = False  # the message is created first (a gateway gave up waiting for Twilio's answer)


class LocalServer:
    def __init__(self, handler_class):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self.server.daemon_threads = True
        self.server.fake = self
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    messages: list[dict] = field(default_factory=list)  # created, oldest first
    requests: list[tuple[str, int]] = field(default_factory=list)  # (method, status) of every call
    script: list[Scripted] = field(default_factory=list)  # consumed one per POST before messages are created
    hold_after_create: threading.Event | None = None  # when set: create, then wait on it before answering
    listing_lag_s: float = 0.0  # a created message appears in GET listings only this long after its creation
    listing_error: Scripted | None = None  # every GET is answered with it
    # The next GET's listing is answered, as it stood when the GET arrived, only once this is set; `listed` is set by
    # every GET as it arrives.
    hold_next_listing: threading.Event | None = None
    listed: threading.Event = field(default_factory=threading.Event)
    body_prefix: str = ""  # put before every body, as Twilio does for trial accounts
    created: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> LocalServer:
        return LocalServer(_twilio_handler(self))

    def posts(self) -> int:
        return sum(1 for method, _ in self.requests if method == "POST")

    def sent_to(self, number: str) -> list[dict]:
        return [message for message in self.messages if message["to"] == number]


def _twilio_handler(fake: FakeTwilio):
    class Handler(BaseHTTPRequestHandler):
        def answer(self, status: int, body: dict) -> None:
            with fake.lock:
                fake.requests.append((self.command, status))
            respond(self, status, "application/json", json.dumps(body).encode())

        def error(self, status: int, code: int, message: str) -> None:
            self.answer(status, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                                 "status": status})

        def scripted(self, scripted: Scripted) -> None:
            if scripted.style == "twilio":
                self.error(scripted.status, scripted.code, scripted.message)
                return
            if scripted.style == "problem":
                raw = json.dumps({"type": f"https://www.twilio.com/docs/errors/{scripted.code}",
                                  "title": scripted.message, "status": scripted.status, "code": scripted.code,
                                  "detail": f"{scripted.message} (request {self.path})"}).encode()
                content_type = "application/problem+json"
            elif scripted.style == "json":
                raw, content_type = scripted.message.encode(), "application/json"
            else:
                raw = f"<html><body>{scripted.message}</body></html>".encode()
                content_type = "text/html"
            with fake.lock:
                fake.requests.append((self.command, scripted.status))
            respond(self, scripted.status, content_type, raw)

        def authorised(self, path_sid: str) -> bool:
            expected = "Basic " + base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
            return self.headers.get("Authorization") == expected and path_sid == fake.account_sid

        def route(self) -> str | None:
            match = MESSAGES_PATH.match(urlsplit(self.path).path)
            if match is None:
                self.error(404, 20404, "The requested resource was not found")
                return None
            if not self.authorised(match.group(1)):
                self.error(401, 20003, "Authenticate")
                return None
            return match.group(1)

        def do_POST(self):
            if self.route() is None:
                return
            if not self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                self.error(400, 20001, "Content-Type must be application/x-www-form-urlencoded")
                return
            form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
            for name, code in (("To", 21604), ("From", 21603), ("Body", 21602)):
                if len(form.get(name, [])) != 1 or not form[name][0]:
                    self.error(400, code, f"A '{name}' parameter is required.")
                    return
            with fake.lock:
                scripted = fake.script.pop(0) if fake.script else None
            if scripted is not None and not scripted.after_create:
                self.scripted(scripted)
                return
            with fake.lock:
                message = {"sid": f"SM{len(fake.messages):032x}", "account_sid": fake.account_sid,
                           "to": form["To"][0], "from": form["From"][0], "body": fake.body_prefix + form["Body"][0],
                           "status": "queued", "date_created": formatdate(usegmt=True), "date_sent": None,
                           "direction": "outbound-api", "num_segments": "1", "created_at": time.time()}
                fake.messages.append(message)
            fake.created.set()
            if scripted is not None:
                self.scripted(scripted)
                return
            if fake.hold_after_create is not None:
                fake.hold_after_create.wait(30)  # the client dies meanwhile: Twilio has the message, it has no reply
            self.answer(201, {key: value for key, value in message.items() if key != "created_at"})

        def do_GET(self):
            if self.route() is None:
                return
            if fake.listing_error is not None:
                self.scripted(fake.listing_error)
                return
            query = parse_qs(urlsplit(self.path).query)
            page_size = int(query.get("PageSize", ["50"])[0])
            page = int(query.get("Page", ["0"])[0])
            listed_before = time.time() - fake.listing_lag_s
            with fake.lock:
                found = [message for message in reversed(fake.messages)
                         if message["created_at"] <= listed_before
                         and message["to"] == query.get("To", [message["to"]])[0]
                         and message["from"] == query.get("From", [message["from"]])[0]]
            start = page * page_size
            shown = found[start:start + page_size]
            messages = [{k: v for k, v in m.items() if k != "created_at"} for m in shown]
            filters = "&".join(f"{name}={quote(query[name][0])}" for name in ("To", "From") if name in query)
            path = urlsplit(self.path).path
            next_page = (f"{path}?{filters}&PageSize={page_size}&Page={page + 1}&PageToken=PA{shown[-1]['sid']}"
                         if len(found) > start + page_size else None)
            with fake.lock:
                hold, fake.hold_next_listing = fake.hold_next_listing, None
            fake.listed.set()
            if hold is not None:
                hold.wait(30)
            self.answer(200, {"messages": messages,
                              "page": page, "page_size": page_size, "first_page_uri": self.path,
                              "next_page_uri": next_page, "previous_page_uri": None, "uri": self.path,
                              "start": start, "end": start + max(0, len(shown) - 1)})

        def log_message(self, *args):
            pass

    return Handler


@dataclass
class FakeWebhook:
    """Records JSON POSTs; answers with scripted statuses first, then 200. Records GETs and answers them with a page."""

    received: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    script: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)  # a status, or one with headers
    gets: list[str] = field(default_factory=list)  # paths asked for with GET
    hold_next: threading.Event | None = None  # the next POST is answered only once it is set
    hold_all: threading.Event | None = None  # every POST is answered only once it is set: a receiver that hangs
    keep_alive: bool = False  # HTTP/1.1, the connection kept open for more requests; else HTTP/1.0, closed after one
    arrived: threading.Event = field(default_factory=threading.Event)  # set by every POST
    # Every answer's body: `answer_size` bytes of text, in pieces of `answer_piece` bytes `answer_pause_s` apart (a
    # receiver answering with far more than a page, or trickling it); `answered` is set once it is sent or cut off
    # by the client hanging up, counted in `answers_cut_off`.
    answer_size: int = 0
    answer_piece: int = 65_536
    answer_pause_s: float = 0.0
    answered: threading.Event = field(default_factory=threading.Event)
    answers_cut_off: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> LocalServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            @property
            def protocol_version(self) -> str:
                return "HTTP/1.1" if fake.keep_alive else "HTTP/1.0"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with fake.lock:
                    hold, fake.hold_next = fake.hold_next, None
                fake.arrived.set()
                for held in (hold, fake.hold_all):
                    if held is not None:
                        held.wait(30)
                scripted = fake.script.pop(0) if fake.script else 200
                status, headers = scripted if isinstance(scripted, tuple) else (scripted, {})
                if status == 200:
                    fake.received.append(body)
                    fake.headers.append(dict(self.headers))
                    fake.paths.append(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(fake.answer_size))
                self.end_headers()
                self.send_answer_body()
                fake.answered.set()

            def send_answer_body(self) -> None:
                text = b"overloaded, try later. " * (fake.answer_piece // 23 + 1)
                for start in range(0, fake.answer_size, fake.answer_piece):
                    try:
                        self.wfile.write(text[:min(fake.answer_piece, fake.answer_size - start)])
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        with fake.lock:
                            fake.answers_cut_off += 1
                        return
                    time.sleep(fake.answer_pause_s)

            def do_GET(self):
                fake.gets.append(self.path)
                respond(self, 200, "text/html", b"<html><body>incident desk</body></html>")

            def log_message(self, *args):
                pass

        return LocalServer(Handler)


@dataclass
class FakeGrafana:
    """The Grafana HTTP API calls `cityguard grafana provision` makes: GET/POST /api/datasources[/uid/{uid}],
    POST /api/dashboards/db; Bearer token auth."""

    token: str
    datasources: dict[str, dict] = field(default_factory=dict)
    dashboards: dict[str, dict] = field(default_factory=dict)

    def serve(self) -> LocalServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self, status: int, body: dict) -> None:
                respond(self, status, "application/json", json.dumps(body).encode())

            def authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self.answer(401, {"message": "Unauthorized"})
                    return False
                return True

            def do_GET(self):
                if not self.authorised():
                    return
                match = re.match(r"^/api/datasources/uid/([\w-]+)$", self.path)
                if match and match.group(1) in fake.datasources:
                    self.answer(200, fake.datasources[match.group(1)])
                else:
                    self.answer(404, {"message": "Data source not found"})

            def do_POST(self):
                if not self.authorised():
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path == "/api/datasources":
                    fake.datasources[body["uid"]] = body
                    self.answer(200, {"message": "Datasource added", "id": len(fake.datasources)})
                elif self.path == "/api/dashboards/db":
                    dashboard = body["dashboard"]
                    if "uid" not in dashboard or "panels" not in dashboard or not body.get("overwrite"):
                        self.answer(400, {"message": "bad dashboard"})
                        return
                    fake.dashboards[dashboard["uid"]] = dashboard
                    self.answer(200, {"status": "success", "uid": dashboard["uid"], "version": 1,
                                      "url": f"/d/{dashboard['uid']}"})
                else:
                    self.answer(404, {"message": "Not found"})

            def log_message(self, *args):
                pass

        return LocalServer(Handler)
