"""A STAND-IN for the Flipt binary on the local node, because Flipt cannot be built here.

The node runs it where a pod asks for Flipt's image. It is not Flipt and pretends nothing about
flags, storage or schema: it refuses to start unless the config file the operator rendered is
given (`--config`), exists and parses as a YAML mapping, and then only answers Flipt's HTTP health
endpoint (`/health`, what the operator's probes ask) on the configured `server.host` and
`server.http_port`. `flipt migrate` (and any other subcommand) fails: a migration's result must
come from the real binary, never from this.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

DEFAULT_HTTP_PORT = 8080
HEALTH_PATHS = ("/health",)


class StandInError(Exception):
    pass


def load_config(path: str | None) -> dict:
    if not path:
        raise StandInError("no --config given (the operator always renders one)")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise StandInError(f"cannot read the config file {path}: {exc.strerror}") from exc
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StandInError(f"the config file {path} is not YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise StandInError(f"the config file {path} is not a mapping")
    return config


class _Health(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?")[0] in HEALTH_PATHS:
            body, status = json.dumps({"status": "SERVING", "standIn": True}).encode(), 200
        else:
            body, status = b'{"error": "the Flipt stand-in serves only /health"}', 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flipt (stand-in)")
    parser.add_argument("subcommand", nargs="?", default=None)
    parser.add_argument("--config", default=None)
    args, _unknown = parser.parse_known_args(argv)
    if args.subcommand not in (None, "server"):
        print(f"flipt stand-in: `flipt {args.subcommand}` needs the real Flipt binary, which is not "
              "available on the local node", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except StandInError as exc:
        print(f"flipt stand-in: {exc}", file=sys.stderr)
        return 1
    server = config.get("server") or {}
    host = str(server.get("host") or "0.0.0.0")
    port = int(server.get("http_port") or DEFAULT_HTTP_PORT)
    httpd = ThreadingHTTPServer((host, port), _Health)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"flipt stand-in (not Flipt): config {args.config} parsed; serving /health on {host}:{port}",
          file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
