"""One CancelCopyImage through Alibaba Cloud's classic Python SDK core
(aliyun-python-sdk-core: AcsClient + CommonRequest), with --method GET (all
parameters in the URL) or POST (API parameters in an
application/x-www-form-urlencoded body). See peer_common.py."""

from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.auth.credentials import AccessKeyCredential, StsTokenCredential
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest
import json

import peer_common


def main():
    args = peer_common.parse_args(__doc__, method=["GET", "POST"])
    key_id, secret, token = peer_common.credentials()
    if token:
        credential = StsTokenCredential(key_id, secret, token)
    else:
        credential = AccessKeyCredential(key_id, secret)
    client = AcsClient(
        region_id=args.region_id,
        credential=credential,
        port=args.port,
        connect_timeout=10,
        timeout=30,
        auto_retry=False,
    )
    request = CommonRequest(domain=args.host, version="2014-05-26", action_name="CancelCopyImage")
    request.set_protocol_type("http")
    request.set_method(args.method)
    request.set_accept_format("json")
    if args.method == "POST":
        request.add_body_params("RegionId", args.region_id)
        request.add_body_params("ImageId", args.image_id)
    else:
        request.add_query_param("RegionId", args.region_id)
        request.add_query_param("ImageId", args.image_id)
    try:
        body = client.do_action_with_exception(request)
    except ServerException as e:
        # NB: CommonRequest keeps the string it signed on its inner request;
        # the test compares it with the one the server echoes.
        peer_common.failed(
            e.get_error_code(),
            e.get_error_msg(),
            e.get_http_status(),
            e.get_request_id(),
            sdkStringToSign=request.request.string_to_sign,
        )
        return
    peer_common.succeeded(json.loads(body)["RequestId"])


if __name__ == "__main__":
    main()
