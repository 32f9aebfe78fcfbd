// Reference throughput: Hugging Face tokenizers (Rust core, npm package) encoding the corpus one
// document at a time (no BOS: the V4 tokenizer.json has no template post-processor).
// node bench.js TOKENIZER_JSON CORPUS.json [IDS_OUT] [PASSES]
'use strict';
const fs = require('fs');
const { Tokenizer } = require('tokenizers');

async function main() {
  const [tokPath, corpusPath, idsOut, passesArg] = process.argv.slice(2);
  const tok = Tokenizer.fromFile(tokPath);
  const docs = JSON.parse(fs.readFileSync(corpusPath, 'utf8'));
  const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d, 'utf8'), 0);
  const passes = parseInt(passesArg || '3', 10);
  let best = Infinity, bestCpu = Infinity, ids = null;
  for (let p = 0; p < passes; ++p) {
    const out = [];
    const t0 = process.hrtime.bigint();
    const c0 = process.cpuUsage();
    for (const d of docs) out.push((await tok.encode(d, null, { addSpecialTokens: false })).getIds());
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    best = Math.min(best, s);
    bestCpu = Math.min(bestCpu, (c.user + c.system) / 1e6);
    ids = out;
  }
  if (idsOut) fs.writeFileSync(idsOut, ids.map((a) => JSON.stringify(a)).join('\n') + '\n');
  const ntok = ids.reduce((n, a) => n + a.length, 0);
  console.log(`hf-tokenizers(npm): ${(bytes / 1048576).toFixed(2)} MiB, ${ntok} tokens, best of ${passes}: ` +
              `wall ${best.toFixed(3)} s = ${(bytes / 1048576 / best).toFixed(2)} MiB/s, ` +
              `cpu ${bestCpu.toFixed(3)} s = ${(bytes / 1048576 / bestCpu).toFixed(2)} MiB/s`);
}
main().catch((e) => { console.error(e); process.exit(1); });
