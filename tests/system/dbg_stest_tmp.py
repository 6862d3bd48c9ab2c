import time
from test_samples import samples, fields, CPUS
from test_samples import emit, a, emit_sha

def test_dbg(a, pb, emit):
    emit.caller.call(20, cpu=0)
    emit.caller.call(20, cpu=CPUS - 1)
    for i in range(10):
        time.sleep(0.5)
        r = samples(a, pb, emit.name, "records")
        e = samples(a, pb, emit.name, "events")
        print(len(r), len(e), sorted(fields(s)["seq"][1] for s in r))
    print(a.get("/metrics").text[:3000])
    print(a.read_log()[-3000:])
    assert 0
