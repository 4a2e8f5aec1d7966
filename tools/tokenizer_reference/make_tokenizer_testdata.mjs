// Writes the byte-level BPE test data of tests/common/bpe_tokenizer_test.cc:
//
//   tests/data/tokenizers/<variant>/tokenizer.json   small tokenizers, one per layout that
//                                                    real releases ship (Qwen2/Qwen3,
//                                                    GPT-2/OLMoE, Llama-3/GPT-4 style)
//   tests/data/tokenizers/reference.json             token ids and decoded text of hard
//                                                    strings, produced by Hugging Face
//                                                    tokenizers (the Rust library, through
//                                                    its Node binding, npm `tokenizers`
//                                                    0.23.2 pinned in package-lock.json)
//
// The vocabulary and merges are learned here by a plain BPE trainer on the start of the
// King James Bible (Debian's bible-kjv) plus a few lines of other scripts, so merges cover
// multi-byte characters too. Training need not be independent of anything: the files are
// only inputs. What must be independent is the tokenization, and that comes from the Rust
// library, never from our C++.
//
//   cd tools/tokenizer_reference && npm ci && node make_tokenizer_testdata.mjs
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Tokenizer } = require('tokenizers');
const tokenizersVersion = require('tokenizers/package.json').version;

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, '..', '..', 'tests', 'data', 'tokenizers');
const kMerges = 700;

// The pre-tokenizer patterns, as the releases' tokenizer.json files spell them.
const QWEN2_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const GPT4_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// GPT-2's byte-to-unicode table: printable bytes stand for themselves, the rest are moved
// to U+0100 and up, in byte order.
function bytesToUnicode() {
  const keep = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const map = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + n++);
  }
  return map;
}
const byteChar = bytesToUnicode();
const toByteLevel = (s) => Array.from(Buffer.from(s, 'utf8'), (b) => byteChar[b]);

function trainingText() {
  const out = execFileSync('bible', ['-f', 'gen1:1-gen12:20'], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const verses = out.split('\n').map((l) => l.replace(/^\S+\s+/, '').trim()).filter(Boolean);
  const extra = [
    'Au commencement, Dieu créa les cieux et la terre. Noël, café, naïve, élève, à côté.',
    '起初，神创造天地。地是空虚混沌，渊面黑暗；神的灵运行在水面上。神说：要有光，就有了光。',
    'はじめに神は天と地とを創造された。地は形なく、むなしく、やみが淵のおもてにあった。',
    '태초에 하나님이 천지를 창조하시니라. Εν αρχή εποίησεν ο Θεός τον ουρανόν και την γην.',
    'В начале сотворил Бог небо и землю. 1234567890 0.5 3.14159 2024-01-01 😀😀 🙏 ✨ — “quoted” ‘text’…',
    'def main(argv):\n    for i in range(10):\n        print(i)  # loop\n\treturn 0\n',
  ];
  return verses.join('\n') + '\n' + extra.join('\n');
}

// Plain BPE: count pre-tokenized words, merge the most frequent adjacent pair (ties by
// the pair's text, for a reproducible file) until kMerges merges exist.
function train(text) {
  const re = new RegExp(QWEN2_PATTERN.replace('(?i:', '(?:'), 'gu');
  const counts = new Map();
  for (const m of text.matchAll(re)) {
    const w = toByteLevel(m[0]).join('\u0000');
    counts.set(w, (counts.get(w) || 0) + 1);
  }
  const words = [...counts].map(([w, c]) => ({ syms: w.split('\u0000'), count: c }));
  const merges = [];
  for (let k = 0; k < kMerges; k++) {
    const pairs = new Map();
    for (const { syms, count } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = syms[i] + '\u0000' + syms[i + 1];
        pairs.set(key, (pairs.get(key) || 0) + count);
      }
    }
    let best = null;
    let bestCount = 0;
    for (const [key, c] of pairs) {
      if (c > bestCount || (c === bestCount && key < best)) [best, bestCount] = [key, c];
    }
    if (best === null || bestCount < 2) break;
    const [a, b] = best.split('\u0000');
    merges.push([a, b]);
    for (const w of words) {
      const s = w.syms;
      const merged = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          merged.push(a + b);
          i++;
        } else {
          merged.push(s[i]);
        }
      }
      w.syms = merged;
    }
  }
  const vocab = {};
  byteChar.forEach((c, i) => (vocab[c] = i));
  for (const [a, b] of merges) if (!(a + b in vocab)) vocab[a + b] = Object.keys(vocab).length;
  return { vocab, merges };
}

function addedTokens(firstId) {
  const t = (content, opts) => ({
    id: 0, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false,
    ...opts,
  });
  const list = [
    t('<|endoftext|>', { special: true }),
    t('<|im_start|>', { special: true }),
    t('<|im_end|>', { special: true }),
    t('<think>', {}),
    t('</think>', {}),
    // RoBERTa's <mask>: absorbs the spaces on its left.
    t('<mask>', { lstrip: true, special: true }),
    // Matched after normalization (NFC), so a decomposed "café" finds it too.
    t('café', { normalized: true }),
    t('[[verse]]', { single_word: true }),
  ];
  list.forEach((tok, i) => (tok.id = firstId + i));
  return list;
}

function byteLevel(addPrefixSpace, useRegex) {
  return { type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: false, use_regex: useRegex };
}
const split = (pattern) => ({ type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false });

function variants(vocab, merges, added) {
  const model = (mergeForm, extra = {}) => ({
    type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null,
    end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false,
    vocab, merges: mergeForm === 'string' ? merges.map(([a, b]) => `${a} ${b}`) : merges, ...extra,
  });
  const base = (v) => ({ version: '1.0', truncation: null, padding: null, added_tokens: added, ...v });
  return {
    // Qwen2 / Qwen2-MoE / Qwen3: NFC, the Qwen split, byte-level without its own regex.
    qwen2: base({
      normalizer: { type: 'NFC' },
      pre_tokenizer: { type: 'Sequence', pretokenizers: [split(QWEN2_PATTERN), byteLevel(false, false)] },
      post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      model: model('string'),
    }),
    // GPT-2 / GPT-NeoX / OLMoE: byte-level with its built-in GPT-2 regex; merges as pairs.
    gpt2: base({
      normalizer: null,
      pre_tokenizer: byteLevel(false, true),
      post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      model: model('list'),
    }),
    // Llama-3 / GPT-4 style: digit runs of up to three, whole words taken from the
    // vocabulary before any merge, and a BOS added by the post-processor.
    gpt4: base({
      normalizer: null,
      pre_tokenizer: { type: 'Sequence', pretokenizers: [split(GPT4_PATTERN), byteLevel(false, false)] },
      post_processor: {
        type: 'Sequence',
        processors: [
          { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
          {
            type: 'TemplateProcessing',
            single: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
            pair: [
              { SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
              { SpecialToken: { id: '<|endoftext|>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
            ],
            special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [added[0].id], tokens: ['<|endoftext|>'] } },
          },
        ],
      },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: model('list', { ignore_merges: true }),
    }),
    // A prefix space and single digits, as some GPT-2 derivatives configure it.
    prefix_digits: base({
      normalizer: { type: 'Sequence', normalizers: [{ type: 'NFC' }] },
      pre_tokenizer: {
        type: 'Sequence',
        pretokenizers: [{ type: 'Digits', individual_digits: true }, byteLevel(true, true)],
      },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: model('string'),
    }),
  };
}

// Strings that break naive tokenizers: Unicode (combining marks, CJK, emoji with joiners
// and modifiers, right-to-left), whitespace runs and exotic spaces, digits, contractions,
// and special tokens inside the text.
const HARD_STRINGS = [
  'In the beginning God created the heaven and the earth.',
  '',
  ' ',
  '   ',
  '\n',
  '  leading spaces, trailing   ',
  'tabs\tand\nnewlines\r\n\r\nand   runs     of spaces\n\n\n',
  'numbers 1234567890 and 3.14159 and 1,000,000 and ١٢٣ and ½ ² Ⅻ',
  'CJK: 太初有道，道与神同在。日本語のテキスト、カタカナ。한국어 문장.',
  'emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇫🇷 heart ❤️ sparkles ✨✨',
  'accents: café naïve coöperate résumé; combining: cafe\u0301 and e\u0301le\u0300ve',
  "contractions: I'm, you're, he'll, they've, it's, we'd, DON'T, ISN'T, o'clock",
  'special <|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n',
  'adjacent<|endoftext|><|endoftext|>x and partial <|im_sta and <|im_end|',
  '<think>\nreasoning here\n</think>\n\nThe answer.',
  'nbsp\u00a0here, ideographic\u3000space, line\u2028sep, nel\u0085, vt\u000b, zwsp\u200b, thin\u2009space',
  'controls \u0000\u0001\u001f\u007f end',
  'mask: hello <mask> world   <mask>  end<mask>',
  'verse [[verse]] and x[[verse]]y and [[verse]]',
  '!!!??? ... --- === *** ((())) {{}} <<>> \'\'\' """ ``` ~~~',
  'def f(x):\n    return x**2  # comment\n\tif x: pass\n',
  'Supercalifragilisticexpialidocious aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'Ελληνικά русский עברית العربية हिन्दी ไทย',
  'And God said, Let there be light: and there was light.\n\nAnd God saw the light, that it was good.',
];

async function main() {
  const { vocab, merges } = train(trainingText());
  const added = addedTokens(Object.keys(vocab).length);
  const all = variants(vocab, merges, added);
  const reference = {
    generator: 'tools/tokenizer_reference/make_tokenizer_testdata.mjs',
    implementation: `Hugging Face tokenizers ${tokenizersVersion} (Rust, npm binding)`,
    encode: [],
    decode: [],
  };
  for (const [name, json] of Object.entries(all)) {
    mkdirSync(join(outDir, name), { recursive: true });
    const path = join(outDir, name, 'tokenizer.json');
    writeFileSync(path, JSON.stringify(json) + '\n');
    const tok = Tokenizer.fromFile(path);
    for (const text of HARD_STRINGS) {
      for (const addSpecial of name === 'gpt4' ? [false, true] : [false]) {
        const enc = await tok.encode(text, null, { addSpecialTokens: addSpecial });
        const ids = enc.getIds();
        reference.encode.push({
          variant: name, text, add_special_tokens: addSpecial, ids,
          decoded: await tok.decode(ids, true),
        });
      }
    }
    // Decoding alone: single bytes of a multi-byte character (invalid UTF-8 on their own),
    // special and non-special added tokens, and a truncated emoji.
    const byteId = (b) => vocab[byteChar[b]];
    const cases = [
      [byteId(0xe4)],
      [byteId(0xe4), byteId(0xb8)],
      [byteId(0x41), byteId(0xe4), byteId(0x42)],
      [byteId(0xf0), byteId(0x9f), byteId(0x98)],
      [byteId(0xc3), byteId(0xa9), byteId(0xff), byteId(0x80), byteId(0x20)],
      [byteId(0xed), byteId(0xa0), byteId(0x80)],
      [byteId(0xf4), byteId(0x90), byteId(0x80), byteId(0x80)],
      [added[0].id, byteId(0x48), added[3].id, byteId(0x69), added[2].id],
    ];
    for (const ids of cases) {
      reference.decode.push({ variant: name, ids, skip_special_tokens: true, text: await tok.decode(ids, true) });
    }
  }
  writeFileSync(join(outDir, 'reference.json'), JSON.stringify(reference, null, 1) + '\n');
  console.log(`wrote ${Object.keys(all).length} tokenizers (${Object.keys(vocab).length} vocab, ` +
              `${merges.length} merges) and ${reference.encode.length} reference encodings`);
}

main();
