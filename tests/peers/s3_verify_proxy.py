"""A SigV4-verifying front for s3rver.

s3rver accepts any SigV4 signature, so this proxy does what S3 does
before it: for every request it recomputes the signature with botocore
(from the known secret of the request's access key, the request's
x-amz-date and the headers named in SignedHeaders), checks the body
against x-amz-content-sha256, Content-MD5 and x-amz-checksum-sha256, and
answers with S3's XML errors (403 SignatureDoesNotMatch,
403 InvalidAccessKeyId, 400 BadDigest, ...). A request that passes is
forwarded to s3rver without its Authorization header and the answer is
relayed. Every request is logged in `log` for the tests to read.

The canonical URI is built the way S3 builds it: the path is decoded and
encoded once more (RFC 3986 unreserved characters and '/' kept), so a
client that signs "dt=2024" but sends it unencoded fails here as it would
on S3.

Run alone: s3_verify_proxy.py --upstream-port P --access-key K --secret S
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import http.client
import http.server
import re
import sys
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

UNSIGNED = ("UNSIGNED-PAYLOAD", "STREAMING-")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "te",
              "trailer", "upgrade", "proxy-connection"}
AUTH_RE = re.compile(r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*"
                     r"SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]+)\s*$")
MAX_SKEW = datetime.timedelta(minutes=15)


@dataclass
class Entry:
    """One request as the proxy judged it."""
    method: str
    path: str
    verdict: str                # "verified" or "rejected"
    status: int                 # what the client got
    code: str = ""              # the S3 error code when rejected
    access_key: str = ""
    detail: str = ""            # the canonical request on a mismatch
    body_len: int = 0
    at: float = 0.0             # time.time() when the request came in


class S3Error(Exception):
    def __init__(self, status, code, message, detail=""):
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail


class _SignedHeadersAuth(S3SigV4Auth):
    """botocore's S3 SigV4 signer, signing exactly the headers the client
    named (botocore would otherwise pick its own set)."""

    def __init__(self, credentials, region, signed, incoming):
        super().__init__(credentials, "s3", region)
        self._signed = signed
        self._incoming = incoming

    def headers_to_sign(self, request):
        headers = HTTPHeaders()
        for name in self._signed:
            values = self._incoming.get_all(name) or []
            if not values:
                raise S3Error(403, "SignatureDoesNotMatch",
                              f"signed header {name!r} is missing from the request")
            for v in values:
                headers[name] = v
        return headers


def canonical_path(raw_path):
    """S3's CanonicalURI: each byte outside the unreserved set, '/' aside,
    percent-encoded once, whatever the client put on the wire."""
    return quote(unquote(raw_path), safe="/~")


def expected_signature(method, raw_target, incoming, body, access_key, secret,
                       region, amz_date, signed):
    """(signature, canonical request) botocore computes for the request."""
    path, _, query = raw_target.partition("?")
    host = incoming.get("host", "")
    url = f"http://{host}{canonical_path(path)}" + (f"?{query}" if query else "")
    headers = {}
    sha = incoming.get("x-amz-content-sha256")
    if sha is not None and "x-amz-content-sha256" in signed:
        headers["X-Amz-Content-SHA256"] = sha
    req = AWSRequest(method=method, url=url, headers=headers, data=body)
    req.context["timestamp"] = amz_date
    auth = _SignedHeadersAuth(Credentials(access_key, secret), region, signed, incoming)
    canonical = auth.canonical_request(req)
    string_to_sign = auth.string_to_sign(req, canonical)
    return auth.signature(string_to_sign, req), canonical


class S3VerifyProxy:
    """The proxy, on 127.0.0.1:`port` (free when 0), in front of s3rver on
    `upstream_port`. `credentials` maps access key ids to secrets."""

    def __init__(self, upstream_port, credentials, region="us-east-1", port=0,
                 upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.credentials = dict(credentials)
        self.region = region
        self.port = port
        self.delay = 0.0        # seconds each forwarded request is held
        self.log = []
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    # ---------------------------------------------------------------- control

    def start(self):
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="s3-verify-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def entries(self, verdict=None, method=None):
        with self._lock:
            return [e for e in self.log
                    if (verdict is None or e.verdict == verdict) and
                    (method is None or e.method == method)]

    def record(self, entry):
        with self._lock:
            self.log.append(entry)

    # ---------------------------------------------------------------- checks

    def verify(self, method, target, headers, body):
        """Raise S3Error unless the request is signed by a known key and its
        body is the one that was signed; return the access key."""
        auth = headers.get("authorization")
        if not auth:
            raise S3Error(403, "AccessDenied", "Anonymous requests are not accepted")
        m = AUTH_RE.match(auth)
        if not m:
            raise S3Error(400, "AuthorizationHeaderMalformed",
                          f"The authorization header is malformed: {auth[:80]}")
        credential, signed_list, signature = m.groups()
        scope = credential.split("/")
        if len(scope) != 5 or scope[3:] != ["s3", "aws4_request"]:
            raise S3Error(400, "AuthorizationHeaderMalformed",
                          f"bad credential scope {credential!r}")
        access_key, day, region = scope[:3]
        secret = self.credentials.get(access_key)
        if secret is None:
            raise S3Error(403, "InvalidAccessKeyId",
                          "The AWS Access Key Id you provided does not exist in our records.")
        if region != self.region:
            raise S3Error(400, "AuthorizationHeaderMalformed",
                          f"the region '{region}' is wrong; expecting '{self.region}'")
        amz_date = headers.get("x-amz-date", "")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
        except ValueError:
            raise S3Error(403, "AccessDenied", "AWS authentication requires a valid "
                          "x-amz-date header") from None
        if abs(datetime.datetime.utcnow() - when) > MAX_SKEW:
            raise S3Error(403, "RequestTimeTooSkewed", "The difference between the "
                          "request time and the current time is too large.")
        if day != amz_date[:8]:
            raise S3Error(403, "SignatureDoesNotMatch",
                          f"credential date {day} is not the x-amz-date day")
        signed = signed_list.split(";")
        if "host" not in signed or signed != sorted(signed):
            raise S3Error(400, "AuthorizationHeaderMalformed",
                          f"SignedHeaders {signed_list!r}: host missing or not sorted")
        self.check_body(headers, body)
        want, canonical = expected_signature(method, target, headers, body, access_key,
                                             secret, region, amz_date, signed)
        if not hmac.compare_digest(want, signature):
            raise S3Error(403, "SignatureDoesNotMatch",
                          "The request signature we calculated does not match the "
                          "signature you provided. Check your key and signing method.",
                          canonical)
        return access_key

    @staticmethod
    def check_body(headers, body):
        sha = headers.get("x-amz-content-sha256")
        if sha is None:
            raise S3Error(400, "InvalidRequest", "Missing required header for this "
                          "request: x-amz-content-sha256")
        if not sha.startswith(UNSIGNED) and sha != hashlib.sha256(body).hexdigest():
            raise S3Error(400, "XAmzContentSHA256Mismatch", "The provided "
                          "'x-amz-content-sha256' header does not match what was computed.")
        md5 = headers.get("content-md5")
        if md5 is not None and md5 != base64.b64encode(hashlib.md5(body).digest()).decode():
            raise S3Error(400, "BadDigest", "The Content-MD5 you specified did not "
                          "match what we received.")
        checksum = headers.get("x-amz-checksum-sha256")
        if checksum is not None and \
                checksum != base64.b64encode(hashlib.sha256(body).digest()).decode():
            raise S3Error(400, "BadDigest", "The SHA256 you specified did not match "
                          "the calculated checksum.")


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that went away (a killed agent) is no error of the proxy.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner = None

    def log_message(self, fmt, *args):
        pass

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self):
        proxy = self.owner
        body = self._read_body()
        headers = HTTPHeaders()
        for k, v in self.headers.items():
            headers[k.lower()] = v
        entry = Entry(self.command, self.path, "rejected", 0, body_len=len(body),
                      at=time.time())
        try:
            entry.access_key = proxy.verify(self.command, self.path, headers, body)
        except S3Error as e:
            entry.status, entry.code, entry.detail = e.status, e.code, e.detail
            proxy.record(entry)
            self._send_error(e)
            return
        entry.verdict = "verified"
        if proxy.delay:
            time.sleep(proxy.delay)
        try:
            status, reply_headers, reply = self._forward(headers, body)
        except OSError as e:
            entry.status, entry.code = 503, "ServiceUnavailable"
            proxy.record(entry)
            self._send_error(S3Error(503, "ServiceUnavailable", f"upstream: {e}"))
            return
        entry.status = status
        proxy.record(entry)
        self.send_response(status)
        for k, v in reply_headers:
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    def _forward(self, headers, body):
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=30)
        try:
            out = {k: v for k, v in self.headers.items()
                   if k.lower() not in HOP_BY_HOP and k.lower() != "authorization"}
            out["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=out)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _send_error(self, e):
        xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
               f"<Code>{escape(e.code)}</Code><Message>{escape(e.message)}</Message>"
               + (f"<CanonicalRequest>{escape(e.detail)}</CanonicalRequest>" if e.detail else "")
               + "</Error>").encode()
        self.send_response(e.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(xml)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--region", default="us-east-1")
    a = p.parse_args()
    proxy = S3VerifyProxy(a.upstream_port, {a.access_key: a.secret}, a.region, a.port).start()
    print(f"listening on {proxy.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
