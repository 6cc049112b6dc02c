#!/usr/bin/env python3
"""Writes the reference token ids that nib's tokenizer is tested against.

The reference is Hugging Face `tokenizers` (an independent BPE implementation), built the way
transformers converts a Qwen2 GGUF tokenizer: vocabulary and merges read from the GGUF file with
the `gguf` package, the Qwen2 split regex (isolated) and byte-level mapping without its own regex.
transformers adds an NFC normalizer; llama.cpp does not. The ids are written only when both
variants agree on every fixture, so the fixtures hold for either reference.

Usage: pip install gguf tokenizers
       python3 scripts/tokenizer_reference.py MODEL.gguf model/tests/fixtures/tokenizer \
           model/tests/fixtures/tokenizer_ids.json
"""
import json
import os
import sys

from gguf import GGUFReader
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def field_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def build(reader, nfc):
    tokens = field_strings(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field_strings(reader, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return tok


def main():
    model, fixtures, out = sys.argv[1:4]
    reader = GGUFReader(model)
    plain, nfc = build(reader, False), build(reader, True)
    result = {}
    for name in sorted(os.listdir(fixtures)):
        with open(os.path.join(fixtures, name), "rb") as f:
            text = f.read().decode("utf-8")
        a = plain.encode(text, add_special_tokens=False).ids
        b = nfc.encode(text, add_special_tokens=False).ids
        if a != b:
            sys.exit(f"{name}: NFC changes the ids; pick a fixture in NFC form")
        result[name] = a
    with open(out, "w") as f:
        json.dump(result, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(result)} files, {sum(map(len, result.values()))} ids -> {out}")


if __name__ == "__main__":
    main()
