// Training on a separable fixture with the tiny model: learning, checkpoints, exact resume, NaN guard, no leaks.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { cp, mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { TRACE_AUGMENT } from '../lib/augment.js';
import { alignSlots, recoverDirSwap, writeDirAtomic } from '../lib/checkpoint.js';
import { DEFAULTS, resolveConfig, type Config } from '../lib/config.js';
import { CacheError, OutputError } from '../lib/errors.js';
import { loadModel, predict } from '../lib/evaluate.js';
import { sha256 } from '../lib/fsx.js';
import { readManifest } from '../lib/manifest.js';
import type { Progress } from '../lib/progress.js';
import { buildModel } from '../lib/models.js';
import { relabel } from '../lib/relabel.js';
import { loadTf } from '../lib/tf.js';
import { checkRecipe, classWeights, configHash, learningRateAt, setLearningRate, stepSeed, train, trainStep, TrainingError, presetOfRun } from '../lib/train.js';
import { datasetFiles, writeTree } from './helpers/fixtures.js';

/** A model card as JSON, to change a field of. */
type ModelCardJson = { training: Record<string, unknown>; validation: Record<string, unknown> } & Record<string, unknown>;

let tmp: string;
let labeled: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-train-'));
  labeled = join(tmp, 'labeled');
  await writeTree(join(tmp, 'src'), await datasetFiles({ perClass: { train: 16, test: 4 } }));
  await relabel({ from: join(tmp, 'src'), out: labeled });
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const base = { epochs: 4, dropout: 0, learningRate: 3e-3, patience: 10 };

test('learningRateAt warms up linearly, then decays along a cosine to the floor', () => {
  const c = resolveConfig(undefined, { epochs: 10, warmupEpochs: 1, learningRate: 1e-3, minLearningRate: 1e-5 });
  assert.equal(learningRateAt(c, 0, 10), 1e-5 + (1e-3 - 1e-5) / 10);
  assert.equal(learningRateAt(c, 9, 10), 1e-3);
  assert.equal(learningRateAt(c, 10, 10), 1e-3);
  assert.ok(Math.abs(learningRateAt(c, 55, 10) - (1e-5 + (1e-3 - 1e-5) / 2)) < 1e-12);
  assert.equal(learningRateAt(c, 100, 10), 1e-5);
  const p = resolveConfig(undefined, { schedule: 'plateau', warmupEpochs: 0, learningRate: 1e-3 });
  assert.equal(learningRateAt(p, 50, 10, 0.25), 2.5e-4);
});

test('setLearningRate reaches the step of both optimizers (SGD keeps its rate in a tensor)', () => {
  const tf = loadTf();
  // One step from 0 with gradient 1: Adam moves by the rate; Nesterov momentum 0.9 by the rate x (1 + 0.9).
  for (const [name, make, factor] of [['adam', () => tf.train.adam(1), 1], ['sgd', () => tf.train.momentum(1, 0.9, true), 1.9]] as const) {
    const optimizer = make();
    const v = tf.variable(tf.zeros([1]), true, `lr-${name}`);
    setLearningRate(optimizer, 0.25);
    tf.tidy(() => optimizer.applyGradients([{ name: v.name, tensor: tf.ones([1]) }]));
    assert.ok(Math.abs((v.dataSync()[0] ?? 0) + 0.25 * factor) < 1e-5, `${name}: ${v.dataSync()[0]}`);
    optimizer.dispose();
    v.dispose();
  }
});

test('alignSlots matches saved optimizer slots to the weights by name, whatever order they were made in', () => {
  const saved = ['iter', 'a/kernel_1/m', 'b/gamma_1/m', 'a/kernel_1/v', 'b/gamma_1/v'].map((name) => ({ name }));
  assert.deepEqual(alignSlots(saved, ['b/gamma', 'a/kernel'], 'o.json').map((s) => s.name), ['iter', 'b/gamma_1/m', 'a/kernel_1/m', 'b/gamma_1/v', 'a/kernel_1/v']);
  const momentum = ['iter', 'a/kernel/momentum', 'b/gamma/momentum'].map((name) => ({ name }));
  assert.deepEqual(alignSlots(momentum, ['b/gamma_3', 'a/kernel_3'], 'o.json').map((s) => s.name), ['iter', 'b/gamma/momentum', 'a/kernel/momentum']);
  assert.deepEqual(alignSlots([{ name: 'iter' }], ['a/kernel'], 'o.json'), [{ name: 'iter' }]);
  assert.throws(() => alignSlots(momentum, ['a/kernel', 'c/beta'], 'o.json'), {
    name: 'ConfigError',
    message: 'the optimizer state "o.json" has no "momentum" slot for the weight "c/beta"',
  });
  assert.throws(() => alignSlots(momentum, ['a/kernel'], 'o.json'), {
    name: 'ConfigError',
    message: 'the optimizer state "o.json" holds 2 "momentum" slots, but the model has 1 trainable weights',
  });
});

test('trainStep with dropoutSeed draws fresh dropout masks each step, reproducibly; the layers keep their own seeds', () => {
  const tf = loadTf();
  const model = buildModel({ name: 'tiny', imageSize: 16, width: 4, dropout: 0.5, seed: 3 });
  const dropout = model.layers.find((l) => l.getClassName() === 'Dropout') as unknown as { seed?: number };
  const built = dropout.seed;
  const start = model.getWeights().map((w) => w.clone());
  const xs = tf.randomUniform([4, 16, 16, 1], 0, 1, 'float32', 5);
  const ys = tf.oneHot(tf.tensor1d([0, 1, 2, 1], 'int32'), 3);
  const w = tf.ones([3]);
  // The loss of one SGD step from the same weights: it depends on the masks only.
  const lossWith = (dropoutSeed: number | undefined): number => {
    model.setWeights(start);
    const optimizer = tf.train.sgd(0);
    const { loss, correct } = trainStep({ model, optimizer, xs, ys, classWeights: w, labelSmoothing: 0, ...(dropoutSeed !== undefined ? { dropoutSeed } : {}) });
    const value = loss.dataSync()[0] ?? NaN;
    tf.dispose([loss, correct]);
    optimizer.dispose();
    return value;
  };
  try {
    // Without a step seed, tfjs draws the same masks at every call (its generator restarts from the layer's seed).
    assert.equal(lossWith(undefined), lossWith(undefined));
    assert.equal(lossWith(stepSeed(42, 0)), lossWith(stepSeed(42, 0)), 'the same step, the same masks');
    assert.notEqual(lossWith(stepSeed(42, 0)), lossWith(stepSeed(42, 1)), 'another step, other masks');
    assert.equal(dropout.seed, built, 'the layer keeps the seed it was built with');
  } finally {
    tf.dispose([...start, xs, ys, w]);
    model.dispose();
  }
});

test('classWeights balance the classes: N / (K * n_c)', () => {
  assert.deepEqual(classWeights([1349, 2538, 1345], 'balanced').map((w) => Number(w.toFixed(4))), [1.2928, 0.6872, 1.2967]);
  assert.deepEqual(classWeights([5, 10, 0], 'none'), [1, 1, 1]);
});

test('the tiny model learns the separable fixture, saves best/last/model, and predictions survive a reload', async () => {
  const tf = loadTf();
  const before = tf.memory().numTensors;
  const epochs: number[] = [];
  const r = await train({ data: labeled, out: join(tmp, 'run-a'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: base, onEpoch: (e) => epochs.push(e.loss) });
  assert.equal(tf.memory().numTensors, before, 'training leaves no tensors behind');
  assert.equal(r.history.length, 4);
  assert.ok((epochs.at(-1) ?? 1) < (epochs[0] ?? 0) / 2, `loss falls: ${epochs.join(', ')}`);
  assert.ok(r.card.validation.accuracy >= 0.6, `validation accuracy ${r.card.validation.accuracy}`);
  const history = JSON.parse(await readFile(join(r.runDir, 'history.json'), 'utf8')) as unknown[];
  assert.equal(history.length, 4);
  assert.deepEqual(Object.keys(r.card), ['format', 'version', 'classes', 'imageSize', 'preprocessing', 'model', 'training', 'data', 'validation', 'createdAt']);

  const testRow = (await readManifest(labeled)).find((row) => row.split === 'test' && row.label === 'virus');
  const image = join(labeled, testRow?.file ?? 'missing');
  const m1 = await loadModel(r.modelDir);
  const m2 = await loadModel(join(r.runDir, 'checkpoints', 'best'));
  try {
    const [a] = await predict(m1, [image]);
    const [b] = await predict(m2, [image]);
    assert.deepEqual(a, b);
    const after1 = tf.memory().numTensors;
    await predict(m1, [image, { name: 'bytes', data: await readFile(image) }]);
    assert.equal(tf.memory().numTensors, after1, 'predict leaves no tensors behind');
  } finally {
    m1.dispose();
    m2.dispose();
  }
});

// Op by op with Adam (the smoke preset), and one TensorFlow graph per step with SGD: the optimizer's state survives.
// ResNets: loaded from a checkpoint, they make their variables in another order than when built (see alignSlots).
const resnet = { model: 'resnet', modelWidth: 4 };
for (const [engine, config] of [['eager, Adam', { ...base, ...resnet }], ['graph, SGD, weight average', { ...base, ...resnet, graphOps: true, optimizer: 'sgd', learningRate: 0.05, emaDecay: 0.9 }]] as const) {
  test(`an interrupted and resumed run ends where an uninterrupted one does (loss within 1e-4; ${engine})`, async () => {
    const name = engine.startsWith('graph') ? 'g' : 'e';
    const straight = await train({ data: labeled, out: join(tmp, `run-b${name}`), preset: 'smoke', cacheDir: join(tmp, 'cache'), config });
    const part = await train({ data: labeled, out: join(tmp, `run-c${name}`), preset: 'smoke', cacheDir: join(tmp, 'cache'), config, stopAfterEpochs: 2 });
    assert.equal(part.history.length, 2);
    const resumed = await train({ data: labeled, out: join(tmp, `run-c${name}`), preset: 'smoke', cacheDir: join(tmp, 'cache'), config, resume: true });
    assert.equal(resumed.history.length, 4);
    for (const [i, rec] of straight.history.entries()) {
      const other = resumed.history[i];
      assert.ok(other && Math.abs(rec.loss - other.loss) < 1e-4, `epoch ${i + 1}: ${rec.loss} vs ${other?.loss}`);
      assert.ok(other && Math.abs(rec.valLoss - other.valLoss) < 1e-4, `epoch ${i + 1}: val ${rec.valLoss} vs ${other?.valLoss}`);
    }
  });
}

test("an interrupted and resumed run of the smoke preset (dropout, augmentation, Adam op by op) ends exactly where an uninterrupted one does", async () => {
  const config = { epochs: 3, patience: 10 };
  const common = { data: labeled, preset: 'smoke', cacheDir: join(tmp, 'cache'), config, augment: TRACE_AUGMENT } as const;
  const straight = await train({ ...common, out: join(tmp, 'run-exact-a') });
  await train({ ...common, out: join(tmp, 'run-exact-b'), stopAfterEpochs: 1 });
  // Adam's beta powers travel with the checkpoint: tfjs's setWeights would make them beta^(t+1), not the float32 products.
  const saved = JSON.parse(await readFile(join(tmp, 'run-exact-b', 'checkpoints', 'last', 'optimizer.json'), 'utf8')) as { betaPowers?: number[] };
  assert.equal(saved.betaPowers?.length, 2);
  // Powers that cannot be the step count's (a hand-edited or damaged file) are ignored, as in an older checkpoint.
  await cp(join(tmp, 'run-exact-b'), join(tmp, 'run-exact-d'), { recursive: true });
  const edited = join(tmp, 'run-exact-d', 'checkpoints', 'last', 'optimizer.json');
  await writeFile(edited, JSON.stringify({ ...JSON.parse(await readFile(edited, 'utf8')), betaPowers: [1, 1] }));
  const tolerant = await train({ ...common, out: join(tmp, 'run-exact-d'), resume: true });
  for (const [i, rec] of straight.history.entries()) assert.ok(Math.abs(rec.loss - (tolerant.history[i]?.loss ?? Number.NaN)) < 1e-2, `epoch ${i + 1}`);
  const said: string[] = [];
  const onProgress = (p: { message?: string | undefined }): void => {
    if (p.message !== undefined) said.push(p.message);
  };
  const resumed = await train({ ...common, out: join(tmp, 'run-exact-b'), resume: true, onProgress });
  const figures = (h: typeof straight.history) => h.map((r) => [r.loss, r.accuracy, r.valLoss, r.valAccuracy, r.valMacroF1]);
  assert.deepEqual(figures(resumed.history), figures(straight.history));
  // What a resume found is said: where it goes on, that the run is complete, or that there was nothing to resume.
  const again = await train({ ...common, out: join(tmp, 'run-exact-b'), resume: true, onProgress });
  assert.equal(again.history.length, 3);
  // Nothing to resume is no news to run and the notebooks, which always resume (the CLI says it for train --resume).
  const fresh = await train({ ...common, out: join(tmp, 'run-exact-c'), resume: true, onProgress });
  assert.equal(fresh.history.length, 3);
  const q = (name: string): string => JSON.stringify(join(tmp, name));
  assert.deepEqual(said.filter((m) => /resum|complete/.test(m)), [
    `resuming ${q('run-exact-b')} after epoch 1 of 3`,
    `${q('run-exact-b')} is already complete (3 of 3 epochs): nothing left to train`,
  ]);
});

test('a run resumes only with the configuration it was started with', async () => {
  await assert.rejects(
    train({ data: labeled, out: join(tmp, 'run-ce'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...base, learningRate: 0.1 }, resume: true }),
    {
      name: 'ConfigError',
      message: `cannot resume ${JSON.stringify(join(tmp, 'run-ce'))}: it was started with another configuration: model "resnet" (now "tiny"), ` +
        'modelWidth 4 (now default), learningRate 0.003 (now 0.1); a resume continues the same run: give the settings it was started with, or train into another --out',
    },
  );
  // Refused before any image is prepared: here a 48 px cache that does not exist yet.
  const stages = new Set<string>();
  await assert.rejects(
    train({ data: labeled, out: join(tmp, 'run-ce'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...base, ...resnet, imageSize: 48 }, resume: true, onProgress: (p) => void stages.add(p.stage) }),
    { name: 'ConfigError', message: /: it was started with another configuration: imageSize 32 \(now 48\); a resume continues/ },
  );
  assert.deepEqual([...stages], []);
  // A setting added later (here the ResNet's blocks per stage) counts as soon as it leaves its default.
  await assert.rejects(
    train({ data: labeled, out: join(tmp, 'run-ce'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...base, ...resnet, modelDepth: '1,1,1,1' }, resume: true }),
    {
      name: 'ConfigError',
      message: `cannot resume ${JSON.stringify(join(tmp, 'run-ce'))}: it was started with another configuration: modelDepth default (now "1,1,1,1"); ` +
        'a resume continues the same run: give the settings it was started with, or train into another --out',
    },
  );
  // Without --resume, a folder that holds a run is refused before any work, its files untouched.
  const run = join(tmp, 'run-ce');
  const weights = await readFile(join(run, 'model', 'weights.bin'));
  await assert.rejects(train({ data: labeled, out: run, preset: 'smoke', cacheDir: join(tmp, 'cache'), config: base }), {
    name: 'ConfigError',
    message: `"${run}" already holds a run (history.json, checkpoints, model): continue it with --resume, train into another --out, or remove it to start over`,
  });
  assert.deepEqual(await readFile(join(run, 'model', 'weights.bin')), weights);
});

test('a default given explicitly is the same configuration: hashes as before, and a run started without it resumes with it', async () => {
  // Configurations without explicit defaults hash exactly as they always did: the shipped model's run and old runs resume.
  const hashes = {
    defaults: '["resnet",0,224,32,"adam",0.001,0.00001,1,"cosine",0.0001,0.05,"balanced",42,0.1,0.2,0.998]',
    smoke: '["tiny",0,32,8,"adam",0.001,0.00001,0,"cosine",0.0001,0.05,"balanced",42,0.2,0.2,0]',
    cpu: '["resnet",16,128,32,"adam",0.001,0.00001,1,"cosine",0.0001,0.05,"balanced",42,0.1,0.2,0.998]',
    gpu: '["resnet",16,128,32,"sgd",0.1,0.0001,1,"cosine",0.0005,0.05,"balanced",42,0.1,0.2,0.998]',
  };
  assert.deepEqual(
    { defaults: configHash(resolveConfig()), smoke: configHash(resolveConfig('smoke')), cpu: configHash(resolveConfig('cpu')), gpu: configHash(resolveConfig('gpu')) },
    hashes,
  );
  const shipped = JSON.parse(await readFile('models/default/pneumotype.json', 'utf8')) as { training: { config: Partial<Config> } };
  assert.equal(configHash({ ...DEFAULTS, ...shipped.training.config }), hashes.gpu);
  assert.equal(
    configHash(resolveConfig('cpu', { modelDepth: '3,4,6,3', mixup: 0.2, antialias: true })),
    '["resnet",16,128,32,"adam",0.001,0.00001,1,"cosine",0.0001,0.05,"balanced",42,0.1,0.2,0.998,{"mixup":0.2},{"antialias":true},{"modelDepth":"3,4,6,3"}]',
  );
  // The resnet's own depth and width, given explicitly, are the same network: the same hash.
  assert.equal(configHash(resolveConfig('cpu', { modelDepth: '2,2,2,2' })), hashes.cpu);
  assert.equal(configHash(resolveConfig('cpu', { modelDepth: ' 2, 2,2,2 ' })), hashes.cpu);
  assert.equal(configHash(resolveConfig(undefined, { modelWidth: 32, modelDepth: '2,2,2,2' })), hashes.defaults);
  assert.notEqual(configHash(resolveConfig('cpu', { modelDepth: '2,2,2' })), hashes.cpu);
  assert.notEqual(configHash(resolveConfig('smoke', { modelWidth: 16 })), hashes.smoke);

  // run-ce (above): a resnet run started without modelDepth, resumed naming its default (nothing left to train).
  const run = join(tmp, 'run-ce');
  const opts = { data: labeled, out: run, preset: 'smoke', cacheDir: join(tmp, 'cache'), resume: true } as const;
  assert.equal((await train({ ...opts, config: { ...base, ...resnet, modelDepth: '2,2,2,2' } })).history.length, 4);
  // A run started with the default given explicitly recorded that in its hash (before defaults were aligned): it resumes too.
  const statePath = join(run, 'checkpoints', 'last', 'trainer.json');
  const state = JSON.parse(await readFile(statePath, 'utf8')) as { configHash: string };
  await writeFile(statePath, JSON.stringify({ ...state, configHash: state.configHash.replace(/\]$/, ',{"modelDepth":"2,2,2,2"}]') }));
  for (const modelDepth of ['2,2,2,2', '']) assert.equal((await train({ ...opts, config: { ...base, ...resnet, modelDepth } })).history.length, 4, modelDepth);
  await writeFile(statePath, JSON.stringify(state));
});

test("a resume compares plateauPatience (plateau schedule), maxSampleWeight and the grouping CSV's content (group balancing)", async () => {
  const out = join(tmp, 'run-plateau');
  const csv = join(tmp, 'groups.csv');
  const names = (await readManifest(labeled)).filter((r) => r.split === 'train').map((r) => r.file.split('/').at(-1) ?? '');
  const groups = `file,grp\n${names.map((f, i) => `${f},g${i % 2}`).join('\n')}\n`;
  await writeFile(csv, groups);
  const config = { ...base, epochs: 2, schedule: 'plateau', plateauPatience: 1 };
  const opts = { data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), balanceGroups: { csv, column: 'grp' } } as const;
  const first = await train({ ...opts, config, stopAfterEpochs: 1 });
  assert.equal(first.card.training.balanceGroups, 'groups.csv:grp');
  assert.equal(first.card.training.balanceGroupsSha256, sha256(groups));
  const refused = (what: string): { name: string; message: string } => ({
    name: 'ConfigError',
    message: `cannot resume ${JSON.stringify(out)}: it was started with ${what}; a resume continues the same run: give the settings it was started with, or train into another --out`,
  });
  await assert.rejects(train({ ...opts, config: { ...config, plateauPatience: 2, maxSampleWeight: 3 }, resume: true }), refused('plateauPatience 1 (now 2), maxSampleWeight 10 (now 3)'));
  // The same file name and column, other groups.
  const regrouped = `file,grp\n${names.map((f) => `${f},g0`).join('\n')}\n`;
  await writeFile(csv, regrouped);
  await assert.rejects(
    train({ ...opts, config, resume: true }),
    refused(`group balancing "groups.csv:grp" from a CSV with SHA-256 ${sha256(groups).slice(0, 12)}… (now ${sha256(regrouped).slice(0, 12)}…)`),
  );
  await writeFile(csv, groups);
  assert.equal((await train({ ...opts, config, resume: true })).history.length, 2);
});

test('recipe values that no training could use are refused before any work, one ConfigError naming each; the presets pass', async () => {
  for (const preset of [undefined, 'smoke', 'cpu', 'gpu'] as const) checkRecipe(resolveConfig(preset));
  // A peak equal to its floor is a constant rate; 0 and 0, no learning at all.
  checkRecipe(resolveConfig(undefined, { learningRate: 1e-5 }));
  checkRecipe(resolveConfig(undefined, { learningRate: 0, minLearningRate: 0 }));
  const cases: Array<[Partial<Config>, string]> = [
    [{ schedule: 'bogus' }, 'schedule "bogus" is not valid: expected "cosine" or "plateau"'],
    [{ classWeights: 'bogus' }, 'classWeights "bogus" is not valid: expected "balanced" or "none"'],
    [{ labelSmoothing: 3 }, 'labelSmoothing 3 is not valid: expected a number from 0 up to (not including) 1'],
    [{ learningRate: -1 }, 'learningRate -1 is not valid: expected a finite number of at least 0'],
    [{ learningRate: Number.NaN }, 'learningRate NaN is not valid: expected a finite number of at least 0'],
    [{ minLearningRate: -1e-5 }, 'minLearningRate -0.00001 is not valid: expected a finite number of at least 0'],
    [{ warmupEpochs: Number.NaN }, 'warmupEpochs NaN is not valid: expected a finite number of at least 0'],
    [{ weightDecay: -1 }, 'weightDecay -1 is not valid: expected a finite number of at least 0'],
    [{ dropout: 1.5 }, 'dropout 1.5 is not valid: expected a number from 0 up to (not including) 1'],
    [{ emaDecay: -0.5 }, 'emaDecay -0.5 is not valid: expected 0 (off) or a number above 0 and below 1, e.g. 0.998'],
    [{ emaDecay: 1 }, 'emaDecay 1 is not valid: expected 0 (off) or a number above 0 and below 1, e.g. 0.998'],
    [{ patience: 0 }, 'patience 0 is not valid: expected an integer of at least 1'],
    [{ plateauPatience: 1.5 }, 'plateauPatience 1.5 is not valid: expected an integer of at least 1'],
    [{ maxSampleWeight: 0.5 }, 'maxSampleWeight 0.5 is not valid: expected a number of at least 1'],
    [{ stallSeconds: Number.NaN }, 'stallSeconds NaN is not valid: expected a number of seconds of at least 0 (0: no stall guard)'],
    [{ mixup: -1 }, 'mixup -1 is not valid: expected 0 (off) or a number of at least 0.01, e.g. 0.2'],
    [{ optimizer: 'rmsprop' }, 'optimizer "rmsprop" is not one of "adam", "sgd"'],
    // A peak below the floor would run the schedule backwards: the warm-up down, the decay up.
    [{ learningRate: 1e-6 }, 'learningRate 0.000001 is below minLearningRate 0.00001, the floor the schedule warms up from and decays to: give a learningRate of at least 0.00001, or a minLearningRate of at most 0.000001'],
  ];
  for (const [config, message] of cases) {
    await assert.rejects(train({ data: join(tmp, 'no-such-data'), out: join(tmp, 'run-bad-recipe'), preset: 'smoke', config }), { name: 'ConfigError', message }, message);
  }
  assert.equal(existsSync(join(tmp, 'run-bad-recipe')), false);
  assert.throws(() => checkRecipe(resolveConfig('gpu', { learningRate: 5e-5 })), {
    name: 'ConfigError',
    message: 'learningRate 0.00005 is below minLearningRate 0.0001, the floor the schedule warms up from and decays to: give a learningRate of at least 0.0001, or a minLearningRate of at most 0.00005',
  });
});

test('resume refuses other data and a damaged checkpoint with the file named, and trains no further once stopped early', async () => {
  const run = join(tmp, 'run-guard');
  const opts = { preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...base, epochs: 6, patience: 1, learningRate: 0, minLearningRate: 0 } } as const;
  // No learning (only the batch-norm statistics move): patience 1 stops the run long before its 6 epochs.
  const trainEvents: Progress[] = [];
  const stopped = await train({ data: labeled, out: run, ...opts, onProgress: (p) => void (p.stage === 'train' && trainEvents.push(p)) });
  assert.ok(stopped.stoppedEarly && stopped.history.length < 6, `stopped after ${stopped.history.length} epochs`);
  // The bar of a run stopped early ends full: the epochs it will not train are no longer counted as work to do.
  const barEnd = trainEvents.filter((p) => p.total !== undefined).at(-1);
  assert.ok(barEnd?.total !== undefined && barEnd.done === barEnd.total, `last train progress ${JSON.stringify(barEnd)}`);
  assert.ok(trainEvents.some((p) => p.total !== undefined && p.total > barEnd.total!), 'the total shrank from all 6 epochs');
  await rm(join(run, 'model'), { recursive: true });
  const again = await train({ data: labeled, out: run, ...opts, resume: true });
  assert.equal(again.history.length, stopped.history.length, 'killed before its model was written, it exports the best and trains no further');
  assert.equal(again.stoppedEarly, true);

  // Other data: a labelled folder with one test image fewer has another manifest.
  const other = join(tmp, 'labeled-other');
  await writeTree(join(tmp, 'src-other'), (await datasetFiles({ perClass: { train: 16, test: 4 } })).slice(1));
  await relabel({ from: join(tmp, 'src-other'), out: other });
  await assert.rejects(train({ data: other, out: run, ...opts, resume: true }), {
    name: 'ConfigError',
    message: new RegExp(`^cannot resume "${run}": it was trained on other data \\(manifest SHA-256 [0-9a-f]{12}…, "${other}" has [0-9a-f]{12}…\\): train into another --out, or remove "${run}" to start over$`),
  });

  // Pixels an older decoding made (ICC profiles applied): not continued with the new decoding.
  const last = join(run, 'checkpoints', 'last');
  const lastCard = join(last, 'pneumotype.json');
  const lastCardText = await readFile(lastCard, 'utf8');
  const older = JSON.parse(lastCardText) as { data: Record<string, unknown> };
  assert.equal(older.data.decoding, 4);
  older.data.decoding = 3;
  await writeFile(lastCard, JSON.stringify(older));
  await assert.rejects(train({ data: labeled, out: run, ...opts, resume: true }), {
    name: 'ConfigError',
    message: `cannot resume "${run}": its images were decoded by decoding version 3, and this pneumotype decodes them as version 4 ` +
      `(see CACHE_VERSION in lib/cache.ts): train into another --out, or remove "${run}" to start over`,
  });
  await writeFile(lastCard, lastCardText);

  // A damaged checkpoint: the trainer state, then the weights.
  await writeFile(join(last, 'trainer.json'), '{"epochsDone": 2,');
  await assert.rejects(train({ data: labeled, out: run, ...opts, resume: true }), {
    name: 'CacheError',
    message: new RegExp(`^cannot resume "${run}": its trainer state "${join(last, 'trainer.json')}" cannot be read \\(.*JSON.*\\); remove "${run}" to start over$`),
  });
  const cut = join(tmp, 'cut-model');
  await cp(join(run, 'model'), cut, { recursive: true });
  const whole = await readFile(join(cut, 'weights.bin'));
  const described = `but its model.json describes ${whole.length}`;
  await truncate(join(cut, 'weights.bin'), 100);
  await assert.rejects(loadModel(cut), { name: 'CacheError', message: `the weights of "${join(cut, 'model.json')}" hold 100 bytes, ${described}: a file cut short, or from another model` });
  // More bytes than described (a 1 GiB file beside a small model would be read whole): refused before reading.
  await writeFile(join(cut, 'weights.bin'), Buffer.concat([whole, Buffer.alloc(4096)]));
  await assert.rejects(loadModel(cut), {
    name: 'CacheError',
    message: `the weights of "${join(cut, 'model.json')}" hold ${whole.length + 4096} bytes, ${described}: files from another model, or with something appended`,
  });
  // A weights path that leaves the model's folder (../secret.bin) is never read.
  const json = JSON.parse(await readFile(join(cut, 'model.json'), 'utf8')) as { weightsManifest: { paths: string[] }[] };
  await writeFile(join(tmp, 'secret.bin'), whole);
  // A link inside the folder that leads out of it counts as outside too.
  await symlink(join(tmp, 'secret.bin'), join(cut, 'linked.bin'));
  for (const outside of ['../secret.bin', join(tmp, 'secret.bin'), 'linked.bin']) {
    await writeFile(join(cut, 'model.json'), JSON.stringify({ ...json, weightsManifest: json.weightsManifest.map((g) => ({ ...g, paths: [outside] })) }));
    await assert.rejects(loadModel(cut), {
      name: 'CacheError',
      message: `the model "${join(cut, 'model.json')}" names the weights file ${JSON.stringify(outside)}, outside its folder: expected a file inside "${cut}"`,
    });
  }
  await writeFile(join(cut, 'model.json'), JSON.stringify(json));
  await rm(join(cut, 'linked.bin'));
  await rm(join(cut, 'weights.bin'));
  await assert.rejects(loadModel(cut), { name: 'CacheError', message: new RegExp(`^cannot read the weights "${join(cut, 'weights.bin')}" of "${join(cut, 'model.json')}" \\(ENOENT`) });
});

test('epochs and batchSize must be whole numbers of at least 1, checked before any work', async () => {
  for (const [key, value, shown] of [['epochs', 1.5, '1.5'], ['epochs', 0, '0'], ['batchSize', -1, '-1']] as const) {
    await assert.rejects(train({ data: join(tmp, 'no-such-data'), out: join(tmp, 'run-bad'), preset: 'smoke', config: { [key]: value } }), {
      name: 'ConfigError',
      message: `${key} ${shown} is not valid: expected an integer of at least 1`,
    });
  }
});

test('a diverging run stops with a clear error, keeps the last good checkpoint and leaves no tensors behind', async () => {
  const tf = loadTf();
  const before = tf.memory().numTensors;
  await assert.rejects(
    train({ data: labeled, out: join(tmp, 'run-nan'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...base, learningRate: 1e30, warmupEpochs: 0, labelSmoothing: 0, batchSize: 1 } }),
    (err: unknown) => {
      assert.ok(err instanceof TrainingError, String(err));
      // Batches of one: the loss is checked every 20 steps inside the epoch, where the running sums must be let go.
      assert.match(err.message, /^training diverged in epoch 1 \(the training loss became (NaN|Infinity) at step 20, learning rate \d(\.\d+)?e\+29\); no epoch had finished, so there is no checkpoint: start a new run in another output folder with a lower learning rate \(now 1e\+30\)$/);
      return true;
    },
  );
  assert.equal(tf.memory().numTensors, before, 'a diverged run leaves no tensors behind');
});

test("SGD training leaves no tensor behind (tfjs's momentum optimizer keeps its rate out of its own dispose)", async () => {
  const tf = loadTf();
  const run = (): Promise<unknown> =>
    train({ data: labeled, out: join(tmp, 'run-sgd-leak'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...base, epochs: 1, optimizer: 'sgd', learningRate: 0.01 } });
  await run(); // warm-up
  await rm(join(tmp, 'run-sgd-leak'), { recursive: true, force: true });
  const before = tf.memory().numTensors;
  await run();
  assert.equal(tf.memory().numTensors, before);
});

test('an aborted run stops between epochs, keeps its best model, and resumes from the last checkpoint', async () => {
  const controller = new AbortController();
  const r = await train({
    data: labeled, out: join(tmp, 'run-abort'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: base,
    signal: controller.signal, onEpoch: () => controller.abort(),
  });
  assert.equal(r.history.length, 1);
  const resumed = await train({ data: labeled, out: join(tmp, 'run-abort'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: base, resume: true });
  assert.equal(resumed.history.length, 4);
  const stopped = new AbortController();
  stopped.abort();
  await assert.rejects(train({ data: labeled, out: join(tmp, 'run-never'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: base, signal: stopped.signal }), {
    name: 'TrainingError',
    message: `training of "${join(tmp, 'run-never')}" stopped before its first epoch ended: there is no model yet (run it again with --resume)`,
  });
});

test('a stop from a signal handler or timer takes effect at the next batch, not at the end of the epoch', async () => {
  // Training yields to the event loop before each batch; without that, a handler (a notebook's stop button) that
  // aborts the signal would only run once the epoch had ended.
  const controller = new AbortController();
  let started = false;
  await assert.rejects(
    train({
      data: labeled, out: join(tmp, 'run-abort-timer'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...base, batchSize: 4, epochs: 1 },
      signal: controller.signal,
      onProgress: (p) => {
        if (p.stage !== 'train' || started) return;
        started = true;
        setImmediate(() => controller.abort());
      },
    }),
    { name: 'TrainingError', message: `training of "${join(tmp, 'run-abort-timer')}" stopped before its first epoch ended: there is no model yet (run it again with --resume)` },
  );
});

test('a run stopped by its signal is waited for by the next call of this process, not refused as busy', async () => {
  // A notebook's stop button ends the cell at once while the training winds down; the cell is run again at once.
  const out = join(tmp, 'run-stop-rerun');
  const controller = new AbortController();
  const opts = { data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...base, epochs: 2 } } as const;
  let again: Promise<unknown> | undefined;
  const first = train({
    ...opts,
    signal: controller.signal,
    onEpoch: () => {
      controller.abort();
      again = train({ ...opts, resume: true }); // while the first still holds the run
    },
  });
  assert.equal((await first).history.length, 1);
  assert.equal(((await again) as { history: unknown[] }).history.length, 2, 'the second call resumed where the first stopped');
  // Without a stop, a second call at the same time is still refused.
  const both = await Promise.allSettled([train({ ...opts, out: join(tmp, 'run-busy') }), train({ ...opts, out: join(tmp, 'run-busy') })]);
  assert.deepEqual(both.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  assert.equal(both.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).name] : [])).join(), 'BusyError');
});

test('presetOfRun finds the preset a run was started with, DEFAULTS alone included, for a resume without --preset', async () => {
  // run-abort (above) was trained with the smoke preset and `base`.
  const smokeRun = join(tmp, 'run-abort');
  assert.deepEqual(await presetOfRun(smokeRun, base, ['cpu', 'gpu', 'smoke', undefined]), { preset: 'smoke' });
  assert.equal(await presetOfRun(smokeRun, base, ['cpu', undefined]), undefined, 'none fits: train names the difference');
  assert.equal(await presetOfRun(join(tmp, 'no-such-run'), base, ['cpu']), undefined);
  // Started with no preset at all (the CLI's default before it named one): DEFAULTS and the overrides.
  const overrides = { ...base, epochs: 1, imageSize: 32, model: 'tiny', batchSize: 8, graphOps: false } as const;
  const plain = join(tmp, 'run-no-preset');
  await train({ data: labeled, out: plain, cacheDir: join(tmp, 'cache'), config: overrides });
  assert.deepEqual(await presetOfRun(plain, overrides, ['cpu', 'gpu', 'smoke', undefined]), { preset: undefined });
});

test('replace starts over: the earlier run\'s outputs go before training, other files stay, and a stop leaves no model', async () => {
  const out = join(tmp, 'run-replace');
  const opts = { data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...base, epochs: 1 } } as const;
  await train(opts);
  await assert.rejects(train(opts), { name: 'ConfigError', message: `"${out}" already holds a run (history.json, checkpoints, model): continue it with --resume, train into another --out, or remove it to start over` });
  // Leftovers of atomic writes count as outputs; files of someone else's do not.
  await writeFile(join(out, 'history.json.4242.0.tmp'), '[');
  await writeFile(join(out, 'stalled.txt'), 'stalled\n');
  await mkdir(join(out, 'model.tmp-4242'));
  await mkdir(join(out, 'checkpoints', 'best.old-4242'));
  await writeFile(join(out, 'notes.txt'), 'mine\n');
  await writeFile(join(out, 'checkpoints', 'keep.txt'), 'mine\n');
  const stopped = new AbortController();
  stopped.abort();
  await assert.rejects(train({ ...opts, replace: true, signal: stopped.signal }), {
    name: 'TrainingError',
    message: `training of "${out}" stopped before its first epoch ended: there is no model yet (run it again with --resume)`,
  });
  assert.deepEqual((await readdir(out)).sort(), ['checkpoints', 'notes.txt']);
  assert.deepEqual(await readdir(join(out, 'checkpoints')), ['keep.txt']);
  // Without a stop it trains afresh.
  const r = await train({ ...opts, replace: true });
  assert.equal(r.history.length, 1);
  assert.deepEqual((await readdir(out)).sort(), ['checkpoints', 'history.json', 'model', 'notes.txt']);
  assert.deepEqual((await readdir(join(out, 'checkpoints'))).sort(), ['best', 'keep.txt', 'last']);
});

test('the card says how the steps ran: one graph by default (with Adam or SGD), fused ops in the smoke preset', async () => {
  assert.deepEqual([resolveConfig().graphOps, resolveConfig('cpu').graphOps, resolveConfig('gpu').graphOps, resolveConfig('smoke').graphOps], [true, true, true, false]);
  const run = (name: string, config: Record<string, unknown>) =>
    train({ data: labeled, out: join(tmp, name), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...base, epochs: 1, ...config } });
  assert.equal((await run('run-graph', { graphOps: true })).card.training.engine, 'one TensorFlow graph per step (lib/graph-train.ts)');
  assert.equal((await run('run-eager', {})).card.training.engine, 'tfjs ops, fused native ops (lib/fast-train.ts)');
  assert.equal((await run('run-sgd', { graphOps: true, optimizer: 'sgd' })).card.training.engine, 'one TensorFlow graph per step (lib/graph-train.ts)');
});

test('a run killed in the middle of its checkpoint swap, or before its history, resumes where it stopped', async () => {
  const out = join(tmp, 'run-swap');
  const config = { ...base, epochs: 3 };
  await train({ data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), config, stopAfterEpochs: 2 });
  // A resume with another schedule length or augmentation would not continue the same run: refused, naming both.
  await assert.rejects(train({ data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...config, epochs: 8 }, augment: { flip: true }, resume: true }), {
    name: 'ConfigError',
    message: `cannot resume ${JSON.stringify(out)}: it was started with 3 epochs (now 8), augmentation false (now {"flip":true}); a resume continues ` +
      'the same run: give the settings it was started with, or train into another --out',
  });
  // Killed between the two renames of a swap (last -> last.pneumotype-old-PID, then last.pneumotype-tmp-PID -> last), by
  // a process now gone.
  const child = spawn(process.execPath, ['-e', '']);
  await once(child, 'exit');
  const pid = child.pid ?? 0;
  const last = join(out, 'checkpoints', 'last');
  await cp(last, `${last}.pneumotype-tmp-${pid}`, { recursive: true });
  await rename(last, `${last}.pneumotype-old-${pid}`);
  // ... and its history.json one epoch short, as when killed before writing it.
  const history = JSON.parse(await readFile(join(out, 'history.json'), 'utf8')) as unknown[];
  await writeFile(join(out, 'history.json'), JSON.stringify(history.slice(0, 1)));
  const notes: string[] = [];
  const resumed = await train({ data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), config, resume: true, onProgress: (p) => notes.push(p.message ?? '') });
  assert.deepEqual(resumed.history.map((r) => r.epoch), [1, 2, 3], 'continued at epoch 3, not from scratch');
  assert.ok(notes.includes(`finished the interrupted swap of ${JSON.stringify(last)}`), notes.join('\n'));
  assert.deepEqual((await readdir(join(out, 'checkpoints'))).sort(), ['best', 'last'], 'no .old or .tmp left');
  // A resume with nothing left to train still writes the whole history, and leaves model/ (calibrated, say) alone.
  await writeFile(join(out, 'history.json'), JSON.stringify(resumed.history.slice(0, 2)));
  const card = JSON.parse(await readFile(join(out, 'model', 'pneumotype.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(join(out, 'model', 'pneumotype.json'), JSON.stringify({ ...card, calibration: { temperature: 1.5 } }));
  const again = await train({ data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), config, resume: true });
  assert.equal((JSON.parse(await readFile(join(out, 'history.json'), 'utf8')) as unknown[]).length, 3);
  assert.deepEqual((again.card as unknown as { calibration: unknown }).calibration, { temperature: 1.5 });
  // A resume whose trainer state is gone, while history.json shows epochs, is refused rather than started over.
  await rm(last, { recursive: true });
  await assert.rejects(train({ data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), config, resume: true }), {
    name: 'CacheError',
    message: `cannot resume ${JSON.stringify(out)}: its history.json has 3 epochs but ${JSON.stringify(join(last, 'trainer.json'))} is missing, so the run ` +
      `cannot continue where it stopped; train without --resume into another --out, or remove ${JSON.stringify(out)} to start over`,
  });
  // The same with a history.json cut short: named, with the reason, not a bare SyntaxError.
  await writeFile(join(out, 'history.json'), '[{"epoch":1,');
  await assert.rejects(train({ data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), config, resume: true }), (err: unknown) => {
    assert.ok(err instanceof CacheError, String(err));
    assert.match(err.message, new RegExp(`^cannot resume ${JSON.stringify(out).replace(/[/.]/g, '\\$&')}: its history\\.json is damaged \\(.+\\) and .*trainer\\.json" is missing; train without --resume into another --out, or remove .* to start over$`));
    assert.equal(err.path, join(out, 'history.json'));
    return true;
  });
});

test('a best checkpoint written just before a kill (an epoch ahead of the last one) is adopted on resume, not orphaned', async () => {
  const out = join(tmp, 'run-best-ahead');
  const opts = { data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { ...base, epochs: 2 } } as const;
  await train({ ...opts, stopAfterEpochs: 1 });
  // As if epoch 2 had written its best checkpoint and the process died before the last one: best says epoch 2.
  const bestCard = join(out, 'checkpoints', 'best', 'pneumotype.json');
  const card = JSON.parse(await readFile(bestCard, 'utf8')) as ModelCardJson;
  await writeFile(bestCard, JSON.stringify({ ...card, training: { ...card.training, epoch: 2 }, validation: { ...card.validation, macroF1: 1 } }));
  const r = await train({ ...opts, resume: true });
  // Epoch 2 is trained again and cannot beat a macro-F1 of 1: the adopted checkpoint stays the model, and says so.
  assert.equal(r.bestEpoch, 2);
  assert.equal(r.card.training.epoch, 2);
  assert.equal(r.card.validation.macroF1, 1);
  // With the real epoch-2 checkpoint (an uninterrupted run's), the resumed run ends exactly as that one did: epoch 2,
  // trained again, ties the adopted best and is the best, as it was.
  const whole = await train({ ...opts, out: join(tmp, 'run-best-ahead-whole') });
  assert.equal(whole.bestEpoch, 2, 'its best checkpoint is epoch 2: one ahead of a run stopped after epoch 1');
  const cut = join(tmp, 'run-best-ahead-cut');
  await train({ ...opts, out: cut, stopAfterEpochs: 1 });
  await rm(join(cut, 'checkpoints', 'best'), { recursive: true });
  await cp(join(whole.runDir, 'checkpoints', 'best'), join(cut, 'checkpoints', 'best'), { recursive: true });
  const resumed = await train({ ...opts, out: cut, resume: true });
  const brief = (h: typeof whole.history): unknown[] => h.map((e) => [e.epoch, e.valMacroF1, e.best]);
  assert.deepEqual(brief(resumed.history), brief(whole.history));
  assert.equal(resumed.bestEpoch, whole.bestEpoch);
});

test("recoverDirSwap finishes a swap left under this process's own id (a restarted container is PID 1 again)", async () => {
  const dir = join(tmp, 'own-pid', 'last');
  await mkdir(`${dir}.pneumotype-tmp-${process.pid}`, { recursive: true });
  await writeFile(join(`${dir}.pneumotype-tmp-${process.pid}`, 'model.json'), '{}');
  await mkdir(`${dir}.pneumotype-old-${process.pid}`, { recursive: true });
  assert.equal(await recoverDirSwap(dir), `finished the interrupted swap of ${JSON.stringify(dir)}`);
  assert.deepEqual(await readdir(join(tmp, 'own-pid')), ['last']);
  assert.deepEqual(await readdir(dir), ['model.json']);
});

test("a folder swap never touches a user's folders named like a swap's, and a trailing slash swaps beside the folder", async () => {
  const parent = join(tmp, 'user-names');
  const dir = join(parent, 'model');
  // A user's backups beside the model, named as older versions of pneumotype named their swaps, under no live process.
  for (const name of ['model.old-2023', 'model.tmp-7']) {
    await mkdir(join(parent, name), { recursive: true });
    await writeFile(join(parent, name, 'NOTES.txt'), name);
  }
  await writeDirAtomic(`${dir}/`, async (t) => writeFile(join(t, 'model.json'), '1'));
  await rm(dir, { recursive: true }); // gone: recoverDirSwap would put an .old back, were it one of ours
  await writeDirAtomic(`${dir}/`, async (t) => writeFile(join(t, 'model.json'), '2'));
  assert.equal(await recoverDirSwap(`${dir}/`), '');
  assert.deepEqual((await readdir(parent)).sort(), ['model', 'model.old-2023', 'model.tmp-7']);
  assert.deepEqual(await readdir(dir), ['model.json']);
  for (const name of ['model.old-2023', 'model.tmp-7']) assert.equal(await readFile(join(parent, name, 'NOTES.txt'), 'utf8'), name);
});

test('writeDirAtomic swaps a complete folder in and keeps the old one when filling fails (its fsyncs are not observable here)', async () => {
  const dir = join(tmp, 'atomic', 'm');
  await writeDirAtomic(dir, async (t) => {
    await writeFile(join(t, 'model.json'), '1');
    await mkdir(join(t, 'sub'));
    await writeFile(join(t, 'sub', 'weights.bin'), 'w');
  });
  await writeDirAtomic(dir, async (t) => writeFile(join(t, 'model.json'), '2'));
  assert.deepEqual(await readdir(dir), ['model.json']);
  assert.equal(await readFile(join(dir, 'model.json'), 'utf8'), '2');
  await assert.rejects(
    writeDirAtomic(dir, async (t) => {
      await writeFile(join(t, 'model.json'), '3');
      throw new Error('disk full');
    }),
    { message: 'disk full' },
  );
  // A system error (the disk full) becomes an OutputError naming the folder, with the system's words as its cause.
  const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  await assert.rejects(
    writeDirAtomic(dir, async (t) => {
      await writeFile(join(t, 'model.json'), '4');
      throw full;
    }),
    (err: unknown) => {
      assert.ok(err instanceof OutputError);
      assert.equal(err.message, `${JSON.stringify(dir)} cannot be written: the disk is full (ENOSPC: no space left on device, write); make room and run it again`);
      assert.equal(err.cause, full);
      return true;
    },
  );
  assert.equal(await readFile(join(dir, 'model.json'), 'utf8'), '2');
  assert.deepEqual(await readdir(join(tmp, 'atomic')), ['m'], 'no .tmp or .old left');
  // A file where the folder's parent has to go.
  await writeFile(join(tmp, 'atomic', 'plain'), 'x');
  const under = join(tmp, 'atomic', 'plain', 'm');
  await assert.rejects(writeDirAtomic(under, async (t) => writeFile(join(t, 'model.json'), '1')), {
    name: 'OutputError',
    message: `${JSON.stringify(under)} cannot be written: ${JSON.stringify(join(tmp, 'atomic', 'plain'))} is a file, not a folder (EEXIST: file already exists, mkdir '${join(tmp, 'atomic', 'plain')}'); choose another path`,
  });
});
