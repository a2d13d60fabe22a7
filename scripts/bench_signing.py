#!/usr/bin/env python3
"""Times the official Alibaba Cloud Python SDK signers on the request that
benches/signing.rs signs, reads criterion's results for the Rust side, and
prints both with the ratios. Called by scripts/bench-signing.

The request is the `sts-security-token-post` vector of
testdata/signature-v1.json; every signer timed here must reproduce its
signature first, so the comparison is between equal pieces of work.
"""

import argparse
import json
import sys
import timeit
from pathlib import Path

VECTOR = "sts-security-token-post"
RUST_SIGN = "sign_cancel_copy_image"
RUST_HMAC = "bare_hmac_sha1"
TARGET_VS_PYTHON = 25.0  # Rust at least this many times faster than the fastest SDK signer
TARGET_VS_HMAC = 3.0  # Rust within this factor of a bare HMAC-SHA1


def load_vector(root: Path) -> dict:
    vectors = json.loads((root / "testdata" / "signature-v1.json").read_text())
    return next(v for v in vectors if v["name"] == VECTOR)


def python_signers(vector: dict):
    """(name, callable) pairs; each callable builds the parameter set from the
    same inputs as the Rust bench and returns the signature."""
    from aliyunsdkcore.auth.composer import rpc_signature_composer as composer
    from alibabacloud_tea_openapi.utils import Utils

    inputs = vector["inputs"]
    p = inputs["params"]
    secret = inputs["access_key_secret"]
    ak, token = inputs["access_key_id"], p["SecurityToken"]
    region, image, nonce, ts = p["RegionId"], p["ImageId"], p["SignatureNonce"], p["Timestamp"]
    method = inputs["method"]

    # Module-level helpers of rpc_signature_composer (aliyun-python-sdk-core):
    # the string to sign and the HMAC, exactly what AcsClient runs per request.
    compose = getattr(composer, "__compose_string_to_sign")
    get_signature = getattr(composer, "__get_signature")

    def params():
        return {
            "Action": "CancelCopyImage",
            "Version": "2014-05-26",
            "Format": "JSON",
            "AccessKeyId": ak,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": nonce,
            "Timestamp": ts,
            "RegionId": region,
            "ImageId": image,
            "SecurityToken": token,
        }

    def core_compose_and_sign():
        return get_signature(compose(method, params()), secret)

    def tea_get_rpcsignature():
        return Utils.get_rpcsignature(params(), method, secret)

    def core_get_signed_url():
        # The whole aliyunsdkcore path: it stamps a fresh nonce and timestamp
        # and builds the URL, so its signature differs on every call.
        url, _ = composer.get_signed_url(params(), ak, secret, "JSON", method, {})
        return url

    return [
        ("aliyunsdkcore rpc_signature_composer (compose + sign)", core_compose_and_sign, True),
        ("alibabacloud_tea_openapi Utils.get_rpcsignature", tea_get_rpcsignature, True),
        ("aliyunsdkcore rpc_signature_composer.get_signed_url", core_get_signed_url, False),
    ]


def time_per_call(fn, repeat: int) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(number, 1000)
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e9


def criterion_ns(criterion_dir: Path, name: str) -> tuple:
    """(best sample, median) in ns per iteration. The best sample is the same
    statistic as timeit's min-of-repeats on the Python side, and the one
    least disturbed by other load on the machine."""
    bench = criterion_dir / name / "new"
    if not (bench / "sample.json").is_file():
        sys.exit(f"bench-signing: {bench}/sample.json not found: run `cargo bench --bench signing` first")
    sample = json.loads((bench / "sample.json").read_text())
    best = min(t / i for t, i in zip(sample["times"], sample["iters"]))
    median = json.loads((bench / "estimates.json").read_text())["median"]["point_estimate"]
    return best, median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--criterion-dir", type=Path)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    criterion_dir = args.criterion_dir or args.root / "target" / "criterion"

    vector = load_vector(args.root)
    expected = vector["expected"]["signature"]
    rows = []
    for name, fn, comparable in python_signers(vector):
        if comparable:
            got = fn()
            if got != expected:
                sys.exit(f"bench-signing: {name} signed {got!r}, the vector says {expected!r}")
        rows.append((f"python  {name}", time_per_call(fn, args.repeat), comparable))

    rust_sign, rust_sign_median = criterion_ns(criterion_dir, RUST_SIGN)
    rust_hmac, rust_hmac_median = criterion_ns(criterion_dir, RUST_HMAC)
    rows = [
        (f"rust    {RUST_SIGN}", rust_sign, True, f"  (criterion median {rust_sign_median:.0f} ns)"),
        (f"rust    {RUST_HMAC} (baseline)", rust_hmac, True, f"  (criterion median {rust_hmac_median:.0f} ns)"),
    ] + [(name, ns, comparable, "" if comparable else "  (adds nonce/timestamp/URL; not compared)")
         for name, ns, comparable in rows]

    width = max(len(r[0]) for r in rows)
    print(f"\nSigning one CancelCopyImage request with an STS token (vector {VECTOR}),")
    print("best of repeated runs (timeit min-of-repeats; criterion's fastest sample):")
    for name, ns, _, note in rows:
        print(f"  {name:<{width}}  {ns:>10.0f} ns{note}")

    fastest = min((r for r in rows if r[0].startswith("python") and r[2]), key=lambda r: r[1])
    vs_python = fastest[1] / rust_sign
    vs_hmac = rust_sign / rust_hmac
    ok_python = vs_python >= TARGET_VS_PYTHON
    ok_hmac = vs_hmac <= TARGET_VS_HMAC
    print(f"\n  Rust vs fastest Python ({fastest[0].split('  ', 1)[1]}): {vs_python:.1f}x faster"
          f"  (target >= {TARGET_VS_PYTHON:.0f}x: {'met' if ok_python else 'MISSED'})")
    print(f"  Rust vs bare HMAC-SHA1: {vs_hmac:.2f}x the cost"
          f"  (target <= {TARGET_VS_HMAC:.0f}x: {'met' if ok_hmac else 'MISSED'})")
    print(f"  (medians: {rust_sign_median / rust_hmac_median:.2f}x bare HMAC)")
    if args.check and not (ok_python and ok_hmac):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
