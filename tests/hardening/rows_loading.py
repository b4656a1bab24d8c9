"""Bad inputs to ``interp.load_model`` / ``interp.wrap``: specs, broken checkpoint folders, dtype and device."""

import json

import torch

import interp

W = "model.layers.1.mlp.down_proj.weight"

ROWS = [
    ("unknown-spec", lambda e: interp.load_model("gpt-17"), ValueError, r"unknown model spec 'gpt-17'.*Accepted"),
    ("hub-name", lambda e: interp.load_model("org/some-model"), ValueError, r"hubs are not reachable"),
    ("spec-is-a-file", lambda e: interp.load_model(e.dir("llama") / "config.json"), ValueError,
     r"is a file; expected a checkpoint folder"),
    ("spec-int", lambda e: interp.load_model(7), TypeError, r"cannot wrap a int\. Accepted"),
    ("folder-without-config", lambda e: interp.load_model(e.tmp), FileNotFoundError, r"no config\.json"),
    ("config-invalid-json", lambda e: interp.load_model(e.folder(config_text="{'model_type': llama")), ValueError,
     r"config\.json: invalid JSON .*line 1 column 2.*expected a JSON object"),
    ("config-json-list", lambda e: interp.load_model(e.folder(config=[{"model_type": "llama"}])), ValueError,
     r"config\.json: holds a JSON list; expected a JSON object"),
    ("config-json-string", lambda e: interp.load_model(e.folder(config_text='"llama"')), ValueError,
     r"config\.json: holds a JSON string; expected a JSON object"),
    ("config-not-utf8", lambda e: interp.load_model(_binary_config(e)), ValueError,
     r"config\.json: not a JSON text file"),
    ("config-without-model-type", lambda e: interp.load_model(e.folder(config={"hidden_size": 64})), ValueError,
     r"config\.json: has no 'model_type'"),
    ("config-unsupported-arch", lambda e: interp.load_model(e.folder(config={"model_type": "bert"})), ValueError,
     r"unsupported architecture: model_type 'bert'.*Supported model types"),
    ("config-field-wrong-type", lambda e: interp.load_model(e.folder(config=e.config(num_hidden_layers="two"))),
     ValueError, r"could not build the model from config\.json.*num_hidden_layers"),
    ("config-more-layers-than-weights", lambda e: interp.load_model(e.folder(config=e.config(num_hidden_layers=3))),
     ValueError, r"missing from the weight files: model\.layers\.2\."),
    ("no-safetensors", lambda e: interp.load_model(_without_weights(e)), FileNotFoundError,
     r"no \*\.safetensors weights in the folder"),
    ("weights-truncated", lambda e: interp.load_model(e.folder(weights=e.weights_bytes()[:5000])), ValueError,
     r"model\.safetensors: not a readable safetensors file .*incomplete metadata"),
    ("weights-one-byte-short", lambda e: interp.load_model(e.folder(weights=e.weights_bytes()[:-1])), ValueError,
     r"model\.safetensors: not a readable safetensors file"),
    ("weights-header-only", lambda e: interp.load_model(e.folder(weights=e.weights_bytes()[:12])), ValueError,
     r"model\.safetensors: not a readable safetensors file"),
    ("weights-empty-file", lambda e: interp.load_model(e.folder(weights=b"")), ValueError,
     r"model\.safetensors: not a readable safetensors file .*header too small"),
    ("weights-not-safetensors", lambda e: interp.load_model(e.folder(weights=b"PK\x03\x04 a zip, say" * 40)),
     ValueError, r"model\.safetensors: not a readable safetensors file .*corrupt, truncated or in another format"),
    ("weights-pickle", lambda e: interp.load_model(e.folder(weights=b"\x80\x04\x95" + b"\x00" * 64)), ValueError,
     r"model\.safetensors: not a readable safetensors file"),
    ("weight-missing", lambda e: interp.load_model(e.folder(drop=W)), ValueError,
     r"1 weight\(s\) missing from the weight files: model\.layers\.1\.mlp\.down_proj\.weight"),
    ("weight-missing-mamba", lambda e: interp.load_model(e.folder("mamba", drop="backbone.layers.1.mixer.A_log")),
     ValueError, r"missing from the weight files: backbone\.layers\.1\.mixer\.A_log"),
    ("weight-missing-gpt2", lambda e: interp.load_model(e.folder("gpt2", drop="transformer.h.1.attn.c_attn.bias")),
     ValueError, r"missing from the weight files: transformer\.h\.1\.attn\.c_attn\.bias"),
    ("weight-unexpected", lambda e: interp.load_model(e.folder(add="model.layers.9.extra.weight")), ValueError,
     r"in the weight files but not in the model .*model\.layers\.9\.extra\.weight"),
    ("weight-wrong-shape", lambda e: interp.load_model(e.folder(reshape=W)), ValueError,
     r"wrong shape: model\.layers\.1\.mlp\.down_proj\.weight \(file \(65, 129\), model \(64, 128\)\)"),
    ("weight-nan", lambda e: interp.load_model(e.folder(nan=W)), ValueError,
     r"hold nan/inf values: model\.layers\.1\.mlp\.down_proj\.weight"),
    ("shard-index-invalid-json", lambda e: interp.load_model(e.folder(model__safetensors__index__json="{")),
     ValueError, r"model\.safetensors\.index\.json: invalid JSON"),
    ("shard-index-missing-shard", lambda e: interp.load_model(
        e.folder(model__safetensors__index__json=json.dumps({"weight_map": {W: "model-00002.safetensors"}}))),
     FileNotFoundError, r"names shard files that are not in the folder: \['model-00002\.safetensors'\]"),
    ("tokenizer-corrupt", lambda e: interp.load_model(e.folder(tokenizer__json="{not json")), ValueError,
     r"the tokenizer files of the folder do not load"),
    ("dtype-int", lambda e: interp.load_model(e.dir("llama"), dtype=torch.int64), TypeError,
     r"dtype must be a floating-point torch\.dtype"),
    ("dtype-string", lambda e: interp.load_model(e.dir("llama"), dtype="float32"), TypeError,
     r"dtype must be a floating-point torch\.dtype .*got 'float32'"),
    ("device-cuda-without-cuda", lambda e: interp.load_model(e.dir("llama"), device="cuda"), RuntimeError,
     r"device='cuda' but CUDA is not available"),
    ("device-unknown", lambda e: interp.load_model(e.dir("llama"), device="gpu7"), ValueError,
     r"device='gpu7' is not a device name"),
    ("device-int-type", lambda e: interp.load_model(e.dir("llama"), device=1.5), TypeError,
     r"device must be a device name"),
    ("wrap-linear", lambda e: interp.wrap(torch.nn.Linear(2, 2)), TypeError, r"cannot wrap a Linear\. Accepted"),
    ("wrap-none", lambda e: interp.wrap(None), TypeError, r"cannot wrap a NoneType"),
]


def _without_weights(e):
    folder = e.folder()
    (folder / "model.safetensors").unlink()
    return folder


def _binary_config(e):
    folder = e.folder()
    (folder / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    return folder
