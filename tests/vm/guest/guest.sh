#!/bin/sh
# Run inside a test VM by its PID 1 (tests/vm/vmimage.py), from the 9p
# share: the guest suite against the graind of the share, its results
# in out/. Everything printed here reaches the host's serial log.
cd /payload || exit 1
mkdir -p out
export GRAIND_BIN=/payload/graind GRAIND_TEST_BPF=/payload/bpf \
	GRAIND_PROTO=/payload/graind.proto GRAIND_PIN_ROOT=/sys/fs/bpf/graind-vm \
	PYTHONDONTWRITEBYTECODE=1 HOME=/root LANG=C.UTF-8
python3 -m pytest -p no:cacheprovider -q -rs --junitxml=/payload/out/junit.xml \
	-o junit_family=xunit1 system/test_guest.py
echo "graind-vm: tests exited $?"
