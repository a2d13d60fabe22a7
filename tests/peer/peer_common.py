"""Shared by the peer scripts: command line, credentials, and the one-line JSON result.

Each peer script sends ONE CancelCopyImage with an official Alibaba Cloud SDK and
prints one JSON line on stdout, success or service error alike:
  {"ok": true,  "requestId": "..."}
  {"ok": false, "code": "...", "message": "...", "httpStatus": 400, "requestId": "..."}
It exits 0 when it printed a result, non-zero on anything unexpected (a bug in the
script, an import error). tests/python_peer.rs decides what is right.
Credentials come from the same variables the operator reads:
ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET, optional
ALIBABA_CLOUD_SECURITY_TOKEN.
"""

import argparse
import json
import os
import sys
from urllib.parse import urlsplit


def parse_args(description, **choices):
    """--endpoint, --region-id, --image-id, and one required --NAME per keyword
    NAME=[allowed values] (method=["GET", "POST"] adds --method)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--endpoint", required=True, help="http://127.0.0.1:PORT of the simulator")
    parser.add_argument("--region-id", required=True)
    parser.add_argument("--image-id", required=True)
    for name, allowed in choices.items():
        parser.add_argument(f"--{name}", choices=allowed, required=True)
    args = parser.parse_args()
    url = urlsplit(args.endpoint)
    if url.scheme != "http" or not url.hostname or not url.port:
        parser.error("--endpoint must look like http://127.0.0.1:PORT")
    args.host, args.port = url.hostname, url.port
    return args


def credentials():
    try:
        key_id = os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"]
        secret = os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
    except KeyError as missing:
        sys.exit(f"set {missing.args[0]}")
    token = os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None
    return key_id, secret, token


def succeeded(request_id):
    print(json.dumps({"ok": True, "requestId": request_id}), flush=True)


def failed(code, message, http_status, request_id, **extra):
    result = {"ok": False, "code": code, "message": message, "httpStatus": http_status, "requestId": request_id}
    result.update(extra)
    print(json.dumps(result), flush=True)
