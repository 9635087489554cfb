"""A stand-in for the ITS national CCTV API on 127.0.0.1, speaking its documented wire format,
including the odd shapes public clients have seen."""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.etree import ElementTree

REQUIRED = ("apiKey", "type", "cctvType", "minX", "maxX", "minY", "maxY", "getType")


@dataclass
class FakeItsApi:
    api_key: str
    cameras: Callable[[], list[dict]] = list  # records as the API lists them, asked anew per request
    shape: str = "list"  # list | single (one object, not a list) | empty (data: []) | missing (no data)
    numbers_as_strings: bool = False
    fail_status: int | None = None
    delay_s: float = 0.0
    body: bytes | None = None  # answered as it is, as JSON, instead of the listing
    xml_encoding: str = "utf-8"  # what an XML answer is written in, and declares
    requests: list[dict] = field(default_factory=list)

    def start(self) -> FakeItsApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parsed = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parsed.query))
                api.requests.append(query)
                if api.delay_s:
                    time.sleep(api.delay_s)
                if parsed.path != "/cctvInfo":
                    return self.reply(404, b"not found", "text/plain")
                if query.get("apiKey") != api.api_key:
                    return self.reply(401, b'{"message": "invalid apiKey"}', "application/json")
                if api.fail_status:
                    return self.reply(api.fail_status, b"internal error", "text/plain")
                missing = [name for name in REQUIRED if name not in query]
                if missing or query["type"] not in ("ex", "its", "all"):
                    return self.reply(400, f"bad parameters: {missing or query['type']}".encode(), "text/plain")
                records = [record for record in api.cameras() if in_box(record, query)]
                if api.numbers_as_strings:
                    records = [{key: str(value) for key, value in record.items()} for record in records]
                if api.body is not None:
                    return self.reply(200, api.body, "application/json")
                if query["getType"] == "xml":
                    return self.reply(200, xml_body(records, api.xml_encoding), "application/xml")
                return self.reply(200, json.dumps(json_body(records, api.shape)).encode(), "application/json")

            def reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="fake-its-api", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/cctvInfo"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def in_box(record: dict, query: dict) -> bool:
    lon, lat = float(record["coordx"]), float(record["coordy"])
    return float(query["minX"]) <= lon <= float(query["maxX"]) and float(query["minY"]) <= lat <= float(query["maxY"])


def json_body(records: list[dict], shape: str) -> dict:
    response = {"coordtype": 1, "datacount": len(records)}
    if shape == "single" and len(records) == 1:
        response["data"] = records[0]
    elif shape == "empty":
        response["data"] = []
    elif shape != "missing":
        response["data"] = records
    return {"response": response}


def xml_body(records: list[dict], encoding: str = "utf-8") -> bytes:
    root = ElementTree.Element("response")
    ElementTree.SubElement(root, "coordtype").text = "1"
    ElementTree.SubElement(root, "datacount").text = str(len(records))
    for record in records:
        data = ElementTree.SubElement(root, "data")
        for key, value in record.items():
            ElementTree.SubElement(data, key).text = str(value)
    return ElementTree.tostring(root, encoding=encoding, xml_declaration=True)


def record(name: str, lon: float, lat: float, url: str, cctv_type: int = 1, file_created: str = "") -> dict:
    return {"roadsectionid": "", "coordx": lon, "coordy": lat, "cctvresolution": "", "filecreatetime": file_created,
            "cctvtype": cctv_type, "cctvformat": "MP4" if cctv_type == 2 else "HLS", "cctvname": name,
            "cctvurl": url}
