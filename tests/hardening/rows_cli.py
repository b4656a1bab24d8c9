"""Bad command lines: every verb ends in one clear line (no traceback) and a non-zero exit code.

``env.cli(*argv)`` raises ``SystemExit("rc=N: <last stderr line>")``; the pattern is matched against that."""

SITE = "blocks.1.hook_resid_post"


def _train(e, *extra, model=None):
    model = model or e.dir("llama")
    return e.cli("sae", "train", "--site", SITE, "--d-sae", "16", "--k", "2", "--model", model, "--dataset",
                 e.text_file(), "--context-length", "16", "--batch-size", "16", "--buffer-batches", "2",
                 "--steps", "3", "--no-progress", *extra)


def _eval(e, *extra, sae=None, site=SITE):
    return e.cli("sae", "eval", "--sae", sae or e.sae_dir(), "--model", e.dir("llama"), "--site", site,
                 "--dataset", e.text_file(), "--context-length", "16", "--max-sequences", "2", *extra)


def _existing_run(e):
    run = e.tmp / "run"
    _train(e, "--checkpoint-dir", run)
    return run


ROWS = [
    ("info-unknown", lambda e: e.cli("info", "gpt-17"), SystemExit,
     r"rc=2: interp info: error: unknown model spec 'gpt-17'"),
    ("info-corrupt-weights", lambda e: e.cli("info", e.folder(weights=e.weights_bytes()[:100])), SystemExit,
     r"rc=2: interp info: error: .*model\.safetensors: not a readable safetensors file"),
    ("info-missing-weight", lambda e: e.cli("info", e.folder(drop="model.layers.0.self_attn.q_proj.weight")),
     SystemExit, r"rc=2: interp info: error: .*missing from the weight files: model\.layers\.0\.self_attn\.q_proj"),
    ("info-config-list", lambda e: e.cli("info", e.folder(config=[1, 2])), SystemExit,
     r"rc=2: .*config\.json: holds a JSON list; expected a JSON object"),
    ("info-no-model", lambda e: e.cli("info"), SystemExit, r"rc=2: interp info: error: the following arguments"),
    ("unknown-verb", lambda e: e.cli("train"), SystemExit, r"rc=2: interp: error: argument VERB: invalid choice"),
    ("train-existing-checkpoint-dir", lambda e: _train(e, "--checkpoint-dir", _existing_run(e)), SystemExit,
     r"rc=2: interp sae: error: checkpoint_dir .* already holds a checkpoint \(step_00000003\); pass resume=True "
     r"\(--resume\)"),
    ("train-checkpoint-dir-file", lambda e: _train(e, "--checkpoint-dir", e.write("ckpt", "x")), SystemExit,
     r"rc=2: interp sae: error: checkpoint_dir .*ckpt is a file; expected a folder"),
    ("train-device-cuda", lambda e: _train(e, "--device", "cuda"), SystemExit,
     r"rc=2: interp sae: error: device='cuda' but CUDA is not available on this machine"),
    ("train-diverging-loss", lambda e: _train(e, "--lr", "1e30"), SystemExit,
     r"rc=2: interp sae: error: non-finite loss \((inf|nan)\) at step 1; training stopped"),
    ("train-corrupt-weights", lambda e: _train(e, model=e.folder(weights=b"junk")), SystemExit,
     r"rc=2: interp sae: error: .*model\.safetensors: not a readable safetensors file"),
    ("train-batch-size-zero", lambda e: _train(e, "--batch-size", "0"), SystemExit,
     r"rc=2: interp sae: error: batch_size must be an integer >= 1; got 0"),
    ("train-batch-size-text", lambda e: _train(e, "--batch-size", "many"), SystemExit,
     r"rc=2: interp sae train: error: argument --batch-size: invalid int value: 'many'"),
    ("train-architecture", lambda e: _train(e, "--architecture", "gated"), SystemExit,
     r"argument --architecture: invalid choice: 'gated'"),
    ("train-sae-kwargs-list", lambda e: _train(e, "--sae-kwargs", "[1]"), SystemExit,
     r"argument --sae-kwargs: expected a JSON object; got '\[1\]'"),
    ("train-site-unknown", lambda e: _train(e, "--site", "blocks.1.hook_resid"), SystemExit,
     r"rc=2: interp sae: error: unknown hook site 'blocks\.1\.hook_resid'"),
    ("train-dataset-missing", lambda e: _train(e, "--dataset", e.tmp / "none.txt"), SystemExit,
     r"rc=2: interp sae: error: dataset: no file at .*none\.txt"),
    ("train-k", lambda e: _train(e, "--k", "0"), SystemExit, r"rc=2: interp sae: error: k must be an integer >= 1"),
    ("train-resume-without-dir", lambda e: _train(e, "--resume"), SystemExit,
     r"rc=2: interp sae: error: resume=True needs checkpoint_dir"),
    ("train-activations-without-model", lambda e: e.cli("sae", "train", "--site", SITE, "--d-sae", "64", "--steps",
                                                         "2", "--activations", e.tmp / "acts"), SystemExit,
     r"rc=2: interp sae: error: activations: .*acts holds no cached activations and no model is given"),
    ("eval-sae-missing", lambda e: _eval(e, sae=e.tmp / "nope"), SystemExit,
     r"rc=2: interp sae: error: --sae: .*nope holds no SAE \(cfg\.json\), checkpoint \(sae/\) or latest\.json"),
    ("eval-batch-size-zero", lambda e: _eval(e, "--batch-size", "0"), SystemExit,
     r"rc=2: interp sae: error: --batch-size must be an int >= 1; got 0"),
    ("eval-skip-negative", lambda e: _eval(e, "--skip-sequences", "-1"), SystemExit,
     r"rc=2: interp sae: error: --skip-sequences must be an int >= 0; got -1"),
    ("eval-max-sequences-zero", lambda e: _eval(e, "--max-sequences", "0"), SystemExit,
     r"rc=2: interp sae: error: --max-sequences must be an int >= 1; got 0"),
    ("eval-context-length", lambda e: _eval(e, "--context-length", "1"), SystemExit,
     r"rc=2: interp sae: error: --context-length must be an int >= 2; got 1"),
    ("eval-norm-ratio", lambda e: _eval(e, "--max-norm-ratio", "0.5"), SystemExit,
     r"rc=2: interp sae: error: --max-norm-ratio must be a number > 1"),
    ("eval-cfg-corrupt", lambda e: _eval(e, sae=e.sae_dir(cfg__json="{")), SystemExit,
     r"rc=2: interp sae: error: .*cfg\.json: invalid JSON"),
    ("eval-width-mismatch", lambda e: _eval(e, sae=e.sae_dir(32)), SystemExit,
     r"rc=2: interp sae: error: d_in mismatch: the SAE has d_in=32"),
    ("eval-json-is-dir", lambda e: _eval(e, "--json", e.tmp), SystemExit,
     r"rc=2: interp sae: error: --json .* is a folder; expected a file path"),
    ("eval-dataset-builtin", lambda e: e.cli("sae", "eval", "--sae", e.sae_dir(), "--model", e.dir("llama"), "--site",
                                             SITE, "--dataset", "builtin:nope"), SystemExit,
     r"rc=2: interp sae: error: unknown builtin corpus 'nope'"),
    ("eval-skip-all", lambda e: _eval(e, "--skip-sequences", "100000"), SystemExit,
     r"rc=2: interp sae: error: --skip-sequences 100000 leaves no sequence of the dataset"),
]
