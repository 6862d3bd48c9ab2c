"""The figures of one benchmark run, kept so that runs can be compared:
each printed figure is also recorded here, and run.py writes them all to
$BUILD/bench.json at the end.

  record("samples.xdp.zero_loss.graind", 1.2e6, "events/s",
         goal=">= 0.5 x bare", met=True)
  write("build/bench.json")"""

import json
import os
import time

_figures = []


def record(name, value, unit, goal=None, met=None):
    """Keep one figure; returns value, so that it can wrap an expression."""
    _figures.append({"name": name, "value": value, "unit": unit, "goal": goal, "met": met})
    return value


def met_text(met):
    return "met" if met else "not met"


def write(path):
    """All figures recorded so far, as one JSON document."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": os.uname().nodename, "kernel": os.uname().release,
           "figures": _figures}
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
