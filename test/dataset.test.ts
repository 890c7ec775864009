import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { after, before, test } from 'node:test';
import { augmentImage, checkAugment } from '../lib/augment.js';
import { openCache, prepareCache, type OpenedCache } from '../lib/cache.js';
import type { Label } from '../lib/config.js';
import { AugmentPool, augmentThreads, batchPlan, batches, batchIterator, toTfDataset, type Batch } from '../lib/dataset.js';
import { ConfigError } from '../lib/errors.js';
import { sha256 } from '../lib/fsx.js';
import { writeManifest, type ManifestRow } from '../lib/manifest.js';
import { createRng } from '../lib/random.js';
import { loadTf } from '../lib/tf.js';
import { datasetFiles } from './helpers/fixtures.js';
import { assertNoTensorLeak } from './helpers/tf-leaks.js';

const SIZE = 12;
let root = '';
let cache: OpenedCache;
const tf = loadTf();

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'pneumotype-dataset-'));
  const labeled = join(root, 'labeled');
  const rows: ManifestRow[] = [];
  for (const f of await datasetFiles({ perClass: { train: 10, test: 3 }, width: 24, height: 24 })) {
    const [, split, folder, name] = f.path.split('/') as [string, 'train' | 'test', string, string];
    const label: Label = folder === 'NORMAL' ? 'normal' : name.includes('_virus_') ? 'virus' : 'bacteria';
    const patientId = /^(person\d+)_/.exec(name)?.[1] ?? name.replace(/-\d{4}\.jpeg$/, '');
    const file = `${split}/${label}/${name}`;
    await mkdir(join(labeled, split, label), { recursive: true });
    await writeFile(join(labeled, file), f.data);
    rows.push({ split, label, file, patientId, bytes: f.data.length, sha256: sha256(f.data), width: 24, height: 24, channels: 1 });
  }
  await writeManifest(labeled, rows);
  const { dir } = await prepareCache({ labeledDir: labeled, cacheDir: join(root, 'cache'), imageSize: SIZE, valFraction: 0.2, seed: 1 });
  cache = await openCache(dir);
});

after(async () => {
  cache?.close();
  await rm(root, { recursive: true, force: true });
});

async function collect(options: Parameters<typeof batches>[1]): Promise<{ indices: number[][]; files: string[][] }> {
  const indices: number[][] = [];
  const files: string[][] = [];
  for await (const b of batches(cache, options)) {
    indices.push(b.indices);
    files.push(b.files);
    tf.dispose([b.xs, b.ys]);
  }
  return { indices, files };
}

test('batches have the right shapes, pixel values and one-hot labels', async () => {
  let seen = 0;
  for await (const b of batches(cache, { subset: 'train', batchSize: 5 })) {
    try {
      const n = b.indices.length;
      assert.deepEqual(b.xs.shape, [n, SIZE, SIZE, 1]);
      assert.equal(b.xs.dtype, 'float32');
      assert.deepEqual(b.ys.shape, [n, 3]);
      assert.equal(b.ys.dtype, 'float32');
      const xs = b.xs.dataSync();
      const ys = b.ys.dataSync();
      b.indices.forEach((i, k) => {
        const im = cache.index.images[i];
        assert.ok(im && im.subset === 'train');
        assert.equal(b.files[k], im.file);
        assert.equal(b.labels[k], im.labelIndex);
        assert.deepEqual([...ys.subarray(k * 3, k * 3 + 3)], [0, 1, 2].map((c) => (c === im.labelIndex ? 1 : 0)));
        const px = cache.readImage(i);
        const row = xs.subarray(k * SIZE * SIZE, (k + 1) * SIZE * SIZE);
        row.forEach((v, j) => assert.ok(Math.abs(v - (px[j] ?? 0) / 255) < 1e-6));
      });
      seen += n;
    } finally {
      tf.dispose([b.xs, b.ys]);
    }
  }
  assert.equal(seen, cache.count('train'));
});

test('an epoch covers every row of its subset exactly once', async () => {
  for (const subset of ['train', 'val', 'test'] as const) {
    const { indices } = await collect({ subset, batchSize: 4 });
    assert.deepEqual(indices.flat().sort((a, b) => a - b), [...cache.indices(subset)], subset);
    assert.ok(indices.slice(0, -1).every((b) => b.length === 4));
  }
  const n = cache.count('train');
  const dropped = await collect({ subset: 'train', batchSize: 4, dropRemainder: true });
  assert.equal(dropped.indices.length, Math.floor(n / 4));
  assert.ok(dropped.indices.every((b) => b.length === 4));
});

test('the order is seeded per epoch; val and test keep index order unless asked', async () => {
  const a = batchPlan(cache, { subset: 'train', batchSize: 4, seed: 5, epoch: 0 });
  assert.deepEqual(batchPlan(cache, { subset: 'train', batchSize: 4, seed: 5, epoch: 0 }), a);
  assert.deepEqual((await collect({ subset: 'train', batchSize: 4, seed: 5, epoch: 0 })).indices, a);
  assert.notDeepEqual(batchPlan(cache, { subset: 'train', batchSize: 4, seed: 5, epoch: 1 }), a);
  assert.notDeepEqual(batchPlan(cache, { subset: 'train', batchSize: 4, seed: 6, epoch: 0 }), a);
  assert.deepEqual(batchPlan(cache, { subset: 'train', batchSize: 1000, shuffle: false })[0], [...cache.indices('train')]);
  assert.deepEqual(batchPlan(cache, { subset: 'test', batchSize: 1000 })[0], [...cache.indices('test')]);
  assert.notDeepEqual(batchPlan(cache, { subset: 'test', batchSize: 1000, shuffle: true })[0], [...cache.indices('test')]);
});

test('augmentation is seeded, changes pixels, and is off by default', async () => {
  const first = (augment: Parameters<typeof batches>[1]['augment'] | undefined): Float32Array => {
    const it = batchIterator(cache, { subset: 'test', batchSize: 6, seed: 2, ...(augment === undefined ? {} : { augment }) });
    const b = it.next().value as Batch;
    it.return(undefined);
    const data = (b.xs.dataSync() as Float32Array).slice();
    tf.dispose([b.xs, b.ys]);
    return data;
  };
  const plain = first(false);
  assert.deepEqual(first(undefined), plain);
  assert.deepEqual(first({}), plain);
  const opts = { flip: true, rotateDegrees: 10, zoom: 0.1, brightness: 0.1, contrast: 0.1, noise: 0.02 };
  const aug = first(opts);
  assert.deepEqual(first(opts), aug);
  assert.notDeepEqual(aug, plain);
  assert.ok(aug.every((v) => v >= 0 && v <= 1));
  assert.throws(() => batchPlan(cache, { subset: 'train', augment: { rotateDegrees: 90 } }), {
    name: 'ConfigError',
    message: 'augment.rotateDegrees 90 is not valid: expected a number from 0 to 45',
  });
});

test('augmentImage: a flip mirrors rows, no-op options copy, draws are reproducible', () => {
  const size = 4;
  const src = Float32Array.from({ length: size * size }, (_, i) => i / 16);
  const always = (): number => 0; // flip (0 < 0.5), and the lowest end of every range
  const flipped = augmentImage(src, size, checkAugment({ flip: true }), always);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) assert.ok(Math.abs((flipped[y * size + x] ?? 0) - (src[y * size + size - 1 - x] ?? 0)) < 1e-6);
  }
  assert.deepEqual(augmentImage(src, size, checkAugment({}), createRng(1)), src);
  const o = checkAugment({ rotateDegrees: 20, zoom: 0.2, noise: 0.05 });
  assert.deepEqual(augmentImage(src, size, o, createRng(3)), augmentImage(src, size, o, createRng(3)));
  assert.throws(() => checkAugment({ zoom: -1 }), (e: unknown) => e instanceof ConfigError && e.message === 'augment.zoom -1 is not valid: expected a number from 0 to 0.5');
});

test('bad options are refused with exact messages', () => {
  assert.throws(() => batchPlan(cache, { subset: 'train', batchSize: 0 }), {
    name: 'ConfigError',
    message: 'batchSize 0 is not valid: expected an integer of at least 1',
  });
  assert.throws(() => batchPlan(cache, { subset: 'holdout' as 'val' }), {
    message: 'subset "holdout" is not valid: expected "train", "val" or "test"',
  });
  assert.throws(() => batchPlan(cache, { subset: 'val', epoch: -1 }), {
    message: 'epoch -1 is not valid: expected an integer of at least 0',
  });
});

test('no tensors leak: a consumed and disposed epoch, an early stop, and a tf.data epoch', async () => {
  await assertNoTensorLeak('one epoch of batches', async () => {
    for await (const b of batches(cache, { subset: 'train', batchSize: 8, augment: { rotateDegrees: 5 } })) tf.dispose([b.xs, b.ys]);
  });
  await assertNoTensorLeak('an early stop', async () => {
    for await (const b of batches(cache, { subset: 'train', batchSize: 3 })) {
      tf.dispose([b.xs, b.ys]);
      break;
    }
  });
  const ds = toTfDataset(cache, { subset: 'train', batchSize: 8, seed: 4 });
  const epochFirstRows: number[][] = [];
  await assertNoTensorLeak('a tf.data epoch', async () => {
    const it = await ds.iterator();
    let n = 0;
    for (let r = await it.next(); !r.done; r = await it.next()) {
      const { xs, ys } = r.value;
      if (n++ === 0) epochFirstRows.push([...(xs.dataSync() as Float32Array).subarray(0, SIZE * SIZE)]);
      assert.equal(ys.shape[1], 3);
      tf.dispose([xs, ys]);
    }
    assert.equal(n, Math.ceil(cache.count('train') / 8));
  });
  // Each new iteration of the dataset is the next epoch: a new order.
  assert.equal(epochFirstRows.length, 2);
  assert.notDeepEqual(epochFirstRows[0], epochFirstRows[1]);
});

test('augmenting in worker threads gives the same batches, in order, and stops cleanly', async () => {
  const options = { subset: 'train' as const, batchSize: 4, seed: 3, epoch: 2, augment: { rotateDegrees: 10, blur: 1, jpegQuality: [40, 90] as [number, number] } };
  const collect = async (workers: number): Promise<Array<{ x: number[]; files: string[] }>> => {
    const out: Array<{ x: number[]; files: string[] }> = [];
    for await (const b of batches(cache, { ...options, workers })) {
      out.push({ x: Array.from(await b.xs.data()), files: b.files });
      tf.dispose([b.xs, b.ys]);
    }
    return out;
  };
  const inThread = await collect(0);
  const inWorkers = await collect(2);
  assert.ok(inThread.length > 2);
  assert.deepEqual(inWorkers, inThread);
  // An early stop ends the workers (the test would not end otherwise) and leaks no tensor.
  const before = tf.memory().numTensors;
  for await (const b of batches(cache, { ...options, workers: 2 })) {
    tf.dispose([b.xs, b.ys]);
    break;
  }
  assert.equal(tf.memory().numTensors, before);
  await assert.rejects(async () => {
    for await (const b of batches(cache, { ...options, workers: -1 })) tf.dispose([b.xs, b.ys]);
  }, { name: 'ConfigError', message: 'workers -1 is not valid: expected an integer of at least 0' });
});

test('augmentThreads: the configured count, capped at one fewer than the cores, at least 1, 0 kept', () => {
  assert.deepEqual([augmentThreads(3, 2), augmentThreads(3, 1), augmentThreads(3, 4), augmentThreads(3, 16), augmentThreads(1, 1), augmentThreads(0, 16)], [1, 1, 3, 3, 1, 0]);
});

test('mixup blends training batches reproducibly: soft label rows that sum to 1, hard labels kept', async () => {
  const options = { subset: 'train' as const, batchSize: 6, seed: 3, epoch: 1, mixup: 0.4 };
  const read = async (extra: object): Promise<Array<{ x: number[]; y: number[]; labels: number[] }>> => {
    const out: Array<{ x: number[]; y: number[]; labels: number[] }> = [];
    for await (const b of batches(cache, { ...options, ...extra })) {
      out.push({ x: Array.from(await b.xs.data()), y: Array.from(await b.ys.data()), labels: b.labels });
      tf.dispose([b.xs, b.ys]);
    }
    return out;
  };
  const mixed = await read({});
  const plain = await read({ mixup: 0 });
  assert.deepEqual(await read({}), mixed);
  assert.deepEqual(await read({ workers: 1, augment: { flip: true } }).then((r) => r.length), mixed.length);
  assert.notDeepEqual(mixed.map((b) => b.x), plain.map((b) => b.x));
  assert.deepEqual(mixed.map((b) => b.labels), plain.map((b) => b.labels));
  let soft = 0;
  for (const b of mixed) {
    b.labels.forEach((l, k) => {
      const row = b.y.slice(k * 3, k * 3 + 3);
      assert.ok(Math.abs(row.reduce((s, v) => s + v, 0) - 1) < 1e-6);
      assert.ok((row[l] as number) >= 0.5);
      if ((row[l] as number) < 1) soft++;
    });
  }
  assert.ok(soft > 0);
  assert.throws(() => batchPlan(cache, { subset: 'train', mixup: -0.5 }), {
    name: 'ConfigError',
    message: 'mixup -0.5 is not valid: expected 0 (off) or a number of at least 0.01, e.g. 0.2',
  });
});

test('a worker thread that stops, throws or reports an error rejects its batch with an AugmentError, and later ones at once', async () => {
  const fake = (onJob: string) => (): Worker =>
    new Worker(`const { parentPort } = require('node:worker_threads'); parentPort.on('message', (job) => { ${onJob} });`, { eval: true });
  const options = checkAugment({ flip: true });
  const cases: Array<[string, string]> = [
    ['process.exit(3)', 'an augmentation worker thread stopped (exit code 3) with batches still to make'],
    ["throw new Error('out of luck')", 'an augmentation worker thread failed: out of luck'],
    ["parentPort.postMessage({ id: job.id, error: 'bad pixels' })", 'augmenting a batch failed in a worker thread: bad pixels'],
  ];
  for (const [onJob, message] of cases) {
    const pool = new AugmentPool(1, fake(onJob));
    try {
      await assert.rejects(pool.run(new Float32Array(16), 4, options, 1), { name: 'AugmentError', message });
      if (!onJob.startsWith('parentPort')) {
        // The pool has failed for good: the next batch is refused at once, with the same error.
        await assert.rejects(pool.run(new Float32Array(16), 4, options, 2), { name: 'AugmentError', message });
      }
    } finally {
      await pool.close();
    }
  }
  // A healthy pool closed with no batches due is no failure.
  const pool = new AugmentPool(1, fake('parentPort.postMessage({ id: job.id, x: job.x }, [job.x.buffer])'));
  assert.equal((await pool.run(new Float32Array(16).fill(0.5), 4, options, 1))[0], 0.5);
  await pool.close();
});
