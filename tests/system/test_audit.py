"""The audit log cannot be flooded: requests without a valid token are
counted and logged at a bounded rate, never stored; changes by a token
holder are, in batches, and the log is pruned by rows and by age."""

import http.client
import os
import re
import time

from conftest import assert_error

ZERO_SHA = "0" * 64
REFUSED_LINE = "refused without a valid token"


def db_bytes(agent):
    """graind.db with its WAL and shared memory, as they are on disk."""
    path = os.path.join(agent.state_dir, "graind.db")
    return sum(os.path.getsize(path + suffix) for suffix in ("", "-wal", "-shm")
               if os.path.exists(path + suffix))


def metric(agent, name, labels=""):
    r = agent.get("/metrics", token="reader")
    assert r.status_code == 200, r.text
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", r.text, re.M)
    assert m, f"{name}{labels} not in /metrics"
    return float(m.group(1))


def audit_all(agent, page_size=100):
    entries, token = [], None
    while True:
        path = f"/v1/audit?page_size={page_size}" + (f"&page_token={token}" if token else "")
        r = agent.get(path, token="reader")
        assert r.status_code == 200, r.text
        entries += r.json().get("entries", [])
        token = r.json().get("nextPageToken")
        if not token:
            return entries


def change(agent, i, token="admin"):
    """An audited change: deleting an object that is not there (404)."""
    sha = f"{i:064x}"
    r = agent.delete(f"/v1/objects/{sha}", token=token)
    assert r.status_code == (404 if token == "admin" else 403), r.text
    return sha


def test_unauthenticated_flood_is_counted_not_stored(agent):
    change(agent, 1)
    change(agent, 2, token="reader")       # a 403 by a known token is audited
    before = audit_all(agent)              # also writes what the store queued
    assert [(e["role"], e["result"]) for e in before[-2:]] == [("admin", 404), ("reader", 403)]
    size = db_bytes(agent)

    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
    routes = (("POST", "/v1/objects"), ("PUT", "/v1/probes/flood"),
              ("DELETE", f"/v1/objects/{ZERO_SHA}"), ("POST", "/v1/probes/flood:attach"),
              ("PUT", "/v1/sinks/flood"), ("DELETE", "/v1/probes/flood"))
    sent = {"missing": 0, "invalid": 0}
    slowed = 0
    start = time.monotonic()
    for i in range(5000):
        headers = {"Content-Length": "0"}
        if i % 2:
            headers["Authorization"] = "Bearer " + ("f" * 64 if i % 4 == 1 else agent.admin + "x")
        conn.request(*routes[i % len(routes)], headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        # 401s, until the address has failed too often: then 429s.
        assert resp.status in (401, 429), (i, resp.status, body[:200])
        if resp.status == 429:
            slowed += 1
        else:
            sent["invalid" if i % 2 else "missing"] += 1
    conn.close()
    elapsed = time.monotonic() - start

    assert slowed > 4000, slowed
    assert db_bytes(agent) - size < 512 * 1024, (size, db_bytes(agent))
    for reason, n in sent.items():
        assert metric(agent, "graind_http_unauthenticated_requests_total",
                      f'{{reason="{reason}"}}') == n
    assert metric(agent, "graind_auth_failures_limited_total") == slowed
    # One line when the flood starts, then at most one per 10 s.
    lines = [l for l in agent.read_log().splitlines() if REFUSED_LINE in l]
    assert 1 <= len(lines) <= 2 + elapsed / 10, (elapsed, lines)
    assert "refused_since_last_line=" in lines[0]

    # Nothing of it is in the audit log; what token holders did still is,
    # and so is a change made after it.
    change(agent, 3)
    after = audit_all(agent)
    assert after[:len(before)] == before
    new = after[len(before):]
    assert [(e["role"], e["action"], e["target"], e["result"]) for e in new] == \
        [("admin", "DeleteObject", f"{3:064x}", 404)], new
    assert not [e for e in after if e["role"] == "anonymous"]


def test_get_without_token_is_counted_too(agent):
    assert_error(agent.get("/v1/status", token=None), 401, "missing token")
    assert_error(agent.get("/v1/status", token="nonsense"), 401, "invalid token")
    assert metric(agent, "graind_http_unauthenticated_requests_total", '{reason="missing"}') == 1
    assert metric(agent, "graind_http_unauthenticated_requests_total", '{reason="invalid"}') == 1
    assert audit_all(agent) == []


def test_unauthenticated_unknown_endpoint_is_not_stored(agent):
    # Routing answers before the token is looked at; still nothing stored,
    # and a path that is no operation is not one to audit, whoever sends it.
    for method in ("POST", "PUT", "DELETE"):
        assert agent.request(method, "/v1/no-such-thing", token=None).status_code == 404
    assert agent.request("POST", "/healthz", token=None).status_code == 405
    assert audit_all(agent) == []
    assert agent.request("POST", "/v1/no-such-thing").status_code == 404
    assert audit_all(agent) == []


def test_retention_by_rows_keeps_the_newest(make_agent):
    a = make_agent(["--audit-max-rows", "5"])
    targets = [change(a, i) for i in range(3)]
    r = a.get("/v1/audit?page_size=2", token="reader")
    token = r.json()["nextPageToken"]          # after the second record
    first_id = int(r.json()["entries"][0]["id"])
    targets += [change(a, i) for i in range(3, 12)]

    kept = audit_all(a, page_size=2)
    assert [e["target"] for e in kept] == targets[-5:]
    ids = [int(e["id"]) for e in kept]
    assert ids == list(range(first_id + 7, first_id + 12))
    # A token from before the pruning still pages, from the oldest kept.
    r = a.get(f"/v1/audit?page_size=3&page_token={token}", token="reader")
    assert r.status_code == 200, r.text
    assert [e["target"] for e in r.json()["entries"]] == targets[7:10]
    r = a.get(f"/v1/audit?page_size=3&page_token={r.json()['nextPageToken']}", token="reader")
    assert [e["target"] for e in r.json()["entries"]] == targets[10:12]
    assert "nextPageToken" not in r.json()
    assert metric(a, "graind_audit_pruned_total") == 7

    # After a restart the log is as it was, and ids go on from there.
    assert a.stop() == 0
    a = make_agent(["--audit-max-rows", "5"])
    assert [e["target"] for e in audit_all(a)] == targets[-5:]
    targets.append(change(a, 12))
    kept = audit_all(a)
    assert [e["target"] for e in kept] == targets[-5:]
    assert int(kept[-1]["id"]) == first_id + 12


def test_newest_first_pages_to_older_records(agent):
    targets = [change(agent, 1000 + i) for i in range(5)]
    seen, token = [], None
    while True:
        path = "/v1/audit?page_size=2&newest_first=true" + (f"&page_token={token}" if token else "")
        r = agent.get(path, token="reader")
        assert r.status_code == 200, r.text
        seen += r.json().get("entries", [])
        token = r.json().get("nextPageToken")
        if not token:
            break
    ids = [int(e["id"]) for e in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    mine = [e["target"] for e in seen if e["target"] in targets]
    assert mine == targets[::-1]
    r = agent.get("/v1/audit?newest_first=true&page_token=x", token="reader")
    assert_error(r, 400, "page_token must be a token from next_page_token")


def test_retention_by_age(make_agent):
    a = make_agent(["--audit-max-age", "3s"])     # pruned every second
    old = [change(a, i) for i in range(3)]
    assert [e["target"] for e in audit_all(a)] == old
    time.sleep(2)
    new = [change(a, i) for i in range(3, 5)]
    deadline = time.monotonic() + 10
    while True:
        targets = [e["target"] for e in audit_all(a)]
        # The newer records outlive the older ones.
        assert targets[-2:] == new, targets
        if targets == new or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert targets == new
    assert metric(a, "graind_audit_pruned_total") == 3
    # The page token of the first record, pruned since, leads to the rest.
    r = a.get("/v1/audit?page_token=1", token="reader")
    assert [e["target"] for e in r.json()["entries"]] == new


def test_stop_writes_queued_records(make_agent):
    a = make_agent()
    done = [change(a, i) for i in range(20)]
    assert a.stop() == 0                    # at once, within the batching delay
    a = make_agent()
    assert [e["target"] for e in audit_all(a)] == done
