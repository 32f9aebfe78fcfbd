// Builds the deterministic mixed benchmark corpus (prose, code, CJK and other scripts) as a JSON
// array of documents: node make_corpus.js OUT.json [MIN_MB]. Sources: ../shared (docs, goldens)
// and this repository's C++ sources, shuffled with a fixed seed.
'use strict';
const fs = require('fs');
const path = require('path');

const out = process.argv[2] || 'out/corpus.json';
const minBytes = (parseFloat(process.argv[3]) || 10.5) * 1024 * 1024;
const repo = path.resolve(__dirname, '..', '..');
const shared = path.resolve(repo, '..', 'shared');

function readJsonl(p) {
  return fs.readFileSync(p, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}
function walk(dir, exts, acc) {
  if (!fs.existsSync(dir)) return acc;
  for (const name of fs.readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    const st = fs.statSync(p);
    if (st.isDirectory()) walk(p, exts, acc);
    else if (exts.some((e) => name.endsWith(e))) acc.push(p);
  }
  return acc;
}

const prose = [], code = [], intl = [];
for (const f of walk(path.join(shared, 'docs'), ['.md'], []).concat(
         walk(path.join(shared, 'tokenizer'), ['.md'], []))) {
  for (const para of fs.readFileSync(f, 'utf8').split('\n\n')) if (para.trim()) prose.push(para + '\n\n');
}
for (const f of walk(path.join(repo, 'src'), ['.cc', '.h'], []).concat(
         walk(path.join(repo, 'tools'), ['.cc', '.h'], []))) {
  const lines = fs.readFileSync(f, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i += 40) code.push(lines.slice(i, i + 40).join('\n') + '\n');
}
for (const c of readJsonl(path.join(shared, 'tokenizer', 'golden_encode.jsonl'))) {
  if (!c.text) continue;
  if (c.category === 'english') prose.push(c.text + '\n');
  else if (c.category === 'code') code.push(c.text + '\n');
  else intl.push(c.text + '\n');
}
for (const c of readJsonl(path.join(shared, 'tokenizer', 'golden_chat.jsonl'))) intl.push(c.prompt + '\n');
for (const c of readJsonl(path.join(shared, 'tokenizer', 'golden_api_counts.jsonl'))) prose.push(c.prompt + '\n');

// mulberry32: a tiny seeded PRNG so the corpus is the same on every machine.
let seed = 0x5eed1234;
function rand() {
  seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

const docs = [];
let total = 0, doc = '';
while (total < minBytes) {
  const r = rand();
  const pool = r < 0.4 ? prose : r < 0.8 ? code : intl;
  doc += pool[Math.floor(rand() * pool.length)];
  if (doc.length >= 16384) {
    docs.push(doc);
    total += Buffer.byteLength(doc, 'utf8');
    doc = '';
  }
}
fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
fs.writeFileSync(out, JSON.stringify(docs));
console.log(`corpus: ${docs.length} documents, ${(total / 1048576).toFixed(2)} MiB -> ${out}`);
