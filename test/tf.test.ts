import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { withoutCredentials } from '../lib/doctor.js';
import { cpuLacksAvx, findLibraries, loadTf, loadTfWithInfo } from '../lib/tf.js';
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

test('findLibraries looks where the loader does: LD_LIBRARY_PATH first, then the linker cache, then the default folders', () => {
  const files = new Set(['/opt/cuda/lib/libcudnn.so.8', '/usr/lib/x86_64-linux-gnu/libcudnn.so.8', '/usr/lib/libcudart.so.11.0']);
  const exists = (p: string): boolean => files.has(p);
  const ldconfig =
    '3 libs found in cache `/etc/ld.so.cache\'\n' +
    '\tlibcudart.so.11.0 (libc6) => /usr/lib32/libcudart.so.11.0\n' +
    '\tlibcudart.so.11.0 (libc6,x86-64) => /usr/local/cuda-11.2/lib64/libcudart.so.11.0\n';
  const found = findLibraries(['libcudart.so.11.0', 'libcudnn.so.8', 'libnvinfer.so.7'], { ldLibraryPath: '/nowhere:/opt/cuda/lib', ldconfig, exists });
  assert.deepEqual(found, {
    'libcudart.so.11.0': process.arch === 'x64' ? '/usr/local/cuda-11.2/lib64/libcudart.so.11.0' : '/usr/lib32/libcudart.so.11.0',
    'libcudnn.so.8': '/opt/cuda/lib/libcudnn.so.8',
    'libnvinfer.so.7': undefined,
  });
  assert.deepEqual(findLibraries(['libcudart.so.11.0'], { ldLibraryPath: undefined, ldconfig: '', exists }), { 'libcudart.so.11.0': '/usr/lib/libcudart.so.11.0' });
});

test('an installed GPU package without the CUDA runtime is skipped in auto (it would run on the CPU), loaded with a warning when asked for', { skip: gpuPackageInstalled && 'tfjs-node-gpu is installed' }, () => {
  // A stand-in for tfjs-node-gpu (the CPU package under its name), found through NODE_PATH.
  const dir = mkdtempSync(join(tmpdir(), 'pneumotype-fake-gpu-'));
  try {
    const pkg = join(dir, '@tensorflow', 'tfjs-node-gpu');
    mkdirSync(pkg, { recursive: true });
    writeFileSync(join(pkg, 'package.json'), '{"name":"@tensorflow/tfjs-node-gpu","version":"4.22.0","main":"index.js"}');
    const cpuPackage = dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-node/package.json'));
    writeFileSync(join(pkg, 'index.js'), `module.exports = require(${JSON.stringify(cpuPackage)});`);
    const env = { NODE_PATH: dir, PNEUMOTYPE_BACKEND: 'auto' };
    const missing = "cudaMissing: ['libcudart.so.11.0', 'libcudnn.so.8']";
    const why = 'libcudart.so.11.0 and libcudnn.so.8 not found (LD_LIBRARY_PATH, the linker cache, /usr/lib): libtensorflow-gpu would run on the CPU; install CUDA 11.2 and cuDNN 8.1 (environment.md)';
    assert.deepEqual(probe(env, `{ gpuVisible: true, ${missing} }`).info?.reasons, [
      `@tensorflow/tfjs-node-gpu: skipped, ${why}, or set PNEUMOTYPE_BACKEND=gpu to try it anyway`,
      '@tensorflow/tfjs-node: loaded',
    ]);
    const asked = probe({ ...env, PNEUMOTYPE_BACKEND: 'gpu' }, `{ gpuVisible: true, ${missing} }`).info;
    assert.equal(asked?.package, '@tensorflow/tfjs-node-gpu');
    assert.deepEqual(asked?.reasons, [`@tensorflow/tfjs-node-gpu: loaded, but ${why}`]);
    const ready = probe(env, '{ gpuVisible: true, cudaMissing: [] }').info;
    assert.equal(ready?.package, '@tensorflow/tfjs-node-gpu');
    assert.deepEqual(ready?.reasons, ['@tensorflow/tfjs-node-gpu: loaded']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a CPU without AVX: auto skips the native packages for pure JS and says why; asked for by name, a package that dies loading is an error', { skip: gpuPackageInstalled && 'tfjs-node-gpu is installed' }, () => {
  assert.equal(cpuLacksAvx('processor : 0\nflags\t\t: fpu sse sse2 pni ssse3 sse4_1 sse4_2 popcnt\n'), process.arch === 'x64');
  assert.equal(cpuLacksAvx('flags\t\t: fpu sse sse2 avx f16c avx2 fma\n'), false);
  assert.equal(cpuLacksAvx('no flags line (another architecture)\n'), false);
  // A stand-in for tfjs-node-gpu that dies loading, as libtensorflow does on such a CPU.
  const dir = mkdtempSync(join(tmpdir(), 'pneumotype-no-avx-'));
  try {
    const pkg = join(dir, '@tensorflow', 'tfjs-node-gpu');
    mkdirSync(pkg, { recursive: true });
    writeFileSync(join(pkg, 'package.json'), '{"name":"@tensorflow/tfjs-node-gpu","version":"4.22.0","main":"index.js"}');
    writeFileSync(join(pkg, 'index.js'), "process.kill(process.pid, 'SIGILL');");
    const env = { NODE_PATH: dir, PNEUMOTYPE_BACKEND: 'auto' };
    const why = 'this CPU has no AVX instructions, which libtensorflow is built for: loading it would kill the process ("Illegal instruction")';
    const auto = probe(env, '{ gpuVisible: true, cudaMissing: [], noAvx: true }').info;
    assert.equal(auto?.package, '@tensorflow/tfjs');
    assert.deepEqual(auto?.reasons, [
      `@tensorflow/tfjs-node-gpu: skipped, ${why}; set PNEUMOTYPE_BACKEND=gpu to try a libtensorflow built without AVX`,
      `@tensorflow/tfjs-node: skipped, ${why}; set PNEUMOTYPE_BACKEND=cpu to try a libtensorflow built without AVX`,
      '@tensorflow/tfjs: loaded (pure JavaScript)',
    ]);
    assert.deepEqual(probe({ ...env, PNEUMOTYPE_BACKEND: 'gpu' }, '{ gpuVisible: true, cudaMissing: [], noAvx: true }').error, {
      name: 'BackendError',
      message:
        `PNEUMOTYPE_BACKEND="gpu" asks for @tensorflow/tfjs-node-gpu, but ${why}: a test load in a child process was killed by SIGILL. ` +
        'Use a libtensorflow built without AVX (environment.md), a machine whose CPU has AVX, or PNEUMOTYPE_BACKEND=js (slow).',
    });
    // A package that loads in the child (here the real one, standing for a libtensorflow built without AVX) is used.
    assert.deepEqual(probe({ ...env, PNEUMOTYPE_BACKEND: 'cpu' }, '{ noAvx: true }').info?.reasons, ['@tensorflow/tfjs-node: loaded']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('withoutCredentials (doctor): user names, passwords, queries and fragments of URLs are masked, with or without a scheme', () => {
  const cases: [string | undefined, string | undefined][] = [
    ['http://alice:s3cret@proxy:3128', 'http://***@proxy:3128/'],
    ['alice:s3cret@proxy:3128', '***@proxy:3128/'], // a proxy without its scheme, as fetch accepts it
    ['https://b.example/x.zip?X-Amz-Signature=abc#part', 'https://b.example/x.zip?***'],
    ['http://proxy:3128', 'http://proxy:3128'],
    ['proxy:3128', 'proxy:3128'],
    ['v2', 'v2'],
    ['../shared/data/chest_xray_train_224.zip', '../shared/data/chest_xray_train_224.zip'],
    ['chest@2024.zip', 'chest@2024.zip'], // a file name with an @, no password
    // Malformed URLs (a port out of range, a typo): masked all the same, never shown as given.
    ['http://alice:s3cret@proxy:99999', 'http://***@proxy:99999'],
    ['alice:s3cret@proxy:312a', '***@proxy:312a'],
    [undefined, undefined],
  ];
  for (const [value, shown] of cases) assert.equal(withoutCredentials(value), shown, String(value));
});
