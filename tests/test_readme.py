"""Every fenced code block of README.md runs, in order, in one fresh Python session, as a person pasting them would.

- ```python blocks run in one shared namespace, in README order, in a fresh interpreter (a subprocess: nothing that
  other tests imported or loaded helps them); ```bash blocks run through ``bash -e -o pipefail`` at their place in
  that order. Both run in a temporary working directory, so what the blocks write (``runs/...``, ``report.html``,
  ...) never lands in the repository; in it ``.venv`` links to the environment running the tests, so
  ``.venv/bin/...`` paths resolve, and that environment's ``bin/`` comes first on ``PATH`` (``interp``, ``python``).
  A block that needs a repository file by a relative path must be given it here (none does so far).
- A block that must not run is listed in ``NOT_RUN`` (keyed by its first line) with the reason. Every block is either
  run or listed: a block in another language, or a listed line that matches no block, fails the test.
- Small sizes: the README shows the sizes a user runs; ``SMALL`` replaces a fixed list of literal texts in the blocks,
  each of which must occur exactly once in README.md, so an edit cannot silently escape the replacement (it fails the
  test instead): fewer tokens, texts, samples, probe lengths and layers, never other calls. ``INTERP_README_FULL=1``
  runs the blocks verbatim at the README's own sizes (about 10 minutes on 2 cores).
- A failing block fails the test with its line in README.md; tracebacks point at README.md lines, because each block
  is compiled with its own line offset under the README's file name.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
LANGUAGES = ("python", "bash")

NOT_RUN = {
    "bash .ci/install && .venv/bin/interp heads --model smollm2 --out report.html --json scores.json   # install, "
    "then find SmolLM2's heads and test them causally":
        "the install and test commands: CI (.ci/run) runs `bash .ci/install` and then the test command itself (which "
        "includes this test); `interp heads` is the tour's `heads.detect` (run below) through the CLI, whose tests "
        "are tests/heads/test_report.py and tests/heads/test_defaults.py",
    "interp tuned-lens --model smollm2 --out smollm2_lens --steps 10 --batch-size 4 --context-length 128 \\":
        "the measured tuned-lens run behind the table (4.5 minutes); the CLI block above runs the same verb at small "
        "sizes, and tests/lenses/test_lens_cli.py tests it",
    "python3 -m venv .venv-tl && .venv-tl/bin/python -m pip install uv && .venv-tl/bin/uv pip install \\":
        "the TransformerLens 4.3 comparison benchmark: it builds a second venv (TransformerLens 4.3 cannot share this "
        "one) and runs for many minutes; README: 'not in CI'",
}

HEADS_SMALL = ("retrieval_lengths=(128,), retrieval_depths=(0.5,), retrieval_validation_trials=1, repeat_batch=4, "
               "repeat_half=16, validation_batch=2, ngram_batch=4, ngram_length=32, draws=2")
SMALL = (  # (literal text in README.md, its replacement at the small sizes); each text occurs exactly once
    # the tour
    ("report = heads.detect(model)                          # six", f"report = heads.detect(model, {HEADS_SMALL})  #"),
    ('"Eiffel Tower", " Paris")\n', '"Eiffel Tower", " Paris", samples=2)\n'),
    ("total_tokens=100_000", "total_tokens=4096"),
    ("latents=range(20), max_sequences=256)", "latents=range(20), max_sequences=4)"),
    ("sentiment_texts(400)", "sentiment_texts(80)"),
    # hooked models; head discovery; patching and tracing
    ("model.apply_ln2(0, model.W_E))", "model.apply_ln2(0, model.W_E[:256]))"),
    ("report = heads.detect(model)                          # all", f"report = heads.detect(model, {HEADS_SMALL})  #"),
    ("metric, by_pos=True)", "metric, by_pos=True, layers=[18])"),
    ('"Eiffel Tower", " Paris", restore="span")', '"Eiffel Tower", " Paris", restore="span", samples=2)'),
    # SAEs; probes
    ("d_sae=4096, k=32,\n", "d_sae=512, k=32, batch_size=1024,\n"),
    ("total_tokens=200_000", "total_tokens=4096"),
    ("sentiment_texts(1200)", "sentiment_texts(80)"),
    # lenses; function vectors
    ("steps=10, batch_size=4, context_length=128)", "steps=1, batch_size=1, context_length=16, max_rows=10)"),
    ("--out smollm2_lens --html heldout.html", "--out smollm2_lens --steps 1 --batch-size 1 --context-length 16 "
     "--max-rows 10 --html heldout.html"),
    ("icl_prompts(task, model, 100, 10)", "icl_prompts(task, model, 4, 3)"),
    ("icl_prompts(task, model, 25, 10, shuffle", "icl_prompts(task, model, 2, 3, shuffle"),
    ('fvec.function_vectors(model, "antonyms")', 'fvec.function_vectors(model, "next_number", fvec.FVConfig('
     'n_demos=3, n_mean=4, n_cie=2, n_random=1))'),
)


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line of the opening fence, language, code)`` of every fenced block, in order (lines count from 1)."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        fence = re.match(r"\s*```(.*)$", lines[i])
        if fence:
            end = next((j for j in range(i + 1, len(lines)) if re.match(r"\s*```\s*$", lines[j])), None)
            assert end is not None, f"README.md line {i + 1}: the code block is never closed"
            blocks.append((i + 1, fence.group(1).strip(), "\n".join(lines[i + 1:end])))
            i = end
        i += 1
    return blocks


def plan(text: str, small: bool, not_run=NOT_RUN, replacements=SMALL) -> list[tuple[int, str, str]]:
    """The blocks to run, in order, with ``replacements`` made (when ``small``); fails on any block neither run nor
    listed in ``not_run``."""
    blocks = fenced_blocks(text)
    firsts = [code.splitlines()[0].strip() if code.strip() else "" for _, _, code in blocks]
    for first in not_run:
        assert firsts.count(first) == 1, f"NOT_RUN: {firsts.count(first)} blocks start {first!r}, not 1"
    run = [(line, lang, code) for (line, lang, code), first in zip(blocks, firsts) if first not in not_run]
    other = [f"README.md line {line}: ```{lang}" for line, lang, _ in run if lang not in LANGUAGES]
    assert not other, (f"{other}: neither run ({', '.join(LANGUAGES)}) nor listed in NOT_RUN with a reason; "
                       "give it a language this test runs, or list it")
    if not small:
        return run
    out = [list(b) for b in run]
    for old, new in replacements:
        assert text.count(old) == 1, f"SMALL: README.md holds {old!r} {text.count(old)} times, not once; update SMALL"
        hits = [b for b in out if old in b[2]]
        assert hits, f"SMALL: {old!r} is not in a block that runs"
        hits[0][2] = hits[0][2].replace(old, new)
    return [tuple(b) for b in out]


def test_every_block_is_run_or_listed():
    text = README.read_text(encoding="utf-8")
    blocks = fenced_blocks(text)
    assert len(blocks) * 2 == sum(bool(re.match(r"\s*```", ln)) for ln in text.splitlines())
    full, small = plan(text, small=False), plan(text, small=True)
    assert len(full) + len(NOT_RUN) == len(blocks) and [b[:2] for b in small] == [b[:2] for b in full]
    assert sum(b[1] == "python" for b in full) >= 8
    assert sum(a[2] != b[2] for a, b in zip(full, small)) >= 5  # the sizes really shrink


def test_unlisted_block_fails():
    with pytest.raises(AssertionError, match=r"line 3: ```text"):
        plan("x\n\n```text\nhello\n```\n", small=False, not_run={})
    assert plan("```text\nhello\n```\n", small=False, not_run={"hello": "shown only"}) == []
    with pytest.raises(AssertionError, match="0 blocks start 'hello', not 1"):
        plan("```python\nx = 1\n```\n", small=False, not_run={"hello": "shown only"})
    with pytest.raises(AssertionError, match="not once"):
        plan("```python\nn = 200; m = 200\n```\n", small=True, not_run={}, replacements=[("200", "2")])
    assert plan("```python\nn = 200\n```\n", small=True, not_run={}, replacements=[("200", "2")]) == \
        [(1, "python", "n = 2")]


@pytest.mark.integration
@pytest.mark.slow
def test_readme_blocks_run(tmp_path):
    full = os.environ.get("INTERP_README_FULL") == "1"
    blocks = plan(README.read_text(encoding="utf-8"), small=not full)
    env = dict(os.environ, CI="true", PYTHONUNBUFFERED="1")
    if not full:
        env["OMP_NUM_THREADS"] = "1"  # as for the notebooks: the test workers already use every core
    before, start = _repository_entries(), time.perf_counter()
    proc, status, output = _run_session(blocks, tmp_path, env, timeout=None if full else 900)
    print(f"README blocks: {time.perf_counter() - start:.0f} s;",
          ", ".join(f"line {line}: {s:.0f} s" for line, s in status.get("seconds", [])))
    if status.get("failed"):
        pytest.fail(f"README.md line {status['at']} (in the ```{status['language']} block at line "
                    f"{status['failed']}) failed: {status['error']}\n{output[-6000:]}", pytrace=False)
    assert proc.returncode == 0 and status.get("done") == len(blocks), output[-6000:]
    assert _repository_entries() <= before, f"blocks wrote into the repository: {_repository_entries() - before}"


def test_session_names_the_failing_line(tmp_path):
    on_path = 'test -x .venv/bin/python && test "$(command -v interp)" -ef .venv/bin/interp'
    blocks = [(10, "python", "x = 1"), (20, "bash", on_path), (30, "python", "y = x + 1\nz = y.no_such_attribute"),
              (40, "python", "never = 1")]
    proc, status, output = _run_session(blocks, tmp_path, dict(os.environ), timeout=120)
    assert proc.returncode == 1 and status["done"] == 2, output
    assert (status["failed"], status["at"], status["language"]) == (30, 32, "python"), status
    assert "AttributeError" in status["error"] and 'README.md", line 32' in output
    proc, status, output = _run_session([(5, "bash", "echo ok; false")], tmp_path / "b", dict(os.environ), 120)
    assert (status["failed"], status["at"], status["language"]) == (5, 5, "bash") and "ok" in output


def _run_session(blocks, tmp_path: Path, env: dict, timeout):
    """Run ``blocks`` through ``_session`` in a fresh interpreter, in ``tmp_path/cwd`` (``.venv`` linked there)."""
    work = tmp_path / "cwd"
    work.mkdir(parents=True)
    (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    env = dict(env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    with open(tmp_path / "output.txt", "w") as log:
        proc = subprocess.run([sys.executable, __file__, str(tmp_path / "blocks.json"), str(tmp_path / "status.json")],
                              cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    status = json.loads((tmp_path / "status.json").read_text()) if (tmp_path / "status.json").exists() else {}
    return proc, status, (tmp_path / "output.txt").read_text(errors="replace")


def _repository_entries() -> set[str]:
    return {p.name for p in README.parent.iterdir() if not p.name.startswith(".")}


def _session(blocks_json: str, status_json: str) -> int:
    """Run the blocks as one interactive session would (cwd first on sys.path); write what happened to status_json."""
    import traceback

    sys.path[0] = ""
    namespace, status = {"__name__": "__main__"}, {"seconds": [], "done": 0}
    for line, lang, code in json.loads(Path(blocks_json).read_text()):
        print(f"--- README.md line {line}: ```{lang}", flush=True)
        start = time.perf_counter()
        try:
            if lang == "python":
                exec(compile("\n" * line + code, str(README), "exec"), namespace)
            else:
                subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], check=True)
        except BaseException as err:
            traceback.print_exc()
            at = [f.lineno for f in traceback.extract_tb(err.__traceback__) if f.filename == str(README)]
            status.update(failed=line, at=at[-1] if at else line, language=lang,
                          error=f"{type(err).__name__}: {err}"[:2000])
            break
        finally:
            status["seconds"].append((line, time.perf_counter() - start))
            Path(status_json).write_text(json.dumps(status))
        status["done"] += 1
    Path(status_json).write_text(json.dumps(status))
    return 1 if "failed" in status else 0


if __name__ == "__main__":
    sys.exit(_session(*sys.argv[1:3]))
