// The moving average of the weights: its arithmetic, its checkpoint files, and a training run that validates it.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadLayersModelFromDir, saveModel } from '../lib/checkpoint.js';
import { EMA_BIN, EMA_JSON, WeightAverage } from '../lib/ema.js';
import { relabel } from '../lib/relabel.js';
import { loadTf } from '../lib/tf.js';
import { train } from '../lib/train.js';
import { datasetFiles, writeTree } from './helpers/fixtures.js';

let tmp: string;
let labeled: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-ema-'));
  labeled = join(tmp, 'labeled');
  await writeTree(join(tmp, 'src'), await datasetFiles({ perClass: { train: 16, test: 4 } }));
  await relabel({ from: join(tmp, 'src'), out: labeled });
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function dense(tf: ReturnType<typeof loadTf>, value: number) {
  const model = tf.sequential({ layers: [tf.layers.dense({ units: 2, inputShape: [3], kernelInitializer: 'zeros', biasInitializer: 'zeros' })] });
  model.setWeights(model.getWeights().map((w) => tf.fill(w.shape, value)));
  return model;
}

test('update folds the weights in with a warmed-up decay, every `every` steps; checkpoints restore it', async () => {
  const tf = loadTf();
  const model = dense(tf, 1);
  const ema = await WeightAverage.create(model, { decay: 0.99, every: 2 });
  try {
    model.setWeights(model.getWeights().map((w) => tf.fill(w.shape, 11)));
    const before = tf.memory().numTensors;
    ema.update(model, 1); // not a multiple of 2: nothing
    assert.equal(ema.count, 0);
    assert.deepEqual(Array.from(await ema.model.getWeights()[1]!.data()), [1, 1]);
    ema.update(model, 2); // d = min(0.99^2, 1/10) = 0.1: 0.1 * 1 + 0.9 * 11
    assert.equal(ema.count, 1);
    assert.equal(tf.memory().numTensors, before, 'update leaves no tensors behind');
    // Before the first fold, the trained weights stand in for the average (a run of fewer steps than `every`).
    const start = dense(tf, 1);
    const copy = await WeightAverage.create(start, { decay: 0.99, every: 2 });
    try {
      const tensors = tf.memory().numTensors;
      copy.standInUntilFirstFold(model);
      assert.equal(tf.memory().numTensors, tensors, 'the stand-in leaves no tensors behind');
      assert.deepEqual(Array.from(await copy.model.getWeights()[1]!.data()), [11, 11]);
      assert.equal(copy.count, 0);
    } finally {
      copy.dispose();
      start.dispose();
    }
    for (const v of await ema.model.getWeights()[0]!.data()) assert.ok(Math.abs(v - 10) < 1e-5, String(v));
    ema.update(model, 4); // d = min(0.9801, 2/11)
    const d = 2 / 11;
    for (const v of await ema.model.getWeights()[1]!.data()) assert.ok(Math.abs(v - (d * 10 + (1 - d) * 11)) < 1e-5, String(v));
    const other = dense(tf, 99);
    ema.standInUntilFirstFold(other); // folded already: no effect
    other.dispose();
    for (const v of await ema.model.getWeights()[1]!.data()) assert.ok(Math.abs(v - (d * 10 + (1 - d) * 11)) < 1e-5, String(v));

    const dir = join(tmp, 'ckpt');
    await saveModel({ dir, model, extraBinary: await ema.encode() });
    assert.deepEqual(JSON.parse(await readFile(join(dir, EMA_JSON), 'utf8')).updates, 2);
    assert.equal((await readFile(join(dir, EMA_BIN))).length, 4 * (3 * 2 + 2));
    const back = await WeightAverage.restore(dir, model, { decay: 0.99, every: 2 });
    try {
      assert.equal(back.count, 2);
      assert.deepEqual(Array.from(await back.model.getWeights()[1]!.data()), Array.from(await ema.model.getWeights()[1]!.data()));
    } finally {
      back.dispose();
    }
    const fresh = await WeightAverage.restore(join(tmp, 'nothing-here'), model, { decay: 0.99 });
    assert.equal(fresh.count, 0);
    fresh.dispose();
  } finally {
    ema.dispose();
    model.dispose();
  }
});

test('a decay outside (0, 1) or a bad interval is refused, naming the value', async () => {
  const tf = loadTf();
  const model = dense(tf, 0);
  try {
    await assert.rejects(WeightAverage.create(model, { decay: 1 }), { name: 'ConfigError', message: 'emaDecay 1 is not between 0 and 1 (0 turns the average off)' });
    await assert.rejects(WeightAverage.create(model, { decay: 0.9, every: 0 }), { name: 'ConfigError', message: "the weight average's interval 0 is not a positive integer" });
  } finally {
    model.dispose();
  }
});

test('a damaged weight average in a checkpoint is a CacheError naming its file, and frees the copy it made', async () => {
  const tf = loadTf();
  const model = dense(tf, 1);
  const ema = await WeightAverage.create(model, { decay: 0.99 });
  const wide = tf.sequential({ layers: [tf.layers.dense({ units: 3, inputShape: [3] })] });
  const other = await WeightAverage.create(wide, { decay: 0.99 });
  const dir = join(tmp, 'damaged');
  const [json, bin] = [join(dir, EMA_JSON), join(dir, EMA_BIN)];
  try {
    const restore = async (damage: () => Promise<void>): Promise<WeightAverage> => {
      await saveModel({ dir, model, extraBinary: await ema.encode() });
      await damage();
      return WeightAverage.restore(dir, model, { decay: 0.99 });
    };
    const unreadable = (file: string, why: string) => ({ name: 'CacheError', message: `the weight average ${JSON.stringify(file)} cannot be read (${why})` });
    const before = tf.memory().numTensors;
    await assert.rejects(restore(() => truncate(bin, 8)), unreadable(bin, 'Based on the provided shape, [3,2], the tensor should have 6 values but has 2'));
    await assert.rejects(restore(() => truncate(bin, 24)), unreadable(bin, 'Based on the provided shape, [2], the tensor should have 2 values but has 0'));
    await assert.rejects(restore(() => truncate(bin, 10)), unreadable(bin, 'byte length of Float32Array should be a multiple of 4'));
    await assert.rejects(restore(() => rm(bin)), unreadable(bin, `ENOENT: no such file or directory, open '${bin}'`));
    await assert.rejects(restore(() => writeFile(json, '{"upd')), (err: unknown) => {
      assert.ok(err instanceof Error && err.name === 'CacheError', String(err));
      assert.match(err.message, new RegExp(`^the weight average ${JSON.stringify(json).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} cannot be read \\(.*JSON.*\\)$`));
      assert.ok(err.cause instanceof SyntaxError);
      return true;
    });
    await assert.rejects(restore(() => writeFile(json, '{}')), unreadable(json, 'it holds no list of weights ("specs")'));
    // Another model's average, with as many weights of other shapes; one with another count of weights.
    await assert.rejects(restore(async () => {
      const files = await other.encode();
      await writeFile(json, files[EMA_JSON] ?? '');
      await writeFile(bin, files[EMA_BIN] ?? new Uint8Array());
    }), (err: unknown) => {
      assert.ok(err instanceof Error && err.name === 'CacheError', String(err));
      assert.match(err.message, new RegExp(`^the weight average ${JSON.stringify(bin).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} does not fit the model: its weight "0:dense_Dense\\d+/kernel" \\(Shape mismatch: \\[3,2\\] vs\\. \\[3,3\\]\\)$`));
      return true;
    });
    await assert.rejects(restore(() => writeFile(json, JSON.stringify({ updates: 1, decay: 0.99, specs: [] }))), {
      name: 'CacheError',
      message: `the weight average in ${JSON.stringify(json)} holds 0 weights, the model 2: it belongs to another network`,
    });
    assert.equal(tf.memory().numTensors, before, 'a failed restore leaves no tensors behind');
  } finally {
    ema.dispose();
    other.dispose();
    wide.dispose();
    model.dispose();
  }
});

test('a run with the average validates and ships it, keeps it in the last checkpoint, and resumes it exactly', async () => {
  const tf = loadTf();
  const config = { epochs: 4, dropout: 0, learningRate: 3e-3, patience: 10, emaDecay: 0.9 };
  const opts = { data: labeled, preset: 'smoke' as const, cacheDir: join(tmp, 'cache'), config };
  const before = tf.memory().numTensors;
  const straight = await train({ ...opts, out: join(tmp, 'run-a') });
  assert.equal(tf.memory().numTensors, before, 'training leaves no tensors behind');
  assert.match(straight.card.training.weights ?? '', /^moving average \(decay 0\.9 per step, \d+ updates\)$/);
  assert.ok(JSON.parse(await readFile(join(straight.runDir, 'checkpoints', 'last', EMA_JSON), 'utf8')).updates > 0);
  await train({ ...opts, out: join(tmp, 'run-b'), stopAfterEpochs: 2 });
  const resumed = await train({ ...opts, out: join(tmp, 'run-b'), resume: true });
  for (const [i, rec] of straight.history.entries()) {
    const other = resumed.history[i];
    assert.ok(other && Math.abs(rec.valLoss - other.valLoss) < 1e-4, `epoch ${i + 1}: val ${rec.valLoss} vs ${other?.valLoss}`);
  }
  // A resume whose average is damaged stops with the file named, and leaves no tensors behind.
  const emaJson = join(tmp, 'run-b', 'checkpoints', 'last', EMA_JSON);
  await writeFile(emaJson, '{"upd');
  const beforeResume = tf.memory().numTensors;
  await assert.rejects(train({ ...opts, out: join(tmp, 'run-b'), resume: true }), { name: 'CacheError', message: /^the weight average ".*ema\.json" cannot be read \(.*JSON.*\)$/ });
  assert.equal(tf.memory().numTensors, beforeResume, 'a failed resume leaves no tensors behind');
});

test('a run of fewer steps than the average folds in validates and ships what it trained, not its random start', async () => {
  // About 38 training images in batches of 16: 3 steps, fewer than the average's interval of 4.
  const config = { epochs: 1, batchSize: 16, dropout: 0, emaDecay: 0.9 };
  const r = await train({ data: labeled, preset: 'smoke', cacheDir: join(tmp, 'cache'), config, out: join(tmp, 'run-short') });
  assert.match(r.card.training.weights ?? '', /^moving average \(decay 0\.9 per step, 0 updates\)$/);
  const shipped = await loadLayersModelFromDir(join(r.runDir, 'model'));
  const trained = await loadLayersModelFromDir(join(r.runDir, 'checkpoints', 'last'));
  try {
    const a = shipped.getWeights();
    const b = trained.getWeights();
    assert.equal(a.length, b.length);
    for (const [i, w] of a.entries()) assert.deepEqual(Array.from(await w.data()), Array.from(await (b[i] as typeof w).data()), `weight ${i}`);
  } finally {
    shipped.dispose();
    trained.dispose();
  }
});
