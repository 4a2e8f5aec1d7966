#!/usr/bin/env python3
"""Writes tests/data/bad_offload: crafted malformed manifest.json files of the offload
layout (common/quant/offload_model.h), one defect each, and expected_errors.tsv (file,
a substring its error must contain). Also writes tests/data/offload_corpus/valid.json,
the fuzz seed. The base is a real manifest: `moe convert --in models/kjv-moe --out
build/kjv-43 --attn-bits 4 --expert-bits 3`.

  /usr/bin/python3 tools/make_bad_manifests.py build/kjv-43/manifest.json
"""
import copy
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "bad_offload")
CORPUS = os.path.join(HERE, "..", "tests", "data", "offload_corpus")


def main():
    base = json.load(open(sys.argv[1]))
    cases = []

    def case(name, expected, mutate=None, text=None):
        if text is None:
            m = copy.deepcopy(base)
            mutate(m)
            text = json.dumps(m, separators=(",", ":"))
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            f.write(text)
        cases.append((name + ".json", expected))

    def set_(path, value):
        def f(m):
            d = m
            for k in path[:-1]:
                d = d[k]
            d[path[-1]] = value
        return f

    def delete(path):
        def f(m):
            d = m
            for k in path[:-1]:
                d = d[k]
            del d[path[-1]]
        return f

    e = base["experts"]
    tensors = base["dense"]["tensors"]
    q_index = next(i for i, t in enumerate(tensors) if t["name"].endswith("self_attn.q_proj.weight"))
    case("not_json", "is not valid JSON", text='{"format": "moe-offload", ')
    case("json_array", "is not a JSON object", text="[1, 2, 3]")
    case("deeply_nested", "nests JSON deeper", text='{"a": ' + "[" * 200 + "]" * 200 + "}")
    case("missing_format", 'missing field "format"', delete(["format"]))
    case("wrong_format", 'expected "moe-offload"', set_(["format"], "safetensors"))
    case("version_too_new", "format version 2 is not supported", set_(["version"], 2))
    case("version_not_integer", 'field "version" is not an integer', set_(["version"], "1"))
    case("missing_config", 'missing field "config"', delete(["config"]))
    case("config_negative_size", "hidden_size", set_(["config", "hidden_size"], -256))
    case("bad_method", "is not hqq, rtn or none", set_(["method"], "gptq"))
    case("bad_dtype16", "is not BF16 or F16", set_(["dtype16"], "F32"))
    case("expert_bits_5", "bits 5 is not one of 2, 3, 4, 8, 16", set_(["experts", "bits"], 5))
    case("attention_bits_1", "bits 1 is not one of", set_(["attention", "bits"], 1))
    case("bits_huge", 'must be in [0, 64]', set_(["experts", "bits"], 2**40))
    case("group_not_multiple_of_32", "is not a multiple of 32", set_(["experts", "group_size"], 48))
    case("group_not_dividing", "does not divide the input dimension 256",
         set_(["experts", "group_size"], 384))
    case("group_zero", "group_size must be in [1, 4096]", set_(["attention", "group_size"], 0))
    case("missing_group_size", 'missing field "group_size"', delete(["experts", "group_size"]))
    case("blob_bytes_mismatch", "do not match", set_(["experts", "blob_bytes"], e["blob_bytes"] + 1))
    case("matrix_offset_mismatch", "do not match the expected",
         set_(["experts", "matrices", "w2", "offset"], e["matrices"]["w2"]["offset"] + 64))
    case("missing_matrices", 'missing field "matrices"', delete(["experts", "matrices"]))
    case("blobs_missing_one", "blobs lists 31 experts but the config has 4 expert layers x 8 experts",
         lambda m: m["experts"]["blobs"].pop())
    case("experts_huge_count", "blobs lists 32 experts but the config has 4 expert layers x 16777216",
         set_(["config", "num_local_experts"], 16777216))
    case("blob_not_array", "is not [layer, expert, offset]", set_(["experts", "blobs", 3], {"layer": 0}))
    case("blob_layer_out_of_range", "layer must be in [0, 3]",
         set_(["experts", "blobs", 0], [99, 0, 0]))
    case("blob_negative_offset", "offset must be in [0,",
         set_(["experts", "blobs", 0], [0, 0, -4096]))
    case("blob_misaligned", "is not a multiple of 4096",
         set_(["experts", "blobs", 0], [0, 0, 100]))
    case("blob_past_end", "runs past the end of experts.bin",
         set_(["experts", "blobs", 0], [0, 0, e["file_bytes"]]))
    case("blob_listed_twice", "is listed twice", set_(["experts", "blobs", 1], [0, 0, e["blobs"][1][2]]))
    case("blobs_overlap", "overlap", set_(["experts", "blobs", 1], [0, 1, 4096]))
    case("experts_file_renamed", 'is not "experts.bin"', set_(["experts", "file"], "../../etc/passwd"))
    n = len(tensors)
    case("dense_missing_tensor", f"tensors lists {n - 1} tensors but the config implies {n}",
         lambda m: m["dense"]["tensors"].pop())
    case("dense_unknown_tensor", "is not a dense tensor of this config",
         set_(["dense", "tensors", q_index, "name"], "model.layers.0.self_attn.qq_proj.weight"))
    case("dense_shape_mismatch", "has shape [128, 256] but the config implies [256, 256]",
         set_(["dense", "tensors", q_index, "shape"], [128, 256]))
    case("dense_three_dims", "more than 2 dimensions",
         set_(["dense", "tensors", q_index, "shape"], [1, 256, 256]))
    case("dense_bytes_mismatch", "bytes but its shape and",
         set_(["dense", "tensors", q_index, "bytes"], tensors[q_index]["bytes"] + 64))
    case("dense_past_end", "runs past the end of dense.bin",
         set_(["dense", "file_bytes"], 1024))
    case("dense_overlap", "overlap",
         set_(["dense", "tensors", q_index + 1, "offset"], tensors[q_index]["offset"]))
    case("dense_misaligned", "is not a multiple of 64",
         set_(["dense", "tensors", q_index, "offset"], tensors[q_index]["offset"] + 8))
    case("dense_wrong_bits", "is stored as BF16 but the scheme says 4-bit/g64",
         lambda m: m["dense"]["tensors"][q_index].update({"bits": 16, "dtype": "BF16"}))
    case("dense_dtype_not_string", 'field "dtype" is not a string',
         set_(["dense", "tensors", 0, "dtype"], 16))
    case("dense_listed_twice", "is not a dense tensor of this config, or is listed twice",
         set_(["dense", "tensors", 1], tensors[0]))
    case("offset_float", 'field "offset" is not an integer',
         set_(["dense", "tensors", 0, "offset"], 0.5))
    with open(os.path.join(OUT, "expected_errors.tsv"), "w") as f:
        f.write("# file\tsubstring of the error (tools/make_bad_manifests.py)\n")
        for name, expected in cases:
            f.write(f"{name}\t{expected}\n")
    with open(os.path.join(CORPUS, "valid.json"), "w") as f:
        json.dump(base, f, separators=(",", ":"))
    print(f"{len(cases)} bad manifests in {OUT}")


if __name__ == "__main__":
    main()
