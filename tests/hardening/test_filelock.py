"""Build-once folders under a file lock: concurrent processes build once and reuse the result; an exception or a
SIGKILL inside a build leaves the lock free and its leftovers are removed by the next build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from interp.filelock import STAMP_FILE, build_once, file_lock, stamp_matches

BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from interp.filelock import build_once
    target, log, name, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    def build(tmp):
        with open(log, "a") as f:
            f.write(f"start {name}\\n")
        (tmp / "part.txt").write_text("written before the pause")
        time.sleep(seconds)
        (tmp / "data.txt").write_text(name)
        with open(log, "a") as f:
            f.write(f"end {name}\\n")
    build_once(target, {"source": "v1"}, build)
    print((target / "data.txt").read_text())
""")


def _start(target, log, name, seconds):
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(target), str(log), name, str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(log, line, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and line in log.read_text().splitlines():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError(f"{line!r} never appeared in {log}")


def test_second_process_waits_and_reuses_the_first_build(tmp_path):
    target, log = tmp_path / "cache" / "model-f32", tmp_path / "log.txt"
    first = _start(target, log, "A", 2.0)
    _wait_for(log, "start A", first)  # A holds the lock and is building
    second = _start(target, log, "B", 0.0)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert log.read_text().splitlines() == ["start A", "end A"]  # built once: B never ran its build
    assert [out.strip() for out, _ in outs] == ["A", "A"]
    assert sorted(p.name for p in target.parent.iterdir()) == [".model-f32.lock", "model-f32"]


def test_killed_build_frees_the_lock_and_is_cleaned_up(tmp_path):
    target, log = tmp_path / "model-f32", tmp_path / "log.txt"
    holder = _start(target, log, "A", 60.0)
    _wait_for(log, "start A", holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    stale = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and stale[0].startswith(".model-f32.")  # the killed build's half-written folder
    built = []
    build_once(target, {"source": "v1"}, lambda tmp: built.append((tmp / "data.txt").write_text("B")))
    assert built and (target / "data.txt").read_text() == "B"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model-f32.lock", "log.txt", "model-f32"]


def test_exception_in_a_build_leaves_nothing_and_frees_the_lock(tmp_path):
    target = tmp_path / "model-f32"

    def broken(tmp):
        (tmp / "half.bin").write_bytes(b"xx")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_once(target, {"source": "v1"}, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model-f32.lock"]
    with file_lock(tmp_path / ".model-f32.lock"):  # free again: taking it does not block
        pass
    build_once(target, {"source": "v1"}, lambda tmp: (tmp / "ok").write_text("1"))
    assert stamp_matches(target, {"source": "v1"}) and (target / "ok").is_file()


def test_stamp_decides_whether_to_build(tmp_path):
    target, calls = tmp_path / "t", []
    build = lambda tmp: calls.append(1)
    build_once(target, {"v": 1}, build)
    build_once(target, {"v": 1}, build)
    assert calls == [1]
    build_once(target, {"v": 2}, build)  # another source: rebuilt, replacing the old folder
    assert calls == [1, 1] and stamp_matches(target, {"v": 2}) and not stamp_matches(target, {"v": 1})
    (target / STAMP_FILE).write_text("{not json")
    assert not stamp_matches(target, {"v": 2})


LOADER = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    from interp.models.smollm2 import load_smollm2
    model, tok = load_smollm2()
    print(type(model).__name__, model.config.num_hidden_layers)
""")


@pytest.mark.slow
@pytest.mark.integration
def test_two_processes_convert_smollm2_once(tmp_path):
    """The real conversion (≈ 16-40 s) into an empty cache by two processes at once: one converts, one waits."""
    env = {**os.environ, "INTERP_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", LOADER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["LlamaForCausalLM 30"] * 2
    builds = sum(err.count("interp building") for _, err in outs)
    assert builds == 1, [err[-2000:] for _, err in outs]
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir()) == [".smollm2-135m-instruct-f32.lock", "smollm2-135m-instruct-f32"]
