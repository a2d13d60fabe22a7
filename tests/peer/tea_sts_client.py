"""One STS AssumeRole through Alibaba Cloud's generated STS client
(alibabacloud-sts20150401 on alibabacloud-tea-openapi) with the RPC V1 signature
(SignatureVersion 1.0, HMAC-SHA1, chosen with signature_algorithm='v2'), as the
operator signs it: the peer client of the STS simulator's AssumeRole.

Prints one JSON line on stdout: on success
  {"ok": true, "requestId": "...", "accessKeyId": "...", "expiration": "...",
   "assumedRoleArn": "...", "hasSecret": true, "hasToken": true}
(never the minted secret or token), or a service error as peer_common.failed.
Credentials of the caller come from the ALIBABA_CLOUD_* variables
(see peer_common.py)."""

import argparse
import json
from urllib.parse import urlsplit

from alibabacloud_sts20150401 import models as sts_models
from alibabacloud_sts20150401.client import Client as StsClient
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
from darabonba.runtime import RuntimeOptions

import peer_common


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True, help="http://127.0.0.1:PORT of the STS simulator")
    parser.add_argument("--role-arn", required=True)
    parser.add_argument("--session-name", required=True)
    parser.add_argument("--duration-seconds", type=int, default=900)
    parser.add_argument("--external-id")
    parser.add_argument("--policy")
    args = parser.parse_args()
    url = urlsplit(args.endpoint)
    if url.scheme != "http" or not url.hostname or not url.port:
        parser.error("--endpoint must look like http://127.0.0.1:PORT")
    key_id, secret, token = peer_common.credentials()
    config = open_api_models.Config(
        access_key_id=key_id,
        access_key_secret=secret,
        security_token=token,
        endpoint=f"{url.hostname}:{url.port}",
        protocol="http",
        signature_algorithm="v2",
    )
    client = StsClient(config)
    request = sts_models.AssumeRoleRequest(
        role_arn=args.role_arn,
        role_session_name=args.session_name,
        duration_seconds=args.duration_seconds,
        external_id=args.external_id,
        policy=args.policy,
    )
    runtime = RuntimeOptions(autoretry=False, connect_timeout=10000, read_timeout=30000)
    try:
        response = client.assume_role_with_options(request, runtime)
    except AlibabaCloudException as e:
        data = e.data or {}
        peer_common.failed(e.code, e.message, e.status_code or data.get("statusCode"), e.request_id or data.get("RequestId"))
        return
    body = response.body
    c = body.credentials
    print(json.dumps({
        "ok": True,
        "requestId": body.request_id,
        "accessKeyId": c.access_key_id,
        "expiration": c.expiration,
        "assumedRoleArn": body.assumed_role_user.arn,
        "hasSecret": bool(c.access_key_secret),
        "hasToken": bool(c.security_token),
    }), flush=True)


if __name__ == "__main__":
    main()
