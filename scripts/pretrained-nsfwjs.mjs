#!/usr/bin/env node
// Maintainer tool: a real pretrained tfjs layers model without the internet, from the npm registry (nsfwjs, MIT).
//
// nsfwjs 4.4.0 ships Keras models converted by tfjs-converter (Keras 2.2.4, uint8-quantized weights) inside
// JavaScript modules. Its MobileNetV2 (alpha 1.0, 224 px) keeps ImageNet weights in blocks 0-10 (marked frozen) and
// fine-tuned blocks 11-16 and a 5-class head on other photographs; its InceptionV3 likewise. This script writes one
// of them as a plain tfjs layers folder (model.json + weight shards) that `pneumotype train --init-from` reads.
//
// Usage: node scripts/pretrained-nsfwjs.mjs [mobilenet_v2|inception_v3] [OUT_DIR]
//        (default mobilenet_v2 into data/pretrained/nsfwjs-<name>; needs npm and tar, and the npm registry)
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const PACKAGE = 'nsfwjs@4.4.0';
const name = process.argv[2] ?? 'mobilenet_v2';
if (!['mobilenet_v2', 'inception_v3'].includes(name)) {
  process.stderr.write(`pretrained-nsfwjs: model "${name}" is not one of "mobilenet_v2", "inception_v3"\n`);
  process.exit(2);
}
const out = resolve(process.argv[3] ?? join('data', 'pretrained', `nsfwjs-${name}`));

const run = (cmd, args, cwd) => {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${r.stderr || r.error?.message}`);
  return r.stdout.trim();
};

const work = mkdtempSync(join(tmpdir(), 'pneumotype-nsfwjs-'));
try {
  const tgz = run('npm', ['pack', PACKAGE, '--silent', '--pack-destination', work], work).split('\n').at(-1);
  run('tar', ['xzf', join(work, tgz)], work);
  const dir = join(work, 'package', 'dist', 'models', name);
  const require = createRequire(join(dir, 'model.min.js'));
  // Each of these UMD modules only exports data: the model.json object, or one weight shard as base64.
  const model = require(join(dir, 'model.min.js'));
  const part = `${out}.part`;
  rmSync(part, { recursive: true, force: true });
  mkdirSync(part, { recursive: true });
  for (const shard of model.weightsManifest.flatMap((group) => group.paths)) {
    writeFileSync(join(part, shard), Buffer.from(require(join(dir, `${shard}.min.js`)), 'base64'));
  }
  writeFileSync(join(part, 'model.json'), JSON.stringify(model));
  rmSync(out, { recursive: true, force: true });
  renameSync(part, out);
  for (const f of readdirSync(out).sort()) {
    const bytes = readFileSync(join(out, f));
    process.stdout.write(`${createHash('sha256').update(bytes).digest('hex')}  ${f} (${bytes.length} bytes)\n`);
  }
  process.stdout.write(`${PACKAGE} ${name} -> ${out}\n`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
