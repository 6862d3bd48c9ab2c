"""The guest suite (guest/) runs inside the VMs, not here. The summary
says how long each VM took to boot and to run its tests."""

import sys

collect_ignore = ["guest"]


def pytest_terminal_summary(terminalreporter):
    test_vm = sys.modules.get("test_vm")
    for line in (test_vm.timings() if test_vm else []):
        terminalreporter.write_line(line)
