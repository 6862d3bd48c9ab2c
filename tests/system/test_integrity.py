"""Content integrity (README "Content integrity"): damage inside the
database that SQLite's quick_check cannot see, made here by changing
bytes of graind.db behind a stopped agent's back.

A sample block with one flipped byte no longer matches its checksum:
readers from cursor 0 get every other sample and a gap naming its ids,
sinks move past it, the damage is counted in /v1/status and /metrics and
logged once however often it is read, and the integrity scan finds it
before anyone reads it. `graind check --state-dir` reports the same
damage, and an object whose bytes were changed, with exit status 1;
a sound database is 0, a missing one 2."""

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess

import pytest

from conftest import GRAIND_BIN, bpf_object
from test_probes import pin_dir
from test_samples import (RUN, Caller, emit_spec, fields, metrics, page, private_agents,  # noqa: F401
                          put_probe, samples, series, wait_for)

EVENTS_ONLY = [{"map": m, "none": True} for m in ("calls", "stats", "records")]


def check(state_dir):
    """`graind check --state-dir DIR`: (exit status, stdout, stderr)."""
    p = subprocess.run([GRAIND_BIN, "check", "--state-dir", state_dir],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def blocks(db_path):
    """(first_id, last_id, probe) of every sample block, oldest first."""
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT first_id, last_id, probe FROM sample_blocks"
                          " ORDER BY first_id").fetchall()


def flip_byte(db_path, table, key_column, key, column, at):
    with sqlite3.connect(db_path) as db:
        (blob,) = db.execute(f"SELECT {column} FROM {table} WHERE {key_column} = ?",
                             (key,)).fetchone()
        damaged = bytearray(blob)
        damaged[at] ^= 0x20
        db.execute(f"UPDATE {table} SET {column} = ? WHERE {key_column} = ?",
                   (bytes(damaged), key))


def every_page(a, pb, after=0, limit=7):
    """Read the buffer from `after` page by page as a client would: the
    samples, the gaps, and whether the cursor reached the end."""
    got, gaps = [], []
    while True:
        p = page(a, pb, after=after, limit=limit)
        got += p.samples
        gaps += [(g.first_id, g.last_id, g.reason) for g in p.skipped]
        nxt = int(p.next_page_token)
        if not p.samples and not p.skipped:
            return got, gaps, nxt
        assert nxt > after, f"the cursor stuck at {after}"
        after = nxt


def make_events(ag, pb, name, caller, batches):
    """Events in `batches` commits of their own, so that each is a block."""
    made = 0
    for n in batches:
        caller.call(n)
        made += n
        wait_for(lambda: series(metrics(ag), "graind_samples_stored") == made,
                 what=f"{made} samples stored")


def test_damaged_sample_block_is_skipped_counted_and_found(pb, private_agents):
    name = f"integrity-{RUN}"
    caller = Caller()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    a1 = private_agents()
    db_path = os.path.join(a1.state_dir, "graind.db")
    try:
        sha = a1.upload(bpf_object("emit.bpf.o")).json()["sha256"]
        put_probe(a1, name, emit_spec(sha, caller.tid, EVENTS_ONLY))
        make_events(a1, pb, name, caller, (10, 10, 10))
        assert a1.stop() == 0
        held = [b for b in blocks(db_path) if b[2] == name]
        assert len(held) >= 3, held
        # Not the first block, and one of several samples.
        first, last, _ = max(held[1:], key=lambda b: b[1] - b[0])
        assert last > first, held
        flip_byte(db_path, "sample_blocks", "first_id", first, "payload", 5)

        code, out, err = check(a1.state_dir)
        assert code == 1, (out, err)
        assert re.search(rf"^samples {first}\.\.{last} of probe {name}: checksum [0-9a-f]{{8}}, "
                         r"stored [0-9a-f]{8}; readers skip them$", out, re.M), out
        assert re.search(rf"1 damaged sample blocks \({last - first + 1} samples\)$", out), out

        a2 = private_agents(a1.state_dir, ("--scan-interval", "1"))
        # Read three times: the same gap, logged and counted once.
        for _ in range(3):
            got, gaps, end = every_page(a2, pb)
            ids = [s.id for s in got]
            assert gaps == [(first, last, gaps[0][2])], gaps
            assert "checksum" in gaps[0][2]
            assert not set(ids) & set(range(first, last + 1))
            # Every id once, as a sample or in the gap; the cursor at the end.
            assert sorted(ids + list(range(first, last + 1))) == list(range(1, 31))
            assert end == 30
        # From inside the block, the gap starts past the cursor.
        p = page(a2, pb, after=first, limit=100)
        assert [(g.first_id, g.last_id) for g in p.skipped] == [(first + 1, last)]

        storage = a2.get("/v1/status").json()["storage"]
        assert storage["damagedSampleBlocks"] == "1", storage
        assert storage["damagedSamples"] == str(last - first + 1), storage
        fams = metrics(a2)
        assert series(fams, "graind_storage_damaged_sample_blocks") == 1
        assert series(fams, "graind_storage_damaged_samples") == last - first + 1
        assert a2.read_log().count("samples damaged in the store") == 1, a2.read_log()[-2000:]

        # The scan runs a second after the start, finds the damage again
        # (counted for the pass) without counting it twice overall.
        status = wait_for(lambda: (s := a2.get("/v1/status").json()["storage"])
                          .get("integrityScans") and s, what="an integrity scan")
        assert status["lastScanDamage"] == "1", status
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", status["lastScan"])
        assert status["damagedSampleBlocks"] == "1", status
        assert series(metrics(a2), "graind_integrity_last_scan_damage") == 1

        # A sink from the start moves past the damage to the newest id.
        port = udp.getsockname()[1]
        r = a2.request("PUT", f"/v1/sinks/integrity-{RUN}", json={
            "statsd": {"host": "127.0.0.1", "port": port, "flushIntervalMs": 100}})
        assert r.status_code in (200, 201), r.text
        top = end
        wait_for(lambda: int(a2.get(f"/v1/sinks/integrity-{RUN}").json()
                             .get("health", {}).get("cursor", "0")) >= top,
                 what="the sink's cursor past the damaged block")

        # New events are stored and listed after the damage as before.
        caller.call(4)
        wait_for(lambda: len(every_page(a2, pb, after=top)[0]) == 4, what="4 new events")
        assert a2.delete(f"/v1/probes/{name}").status_code == 204
        assert a2.stop() == 0, a2.read_log()[-3000:]
    finally:
        udp.close()
        caller.stop()
        shutil.rmtree(pin_dir(name), ignore_errors=True)


def test_check_reports_a_damaged_object_and_a_sound_database(private_agents):
    a = private_agents()
    db_path = os.path.join(a.state_dir, "graind.db")
    data = bpf_object("accept.bpf.o")
    sha = a.upload(data, name="fragile").json()["sha256"]

    # While the agent runs: read-only, nothing damaged.
    code, out, err = check(a.state_dir)
    assert code == 0, (out, err)
    assert out.startswith(f"checking {db_path}\n"), out
    assert re.search(r"^\d+ objects, \d+ sample blocks, \d+ bytes checked: nothing damaged$",
                     out, re.M), out
    assert a.get("/healthz").status_code == 200

    assert a.stop() == 0
    flip_byte(db_path, "objects", "sha256", sha, "bytes", len(data) // 2)
    code, out, err = check(a.state_dir)
    assert code == 1, (out, err)
    assert re.search(rf"^object {sha}: its {len(data)} bytes hash to [0-9a-f]{{64}}; "
                     r"upload it again$", out, re.M), out
    assert "1 damaged objects" in out

    # Uploading the true bytes again repairs it.
    a.start()
    assert a.upload(data, name="fragile").status_code in (200, 201)
    assert a.get(f"/v1/objects/{sha}/content").content == data
    assert a.stop(signal.SIGTERM) == 0
    code, out, err = check(a.state_dir)
    assert code == 0, (out, err)


def test_check_refuses_what_it_cannot_check(tmp_path):
    code, out, err = check(str(tmp_path / "nowhere"))
    assert code == 2
    assert "cannot open database" in err and "No such file" in err, err
    code, out, err = check("")
    assert code == 2
    p = subprocess.run([GRAIND_BIN, "check", "--bogus"], capture_output=True, text=True)
    assert p.returncode == 2 and "usage: graind check" in p.stderr
    p = subprocess.run([GRAIND_BIN, "check", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "exit status: 0 nothing damaged" in p.stdout
    (tmp_path / "graind.db").write_bytes(b"not a database at all" * 100)
    code, out, err = check(str(tmp_path))
    assert code == 2 and "cannot read database" in err, (out, err)


@pytest.mark.parametrize("value", ["-1", "10x", "366d"])
def test_a_bad_scan_interval_is_a_usage_error(tmp_path, value):
    p = subprocess.run([GRAIND_BIN, "--state-dir", str(tmp_path), "--scan-interval", value],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert f"--scan-interval wants an interval such as 3600, 1h or 1d" in p.stderr, p.stderr
    assert f"got '{value}'" in p.stderr
