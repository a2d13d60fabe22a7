"""One CancelCopyImage through Alibaba Cloud's generated ECS client
(alibabacloud-ecs20140526 on alibabacloud-tea-openapi), with --signature v3
(the client's DEFAULT: the Config names no signature_algorithm; ACS3-HMAC-SHA256,
POST / with the parameters in the query string and signed x-acs-* headers,
accept and user-agent) or --signature v1 (the RPC V1 signature, SignatureVersion
1.0 with HMAC-SHA1, chosen with signature_algorithm='v2'; POST / with every
parameter in the query string). See peer_common.py."""

from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
from darabonba.runtime import RuntimeOptions

import peer_common


def main():
    args = peer_common.parse_args(__doc__, signature=["v1", "v3"])
    key_id, secret, token = peer_common.credentials()
    # NB: for V3 the SDK's own default is what is tested, so nothing is named.
    signature = {"signature_algorithm": "v2"} if args.signature == "v1" else {}
    config = open_api_models.Config(
        access_key_id=key_id,
        access_key_secret=secret,
        security_token=token,
        region_id=args.region_id,
        endpoint=f"{args.host}:{args.port}",
        protocol="http",
        **signature,
    )
    client = EcsClient(config)
    request = ecs_models.CancelCopyImageRequest(region_id=args.region_id, image_id=args.image_id)
    runtime = RuntimeOptions(autoretry=False, connect_timeout=10000, read_timeout=30000)
    try:
        response = client.cancel_copy_image_with_options(request, runtime)
    except AlibabaCloudException as e:
        data = e.data or {}
        request_id = e.request_id or data.get("RequestId")
        peer_common.failed(
            e.code,
            e.message,
            e.status_code or data.get("statusCode"),
            request_id,
            retryAfterMs=getattr(e, "retry_after", None),
        )
        return
    peer_common.succeeded(response.body.request_id)


if __name__ == "__main__":
    main()
