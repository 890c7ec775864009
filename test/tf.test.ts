import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { loadTf, loadTfWithInfo } from '../lib/tf.js';
import { assertNoTensorLeak } from './helpers/tf-leaks.js';

test('loadTf picks a backend once and says why', () => {
  const { tf, info } = loadTfWithInfo();
  assert.equal(loadTf(), tf);
  assert.ok(info.reasons.length > 0);
  assert.equal(info.backend, tf.getBackend());
  if (process.env.PNEUMOTYPE_REQUIRE_NATIVE === '1' || process.env.CI === 'true') {
    assert.equal(info.backend, 'tensorflow', `native backend required: ${info.reasons.join('; ')}`);
    assert.match(info.libtensorflowVersion ?? '', /^\d+\.\d+/);
  }
});

test('the leak checker sees leaks and passes clean code', async () => {
  const tf = loadTf();
  await assertNoTensorLeak('tidy sum', () => tf.tidy(() => tf.ones([4, 4]).sum().dataSync()));
  const kept: unknown[] = [];
  await assert.rejects(assertNoTensorLeak('leaky', () => kept.push(tf.ones([2]))), /leaky leaked 1 tensor\(s\)/);
  for (const t of kept) (t as { dispose(): void }).dispose();
});

/** Loads the backend in a fresh process (the choice is made once per process): what it picked, or the error. */
function probe(env: Record<string, string>, options: string): { info?: { package: string; reasons: string[] }; error?: { name: string; message: string } } {
  const code =
    "import { loadTfWithInfo } from './lib/tf.ts';\n" +
    `try { const { info } = loadTfWithInfo(${options}); console.log(JSON.stringify({ info })); }\n` +
    'catch (e) { console.log(JSON.stringify({ error: { name: e.name, message: e.message } })); }';
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8', env: { ...process.env, ...env } });
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(last) as ReturnType<typeof probe>;
}

// The GPU package is not a dependency. Where it is installed (a GPU machine), these tests have nothing to check.
let gpuPackageInstalled = true;
try {
  createRequire(import.meta.url).resolve('@tensorflow/tfjs-node-gpu');
} catch {
  gpuPackageInstalled = false;
}

test('a visible GPU whose package does not load falls back to the CPU package, and says why', { skip: gpuPackageInstalled && 'tfjs-node-gpu is installed' }, () => {
  const { info } = probe({ PNEUMOTYPE_BACKEND: 'auto' }, '{ gpuVisible: true }');
  assert.equal(info?.package, '@tensorflow/tfjs-node');
  assert.deepEqual(info?.reasons, [
    "@tensorflow/tfjs-node-gpu: not usable (Cannot find module '@tensorflow/tfjs-node-gpu')",
    '@tensorflow/tfjs-node: loaded',
  ]);
  const none = probe({ PNEUMOTYPE_BACKEND: 'auto' }, '{ gpuVisible: false }');
  assert.deepEqual(none.info?.reasons, ['@tensorflow/tfjs-node-gpu: skipped, no NVIDIA GPU visible', '@tensorflow/tfjs-node: loaded']);
});

test('PNEUMOTYPE_BACKEND=gpu without the GPU package is an error that says how to install it; a bad value is named', { skip: gpuPackageInstalled && 'tfjs-node-gpu is installed' }, () => {
  const tfjsNode = (JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> }).dependencies['@tensorflow/tfjs-node'];
  assert.deepEqual(probe({ PNEUMOTYPE_BACKEND: 'gpu' }, '{ gpuVisible: true }').error, {
    name: 'BackendError',
    message:
      'PNEUMOTYPE_BACKEND="gpu" asks for @tensorflow/tfjs-node-gpu, which does not load: Cannot find module \'@tensorflow/tfjs-node-gpu\'. ' +
      `It is not a dependency: install it with \`npm install --no-save @tensorflow/tfjs-node-gpu@${tfjsNode} && node scripts/setup-tfjs.mjs\`, ` +
      'which needs CUDA 11.2 and cuDNN 8.1 (environment.md), and see `npx pneumotype doctor`.',
  });
  assert.deepEqual(probe({ PNEUMOTYPE_BACKEND: 'cuda' }, '{}').error, {
    name: 'BackendError',
    message: 'PNEUMOTYPE_BACKEND="cuda" is not a backend: expected one of "auto", "gpu", "cpu", "js"',
  });
});
