#!/usr/bin/python3
"""Writes the crafted bad (and a few good) inputs kept in git as regression tests.

    /usr/bin/python3 tools/make_bad_inputs.py [--root REPO_ROOT]

Outputs (deterministic; rerun after editing a case and commit the result):
  tests/data/bad_safetensors/*.safetensors   one malformed file per case
  tests/data/bad_safetensors/expected_errors.tsv
      "<file name>\\t<substring the error message must contain>", one line per file;
      tests/common/safetensors_test.cc checks every file in the directory is listed.
  tests/data/safetensors_corpus/*.safetensors   small valid files (fuzzer seeds)
  tests/data/config_corpus/*.json               configs, valid and not (fuzzer seeds)

Both safetensors directories seed the libFuzzer target tests/fuzz/safetensors_header_fuzz.cc;
config_corpus seeds tests/fuzz/model_config_fuzz.cc.
"""

import argparse
import json
import os
import struct

import numpy as np

# The valid base every bad case is a small edit of: two tensors, 32 data bytes.
#   a: F32 [2, 3]  bytes [0, 24)
#   b: F16 [4]     bytes [24, 32)
A = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
B = {"dtype": "F16", "shape": [4], "data_offsets": [24, 32]}
DATA = (np.arange(6, dtype="<f4").tobytes() + np.array([1, -2, 0.5, 4], dtype="<f2").tobytes())
assert len(DATA) == 32


def header_bytes(header) -> bytes:
    if isinstance(header, (bytes, bytearray)):
        return bytes(header)
    return json.dumps(header, separators=(",", ":")).encode()


def safetensors(header, data: bytes = DATA, header_len=None) -> bytes:
    """8-byte little-endian header length, the header, the data section."""
    text = header_bytes(header)
    n = len(text) if header_len is None else header_len
    return struct.pack("<Q", n) + text + data


def with_entry(name, **changes):
    """The base header with tensor `name`'s fields changed (None removes a field)."""
    header = {"__metadata__": {"format": "pt"}, "a": dict(A), "b": dict(B)}
    for key, value in changes.items():
        if value is None:
            del header[name][key]
        else:
            header[name][key] = value
    return header


def nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * depth + b"]" * depth + b"}"


VALID = safetensors(with_entry("a"))

# file name -> (bytes, substring the error must contain)
BAD = {
    "empty.safetensors": (b"", "shorter than the 8-byte header length"),
    "shorter_than_length_field.safetensors": (b"\x10\x00\x00", "shorter than the 8-byte header length"),
    "truncated_in_header.safetensors": (VALID[:40], "runs past the end of the 40-byte file"),
    "header_length_past_end.safetensors":
        (safetensors(with_entry("a"), header_len=4096), "header length 4096 runs past the end"),
    "header_length_absurd.safetensors":
        (safetensors(with_entry("a"), header_len=2**64 - 1), "exceeds the limit"),
    "header_not_json.safetensors": (safetensors(b"this is not json", b""), "header is not valid JSON"),
    "header_invalid_utf8.safetensors":
        (safetensors(b'{"\xff\xfe\x80":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}', b""),
         "header is not valid JSON"),
    "header_binary_garbage.safetensors":
        (safetensors(bytes(range(256))[::7] * 3, b""), "header is not valid JSON"),
    "header_json_array.safetensors": (safetensors([A, B]), "header is not a JSON object"),
    "header_json_number.safetensors": (safetensors(b"42", b""), "header is not a JSON object"),
    "header_deeply_nested.safetensors": (safetensors(nested(200), b""), "nests JSON deeper than"),
    "entry_not_object.safetensors": (safetensors({"a": [0, 24]}), "tensor \"a\": entry is not a JSON object"),
    "missing_dtype.safetensors": (safetensors(with_entry("a", dtype=None)), "missing or non-string \"dtype\""),
    "dtype_not_string.safetensors": (safetensors(with_entry("b", dtype=16)), "missing or non-string \"dtype\""),
    "unknown_dtype.safetensors":
        (safetensors(with_entry("a", dtype="F64")), "tensor \"a\": unsupported dtype \"F64\""),
    "missing_shape.safetensors": (safetensors(with_entry("b", shape=None)), "missing or non-array \"shape\""),
    "negative_dimension.safetensors":
        (safetensors(with_entry("a", shape=[-2, -3])), "tensor \"a\": negative dimension -2"),
    "non_integer_dimension.safetensors":
        (safetensors(with_entry("a", shape=[2.5, 3])), "dimension 2.5 is not an integer"),
    "string_dimension.safetensors":
        (safetensors(with_entry("a", shape=["2", 3])), "dimension \"2\" is not an integer"),
    "dimension_too_large.safetensors":
        (safetensors(with_entry("a", shape=[2**63, 0])), "is too large"),
    "shape_bytes_overflow.safetensors":
        (safetensors(with_entry("a", shape=[2**32, 2**30, 4])), "overflows 64 bits"),
    "shape_bytes_overflow_by_dtype.safetensors":
        (safetensors(with_entry("a", shape=[2**62, 1])), "overflows 64 bits"),
    "shape_size_mismatch.safetensors":
        (safetensors(with_entry("a", shape=[2, 4])), "is 32 bytes but data_offsets span 24"),
    "offsets_out_of_range.safetensors":
        (safetensors(with_entry("b", data_offsets=[24, 40])), "out of range of the 32-byte data section"),
    "offsets_past_end_of_file.safetensors":
        (safetensors(with_entry("b", data_offsets=[2**40, 2**40 + 8])), "out of range"),
    "offsets_reversed.safetensors":
        (safetensors(with_entry("b", data_offsets=[32, 24])), "data_offsets reversed [32, 24]"),
    "offsets_overlapping.safetensors":
        (safetensors(with_entry("b", data_offsets=[16, 24]), DATA[:24]),
         "tensors \"a\" and \"b\" overlap"),
    "offsets_negative.safetensors":
        (safetensors(with_entry("a", data_offsets=[-24, 0])), "\"data_offsets\" must be two non-negative"),
    "offsets_wrong_arity.safetensors":
        (safetensors(with_entry("a", data_offsets=[0, 12, 24])), "\"data_offsets\" must be two non-negative"),
    "offsets_missing.safetensors":
        (safetensors(with_entry("b", data_offsets=None)), "\"data_offsets\" must be two non-negative"),
    "gap_between_tensors.safetensors":
        (safetensors(with_entry("b", data_offsets=[28, 36]), DATA + b"\0" * 4),
         "gap of 4 bytes before tensor \"b\""),
    "trailing_bytes.safetensors":
        (safetensors(with_entry("a"), DATA + b"tail"), "data section is 36 bytes but tensors cover 32"),
    "metadata_not_object.safetensors":
        (safetensors({"__metadata__": "pt", "a": A, "b": B}), "\"__metadata__\" is not a JSON object"),
    "metadata_value_not_string.safetensors":
        (safetensors({"__metadata__": {"step": 3}, "a": A, "b": B}),
         "\"__metadata__\" value for \"step\" is not a string"),
    "duplicate_tensor_name.safetensors":
        (safetensors(b'{"a":' + header_bytes(A) + b',"a":' + header_bytes(B) + b"}"),
         "gap of 24 bytes before tensor \"a\""),
    "control_chars_in_name.safetensors":
        (safetensors({"a\nb\x1b[31m": {"dtype": "F64", "shape": [0], "data_offsets": [0, 0]}}, b""),
         "tensor \"a\\nb\\x1b[31m\": unsupported dtype"),
}

GOOD = {
    "two_tensors_with_metadata.safetensors": VALID,
    "empty_header.safetensors": safetensors({}, b""),
    "bf16_and_empty_tensor.safetensors": safetensors(
        {"__metadata__": {}, "w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
         "z": {"dtype": "F32", "shape": [0, 5], "data_offsets": [8, 8]}},
        b"\x80\x3f\x00\x40\x00\xc0\x80\x3e"),
    # Zero elements, but the leading dimensions multiply to 2^63: counting elements must
    # not overflow a signed 64-bit product on the way to 0.
    "zero_size_huge_dims.safetensors": safetensors(
        {"z": {"dtype": "F32", "shape": [2**32, 2**31, 0], "data_offsets": [0, 0]}}, b""),
}

CONFIG = {
    "model_type": "mixtral", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_local_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 256,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    "sliding_window": None, "bos_token_id": 1, "eos_token_id": 2,
}

CONFIGS = {
    "valid.json": json.dumps(CONFIG, indent=1),
    "valid_head_dim_window.json": json.dumps({**CONFIG, "head_dim": 16, "sliding_window": 8,
                                              "tie_word_embeddings": True}),
    "minimal.json": json.dumps({k: CONFIG[k] for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_local_experts", "num_experts_per_tok")}),
    "top_k_exceeds_experts.json": json.dumps({**CONFIG, "num_experts_per_tok": 5}),
    "negative_size.json": json.dumps({**CONFIG, "hidden_size": -32}),
    "not_json.json": "{\"vocab_size\": 64,",
}


def write_all(root: str) -> None:
    bad_dir = os.path.join(root, "tests", "data", "bad_safetensors")
    good_dir = os.path.join(root, "tests", "data", "safetensors_corpus")
    config_dir = os.path.join(root, "tests", "data", "config_corpus")
    for d in (bad_dir, good_dir, config_dir):
        os.makedirs(d, exist_ok=True)
        for fn in os.listdir(d):  # drop cases that no longer exist
            if fn.endswith((".safetensors", ".json", ".tsv")):
                os.remove(os.path.join(d, fn))
    lines = []
    for name, (content, expected) in sorted(BAD.items()):
        assert "\t" not in expected and "\n" not in expected
        with open(os.path.join(bad_dir, name), "wb") as f:
            f.write(content)
        lines.append(f"{name}\t{expected}\n")
    with open(os.path.join(bad_dir, "expected_errors.tsv"), "w") as f:
        f.writelines(lines)
    for name, content in GOOD.items():
        with open(os.path.join(good_dir, name), "wb") as f:
            f.write(content)
    for name, text in CONFIGS.items():
        with open(os.path.join(config_dir, name), "w") as f:
            f.write(text + "\n")
    print(f"wrote {len(BAD)} bad and {len(GOOD)} valid safetensors files, {len(CONFIGS)} configs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    help="repository root (default: this script's)")
    write_all(ap.parse_args().root)


if __name__ == "__main__":
    main()
