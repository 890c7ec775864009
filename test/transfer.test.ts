// Transfer learning from a saved 3-channel tfjs layers model, and the clear error when the model cannot be had.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { SymbolicTensor, Tensor, io } from '@tensorflow/tfjs';
import { loadLayersModelFromDir, saveModel, weightsManifestBytes } from '../lib/checkpoint.js';
import { relabel } from '../lib/relabel.js';
import { summarizeModel } from '../lib/models.js';
import { loadTf } from '../lib/tf.js';
import { train, trainStep } from '../lib/train.js';
import { buildTransferModel, holdFrozenBatchNorms } from '../lib/transfer.js';
import { datasetFiles, writeTree } from './helpers/fixtures.js';
import { sendLongBody, startFileServer } from './helpers/http-server.js';
import { writeNsfwjsModel } from './helpers/nsfwjs-fixture.js';
import { movedWeights } from './helpers/weights.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-transfer-'));
  const tf = loadTf();
  // A stand-in for an ImageNet model: RGB input, convolutions and a batch norm, a 10-class head.
  const input = tf.input({ shape: [null, null, 3] as unknown as number[] });
  let x = tf.layers.conv2d({ filters: 4, kernelSize: 3, activation: 'relu', name: 'pre_conv1' }).apply(input) as SymbolicTensor;
  x = tf.layers.batchNormalization({ name: 'pre_bn' }).apply(x) as SymbolicTensor;
  x = tf.layers.conv2d({ filters: 6, kernelSize: 3, strides: 2, activation: 'relu', name: 'pre_conv2' }).apply(x) as SymbolicTensor;
  const pooled = tf.layers.globalAveragePooling2d({}).apply(x) as SymbolicTensor;
  const out = tf.layers.dense({ units: 10, activation: 'softmax' }).apply(pooled) as SymbolicTensor;
  const pretrained = tf.model({ inputs: input, outputs: out });
  await saveModel({ dir: join(tmp, 'pretrained'), model: pretrained });
  pretrained.dispose();
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('buildTransferModel keeps the pretrained features, repeats gray to RGB and adds a 3-class head', async () => {
  const tf = loadTf();
  const model = await buildTransferModel({ from: join(tmp, 'pretrained'), imageSize: 32, freeze: true });
  try {
    const y = tf.tidy(() => model.predict(tf.zeros([2, 32, 32, 1])) as Tensor);
    assert.deepEqual(y.shape, [2, 3]);
    y.dispose();
    assert.equal(model.layers[1]?.name, 'gray_to_rgb');
    assert.equal(model.trainableWeights.length, 2, 'frozen: only the new head trains');
    // A plain functional model: its layers (up to the last 4-D output) become the new model's own.
    assert.deepEqual(model.layers.map((l) => l.name), ['gray_input', 'gray_to_rgb', 'pre_conv1', 'pre_bn', 'pre_conv2', 'head_pool', 'head_dropout', 'head_logits']);
  } finally {
    model.dispose();
  }
  // A Sequential model (no functional configuration to rewrite) stays nested, and works the same.
  const seq = tf.sequential({
    layers: [tf.layers.conv2d({ inputShape: [8, 8, 3], filters: 2, kernelSize: 3, name: 'seq_conv' }), tf.layers.batchNormalization({ momentum: 0.999, name: 'seq_bn' }), tf.layers.flatten({}), tf.layers.dense({ units: 4 })],
  });
  await saveModel({ dir: join(tmp, 'sequential'), model: seq });
  seq.dispose();
  const nested = await buildTransferModel({ from: join(tmp, 'sequential'), imageSize: 8 });
  try {
    const inner = nested.layers.find((l) => 'layers' in l) as unknown as { layers: Array<{ name: string; getConfig(): Record<string, unknown> }> } | undefined;
    assert.ok(inner, 'nested');
    // A batch norm that trains follows the data at our momentum, nested too (see the nsfwjs test below).
    assert.equal(inner.layers.find((l) => l.name === 'seq_bn')?.getConfig().momentum, 0.9);
    const y = tf.tidy(() => nested.predict(tf.zeros([2, 8, 8, 1])) as Tensor);
    assert.deepEqual(y.shape, [2, 3]);
    y.dispose();
  } finally {
    nested.dispose();
  }
});

test('featureLayer puts the head on a named layer; a layer that is missing or not 4-D is named in the error', async () => {
  const tf = loadTf();
  const told: Array<{ name: string; isDefault: boolean }> = [];
  const model = await buildTransferModel({ from: join(tmp, 'pretrained'), imageSize: 16, featureLayer: 'pre_bn', onFeatureLayer: (l) => told.push(l) });
  try {
    assert.deepEqual(told, [{ name: 'pre_bn', isDefault: false }]);
    assert.deepEqual(model.layers.map((l) => l.name), ['gray_input', 'gray_to_rgb', 'pre_conv1', 'pre_bn', 'head_pool', 'head_dropout', 'head_logits']);
    const y = tf.tidy(() => model.predict(tf.zeros([1, 16, 16, 1])) as Tensor);
    assert.deepEqual(y.shape, [1, 3]);
    y.dispose();
  } finally {
    model.dispose();
  }
  const from = join(tmp, 'pretrained');
  await assert.rejects(buildTransferModel({ from, imageSize: 16, featureLayer: 'block_16_project' }), {
    name: 'ConfigError',
    message: `the pretrained model "${from}" has no layer "block_16_project" to take features from`,
  });
  const loaded = await loadLayersModelFromDir(from);
  const flat = loaded.layers.find((l) => l.getClassName() === 'GlobalAveragePooling2D')?.name;
  loaded.dispose();
  assert.ok(flat);
  await assert.rejects(buildTransferModel({ from, imageSize: 16, featureLayer: flat }), {
    name: 'ConfigError',
    message: `the layer "${flat}" of the pretrained model "${from}" gives [null,6], not 4-D feature maps [batch, height, width, channels] for the new head to pool`,
  });
  // Without a name: the layer before the pretrained head's pooling, told as the default; named, it is still the default.
  for (const featureLayer of [undefined, 'pre_conv2']) {
    const picked: Array<{ name: string; isDefault: boolean }> = [];
    const m = await buildTransferModel({ from, imageSize: 16, ...(featureLayer ? { featureLayer } : {}), onFeatureLayer: (l) => picked.push(l) });
    m.dispose();
    assert.deepEqual(picked, [{ name: 'pre_conv2', isDefault: true }]);
  }
  // The input layer computes no features: refused, with nothing left behind.
  const inputName = loaded.inputLayers[0]?.name ?? loaded.layers[0]?.name;
  assert.ok(inputName);
  const before = tf.memory().numTensors;
  await assert.rejects(buildTransferModel({ from, imageSize: 16, featureLayer: inputName }), {
    name: 'ConfigError',
    message: `the layer "${inputName}" of the pretrained model "${from}" is its input, which computes no features: name a layer after it for the new head`,
  });
  await assert.rejects(buildTransferModel({ from, imageSize: 16, featureLayer: 'block_16_project' }), {
    name: 'ConfigError',
    message: `the pretrained model "${from}" has no layer "block_16_project" to take features from`,
  });
  assert.equal(tf.memory().numTensors, before, 'a refused pretrained model leaves no tensors behind');
});

test("Keras MobileNet v1's head (pooled, reshaped to 4-D, a 1x1 convolution and a softmax) and an SE block's pooling are not taken for the features; the new head takes the L2 penalty", async () => {
  const tf = loadTf();
  const input = tf.input({ shape: [null, null, 3] as unknown as number[] });
  let x = tf.layers.conv2d({ filters: 4, kernelSize: 3, activation: 'relu', name: 'conv_pw_13_relu' }).apply(input) as SymbolicTensor;
  x = tf.layers.globalAveragePooling2d({ name: 'global_average_pooling2d_1' }).apply(x) as SymbolicTensor;
  x = tf.layers.reshape({ targetShape: [1, 1, 4], name: 'reshape_1' }).apply(x) as SymbolicTensor;
  x = tf.layers.conv2d({ filters: 10, kernelSize: 1, name: 'conv_preds' }).apply(x) as SymbolicTensor;
  x = tf.layers.activation({ activation: 'softmax', name: 'act_softmax' }).apply(x) as SymbolicTensor;
  const out = tf.layers.reshape({ targetShape: [10], name: 'reshape_2' }).apply(x) as SymbolicTensor;
  const v1 = tf.model({ inputs: input, outputs: out });
  await saveModel({ dir: join(tmp, 'mobilenet-v1-like'), model: v1 });
  v1.dispose();
  const model = await buildTransferModel({ from: join(tmp, 'mobilenet-v1-like'), imageSize: 16, l2: 1e-3 });
  try {
    assert.deepEqual(model.layers.map((l) => l.name), ['gray_input', 'gray_to_rgb', 'conv_pw_13_relu', 'head_pool', 'head_dropout', 'head_logits']);
    assert.equal(model.getLayer('head_logits').getConfig().kernelRegularizer !== undefined && model.getLayer('head_logits').getConfig().kernelRegularizer !== null, true);
  } finally {
    model.dispose();
  }
  // A squeeze-and-excitation block (EfficientNet, MobileNetV3) pools inside the trunk: that pooling is not the head's.
  const seIn = tf.input({ shape: [null, null, 3] as unknown as number[] });
  const stem = tf.layers.conv2d({ filters: 4, kernelSize: 3, padding: 'same', name: 'stem_conv' }).apply(seIn) as SymbolicTensor;
  let se = tf.layers.globalAveragePooling2d({ name: 'se_squeeze' }).apply(stem) as SymbolicTensor;
  se = tf.layers.reshape({ targetShape: [1, 1, 4], name: 'se_reshape' }).apply(se) as SymbolicTensor;
  se = tf.layers.conv2d({ filters: 4, kernelSize: 1, activation: 'sigmoid', name: 'se_expand' }).apply(se) as SymbolicTensor;
  let y = tf.layers.multiply({ name: 'se_excite' }).apply([stem, se]) as SymbolicTensor;
  y = tf.layers.conv2d({ filters: 4, kernelSize: 1, activation: 'relu', name: 'top_activation' }).apply(y) as SymbolicTensor;
  const seOut = tf.layers.dense({ units: 10, activation: 'softmax', name: 'predictions' }).apply(tf.layers.globalAveragePooling2d({ name: 'avg_pool' }).apply(y)) as SymbolicTensor;
  const efficient = tf.model({ inputs: seIn, outputs: seOut });
  await saveModel({ dir: join(tmp, 'se-like'), model: efficient });
  efficient.dispose();
  const seModel = await buildTransferModel({ from: join(tmp, 'se-like'), imageSize: 16 });
  try {
    const names = seModel.layers.map((l) => l.name);
    assert.deepEqual(names.slice(-4), ['top_activation', 'head_pool', 'head_dropout', 'head_logits']);
    assert.ok(names.includes('se_excite') && !names.includes('avg_pool') && !names.includes('predictions'), names.join(' '));
  } finally {
    seModel.dispose();
  }
});

test('FLOPs of a nested pretrained model are counted at the size it is given, and unknown (NaN) where its layers cannot say', async () => {
  const tf = loadTf();
  // The gray-to-RGB 1x1 convolution, the pretrained 3x3 one at 16 px, the new head.
  for (const [name, shape, expected] of [['fixed-16', [16, 16, 3], 2 * 16 * 16 * 3 + 2 * 27 * 16 * 16 * 4 + 2 * 4 * 3], ['dynamic', [null, null, 3], Number.NaN]] as const) {
    const seq = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: shape as unknown as number[], filters: 4, kernelSize: 3, padding: 'same', name: 'c1' }), tf.layers.globalAveragePooling2d({}), tf.layers.dense({ units: 5 })] });
    await saveModel({ dir: join(tmp, `flops-${name}`), model: seq });
    seq.dispose();
    const model = await buildTransferModel({ from: join(tmp, `flops-${name}`), imageSize: 16 });
    try {
      assert.ok(model.layers.some((l) => 'layers' in l), 'nested');
      assert.deepEqual(summarizeModel(model, { name: 'tiny', imageSize: 16 }).flops, expected, name);
    } finally {
      model.dispose();
    }
  }
});

test('a pretrained head with fixed-size pooling is left out, and inputRange maps the pixels onto the pretrained range', async () => {
  const tf = loadTf();
  // A classifier as tfjs-converter writes Keras's MobileNetV2 with its own head: a 7x7 average pool sized for 224 px.
  const input = tf.input({ shape: [16, 16, 3] });
  let x = tf.layers.conv2d({ filters: 4, kernelSize: 3, activation: 'relu', name: 'pool_conv' }).apply(input) as SymbolicTensor;
  x = tf.layers.averagePooling2d({ poolSize: 7, name: 'pool_fixed' }).apply(x) as SymbolicTensor;
  x = tf.layers.flatten({}).apply(x) as SymbolicTensor;
  const out = tf.layers.dense({ units: 5, activation: 'softmax' }).apply(x) as SymbolicTensor;
  const pretrained = tf.model({ inputs: input, outputs: out });
  await saveModel({ dir: join(tmp, 'pooled'), model: pretrained });
  pretrained.dispose();
  // At 6 px the fixed 7x7 pool has nothing to pool: the features come from the convolution before it.
  const model = await buildTransferModel({ from: join(tmp, 'pooled'), imageSize: 6, inputRange: [-1, 1] });
  try {
    assert.deepEqual(model.layers.map((l) => l.name), ['gray_input', 'gray_to_rgb', 'pool_conv', 'head_pool', 'head_dropout', 'head_logits']);
    const y = tf.tidy(() => model.predict(tf.fill([1, 6, 6, 1], 0.5)) as Tensor);
    assert.ok(Array.from(y.dataSync()).every(Number.isFinite));
    y.dispose();
    const mapped = tf.tidy(() => model.getLayer('gray_to_rgb').apply(tf.tensor4d([0, 0.25, 1, 0.5], [1, 2, 2, 1])) as Tensor);
    assert.deepEqual(Array.from(mapped.dataSync()), [-1, -1, -1, -0.5, -0.5, -0.5, 1, 1, 1, 0, 0, 0], '[0, 1] onto [-1, 1], gray repeated to RGB');
    mapped.dispose();
    assert.equal(model.trainableWeights.some((w) => w.originalName.startsWith('gray_to_rgb')), false, 'the mapping is fixed');
  } finally {
    model.dispose();
  }
});

test("real converter output (nsfwjs's MobileNetV2: Keras 2.2.4, uint8 weights): features before its head, its frozen marks kept, trained batch norms follow the data", async () => {
  const tf = loadTf();
  await writeNsfwjsModel(join(tmp, 'nsfwjs'));
  const model = await buildTransferModel({ from: join(tmp, 'nsfwjs'), imageSize: 96, inputRange: [-1, 1], dropout: 0 });
  try {
    const names = model.layers.map((l) => l.name);
    assert.deepEqual(names.slice(0, 3), ['gray_input', 'gray_to_rgb', 'Conv1_pad']);
    assert.deepEqual(names.slice(-3), ['out_relu', 'head_pool', 'head_logits'], 'its 7x7 pool, flatten and dense head left out');
    assert.equal(names.length, 158);
    // nsfwjs froze blocks 0-10 (ImageNet's weights) and trained blocks 11-16: fine-tuning keeps those marks.
    assert.equal(model.getLayer('block_10_project').trainable, false);
    assert.equal(model.getLayer('block_11_expand').trainable, true);
    // Keras's momentum 0.999 stays where nothing trains; a batch norm that trains follows the data at 0.9.
    assert.equal(model.getLayer('block_10_project_BN').getConfig().momentum, 0.999);
    assert.equal(model.getLayer('block_11_expand_BN').getConfig().momentum, 0.9);
    const y = tf.tidy(() => model.predict(tf.randomUniform([2, 96, 96, 1], 0, 1, 'float32', 3)) as Tensor);
    const p = Array.from(y.dataSync());
    y.dispose();
    assert.ok(p.every(Number.isFinite) && Math.abs(p[0]! + p[1]! + p[2]! - 1) < 1e-5, `finite probabilities: ${p.join(', ')}`);
  } finally {
    model.dispose();
  }
  // unfreeze trains the marked blocks too, their batch norms following the data.
  const whole = await buildTransferModel({ from: join(tmp, 'nsfwjs'), imageSize: 96, inputRange: [-1, 1], unfreeze: true });
  try {
    assert.equal(whole.getLayer('Conv1').trainable, true);
    assert.equal(whole.getLayer('block_10_project_BN').getConfig().momentum, 0.9);
    assert.equal(whole.layers.filter((l) => l.trainable && l.weights.length > 0).length, whole.layers.filter((l) => l.weights.length > 0).length - 1, 'all but gray_to_rgb');
  } finally {
    whole.dispose();
  }
  await assert.rejects(buildTransferModel({ from: join(tmp, 'nsfwjs'), imageSize: 96, freeze: true, unfreeze: true }), {
    name: 'ConfigError',
    message: 'freeze and unfreeze exclude each other: freeze trains the head only, unfreeze every pretrained layer',
  });
});

test('frozen weights stay put under optimizer.minimize, built or saved and loaded again', async () => {
  const tf = loadTf();
  const built = await buildTransferModel({ from: join(tmp, 'pretrained'), imageSize: 16, freeze: true });
  await saveModel({ dir: join(tmp, 'frozen'), model: built });
  const loaded = await loadLayersModelFromDir(join(tmp, 'frozen'));
  const xs = tf.randomUniform([4, 16, 16, 1], 0, 1, 'float32', 1);
  const ys = tf.oneHot(tf.tensor1d([0, 1, 2, 1], 'int32'), 3).toFloat();
  const cw = tf.ones([3]);
  const moves = (model: typeof built): string[] => {
    const before = model.weights.map((w) => w.read().clone());
    const optimizer = tf.train.sgd(0.5);
    const { loss, correct } = trainStep({ model, optimizer, xs, ys, classWeights: cw, labelSmoothing: 0 });
    tf.dispose([loss, correct]);
    optimizer.dispose();
    const moved = movedWeights(model, before);
    tf.dispose(before);
    return moved;
  };
  const undo = [holdFrozenBatchNorms(built), holdFrozenBatchNorms(loaded)];
  try {
    const head = ['head_logits/kernel', 'head_logits/bias'];
    assert.deepEqual(moves(built), head, 'built: the fixed gray-to-RGB filter and the frozen trunk stay put');
    // tfjs saves no trainable flag for a nested model, but each of its layers keeps its own: loaded again, the
    // trunk stays frozen, as does the fixed gray_to_rgb filter.
    assert.deepEqual(moves(loaded), head, 'loaded');
    assert.equal(loaded.trainableWeights.length, 2);
    for (const u of undo.splice(0)) u();
    // Not held, the frozen batch norm's moving statistics follow the batches (tfjs-layers passes training to it).
    assert.deepEqual(moves(built), [...head, 'pre_bn/moving_mean', 'pre_bn/moving_variance'], 'not held');
  } finally {
    for (const u of undo) u();
    tf.dispose([xs, ys, cw]);
    built.dispose();
    loaded.dispose();
  }
});

test('holdFrozenBatchNorms: a frozen batch norm uses its moving statistics in training too, until undone', async () => {
  const tf = loadTf();
  const frozen = await buildTransferModel({ from: join(tmp, 'pretrained'), imageSize: 16, freeze: true, dropout: 0 });
  const tuned = await buildTransferModel({ from: join(tmp, 'pretrained'), imageSize: 16, dropout: 0 });
  const xs = tf.randomUniform([4, 16, 16, 1], 0, 1, 'float32', 2);
  const out = (model: typeof frozen, training: boolean): number[] => tf.tidy(() => Array.from((model.apply(xs, { training }) as Tensor).dataSync()));
  const stats = (model: typeof frozen): number[][] => model.weights.filter((w) => /moving_/.test(w.originalName)).map((w) => Array.from(w.read().dataSync()));
  try {
    const undo = holdFrozenBatchNorms(frozen);
    const undoAgain = holdFrozenBatchNorms(frozen);
    const before = stats(frozen);
    assert.deepEqual(out(frozen, true), out(frozen, false), 'held: training normalises as inference does');
    assert.deepEqual(stats(frozen), before, 'held: the moving statistics stay');
    undoAgain();
    assert.deepEqual(out(frozen, true), out(frozen, false), 'a second hold of the same layers changes nothing, nor does its undo');
    undo();
    assert.notDeepEqual(out(frozen, true), out(frozen, false), 'undone: batch statistics again');
    assert.notDeepEqual(stats(frozen), before, 'undone: the moving statistics follow the batches');
    // A model being fine-tuned whole has nothing frozen to hold.
    const undoTuned = holdFrozenBatchNorms(tuned);
    assert.notDeepEqual(out(tuned, true), out(tuned, false), 'fine-tuned: batch statistics');
    undoTuned();
  } finally {
    xs.dispose();
    frozen.dispose();
    tuned.dispose();
  }
  // A nested model frozen as a whole (its own flag, not its layers'): its batch norms are held too.
  const innerIn = tf.input({ shape: [4, 4, 2] });
  const inner = tf.model({ inputs: innerIn, outputs: tf.layers.batchNormalization({ name: 'nested_bn' }).apply(innerIn) as SymbolicTensor });
  const outerIn = tf.input({ shape: [4, 4, 2] });
  const outer = tf.model({ inputs: outerIn, outputs: inner.apply(outerIn) as SymbolicTensor });
  inner.trainable = false;
  const ys = tf.randomUniform([3, 4, 4, 2], 0, 5, 'float32', 4);
  const run = (training: boolean): number[] => tf.tidy(() => Array.from((outer.apply(ys, { training }) as Tensor).dataSync()));
  const undoNested = holdFrozenBatchNorms(outer);
  try {
    assert.deepEqual(run(true), run(false), 'a nested model frozen as a whole');
  } finally {
    undoNested();
    ys.dispose();
    outer.dispose();
  }
});

test('train --init-from fine-tunes the pretrained model on the fixture', async () => {
  await writeTree(join(tmp, 'src'), await datasetFiles({ perClass: { train: 6, test: 2 } }));
  await relabel({ from: join(tmp, 'src'), out: join(tmp, 'labeled') });
  const r = await train({ data: join(tmp, 'labeled'), out: join(tmp, 'run'), preset: 'smoke', cacheDir: join(tmp, 'cache'), initFrom: join(tmp, 'pretrained'), initRange: [-1, 1], config: { epochs: 1 } });
  assert.equal(r.history.length, 1);
  assert.equal(r.card.training.initFrom, join(tmp, 'pretrained'));
  assert.deepEqual(r.card.training.initRange, [-1, 1]);
  assert.equal(r.card.model.summary.name, 'transfer');
  // The layer the head went on is recorded, named or not: a resume naming the default layer, or [0, 1], is the same run.
  assert.equal(r.card.training.featureLayer, 'pre_conv2');
  assert.equal(r.card.training.defaultFeatureLayer, true);
  const done = { data: join(tmp, 'labeled'), out: join(tmp, 'run'), preset: 'smoke', cacheDir: join(tmp, 'cache'), initFrom: join(tmp, 'pretrained'), initRange: [-1, 1], config: { epochs: 1 }, resume: true } as const;
  assert.equal((await train({ ...done, featureLayer: 'pre_conv2' })).history.length, 1);
  await assert.rejects(train({ ...done, featureLayer: 'pre_bn' }), {
    name: 'ConfigError',
    message: `cannot resume "${join(tmp, 'run')}": it was started with --feature-layer "pre_conv2" (now "pre_bn"); ` +
      'a resume continues the same run: give the settings it was started with, or train into another --out',
  });
  // The head put on another layer: recorded in the card, and a resume must name the same layer.
  const common = { data: join(tmp, 'labeled'), out: join(tmp, 'run-cut'), preset: 'smoke', cacheDir: join(tmp, 'cache'), initFrom: join(tmp, 'pretrained'), config: { epochs: 2 } } as const;
  const cut = await train({ ...common, featureLayer: 'pre_bn', stopAfterEpochs: 1 });
  assert.equal(cut.card.training.featureLayer, 'pre_bn');
  assert.equal(cut.card.training.defaultFeatureLayer, false);
  await assert.rejects(train({ ...common, resume: true }), {
    name: 'ConfigError',
    message: `cannot resume "${join(tmp, 'run-cut')}": it was started with --feature-layer "pre_bn" (now "default"); ` +
      'a resume continues the same run: give the settings it was started with, or train into another --out',
  });
  assert.equal((await train({ ...common, featureLayer: 'pre_bn', resume: true })).history.length, 2);
  await assert.rejects(train({ data: join(tmp, 'labeled'), out: join(tmp, 'run-nothing'), preset: 'smoke', featureLayer: 'pre_bn' }), {
    name: 'ConfigError',
    message: 'featureLayer names a layer of a pretrained model: give initFrom (--init-from DIR|URL) too',
  });
});

test('train --init-from --freeze trains the head only, resumed too, and says so in the card', async () => {
  const labeled = join(tmp, 'labeled');
  const out = join(tmp, 'run-frozen');
  const common = { data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), initFrom: join(tmp, 'pretrained'), freeze: true, config: { epochs: 2 } } as const;
  await train({ ...common, stopAfterEpochs: 1 });
  // Resumed without the transfer flags: refused (the card would describe a network trained from scratch).
  await assert.rejects(train({ data: labeled, out, preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { epochs: 2 }, resume: true }), {
    name: 'ConfigError',
    message: `cannot resume "${out}": it was started with --init-from "${join(tmp, 'pretrained')}" (now "none"), --freeze true (now false); ` +
      'a resume continues the same run: give the settings it was started with, or train into another --out',
  });
  // The same model written another way (a trailing slash) is the same run.
  const r = await train({ ...common, initFrom: `${join(tmp, 'pretrained')}/`, resume: true });
  assert.equal(r.history.length, 2);
  assert.equal(r.card.training.freeze, true);
  // Started without --init-range and --feature-layer: their defaults given explicitly are the same run.
  const same = await train({ ...common, initRange: [0, 1], featureLayer: 'pre_conv2', resume: true });
  assert.equal(same.history.length, 2);
  assert.equal(same.card.training.initRange, undefined);
  const pretrained = await loadLayersModelFromDir(join(tmp, 'pretrained'));
  const trained = await loadLayersModelFromDir(r.modelDir);
  try {
    const trunkWeights = trained.weights.filter((w) => w.originalName.startsWith('pre_'));
    assert.equal(trunkWeights.length, 8, 'two convolutions and a batch norm (gamma, beta and its moving statistics)');
    for (const w of trunkWeights) {
      const p = pretrained.weights.find((v) => v.originalName === w.originalName);
      assert.ok(p, w.originalName);
      assert.deepEqual(w.read().dataSync(), p.read().dataSync(), `${w.originalName} unchanged after two epochs and a resume`);
    }
    assert.deepEqual(trained.trainableWeights.map((w) => w.originalName), ['head_logits/kernel', 'head_logits/bias']);
  } finally {
    pretrained.dispose();
    trained.dispose();
  }
  await assert.rejects(train({ data: labeled, out: join(tmp, 'run-nothing'), preset: 'smoke', freeze: true }), {
    name: 'ConfigError',
    message: 'freeze needs a pretrained model to freeze: give initFrom (--init-from DIR|URL) too',
  });
  await assert.rejects(train({ data: labeled, out: join(tmp, 'run-nothing'), preset: 'smoke', initRange: [-1, 1] }), {
    name: 'ConfigError',
    message: 'initRange is the pixel range of a pretrained model: give initFrom (--init-from DIR|URL) too',
  });
  await assert.rejects(train({ data: labeled, out: join(tmp, 'run-nothing'), preset: 'smoke', unfreeze: true }), {
    name: 'ConfigError',
    message: 'unfreeze needs a pretrained model to unfreeze: give initFrom (--init-from DIR|URL) too',
  });
});

/**
 * A loopback server of the pretrained folder's files behind Basic auth (alice:pw); `endless` streams 256 MiB as
 * weights.bin, far more than described. Requests are logged as path and whether the password came along.
 */
async function pretrainedServer(dir: string, options: { endless?: boolean } = {}): Promise<{ origin: string; log: string[]; close: () => Promise<void> }> {
  const log: string[] = [];
  const server = createServer((req, res) => {
    const authorized = req.headers.authorization === `Basic ${Buffer.from('alice:pw').toString('base64')}`;
    log.push(`${req.url ?? ''} ${authorized ? 'auth' : 'anonymous'}`);
    if (!authorized) return void res.writeHead(401).end();
    const name = new URL(req.url ?? '/', 'http://x').pathname.replace(/^\/m\//, '');
    if (options.endless && name === 'weights.bin') {
      res.writeHead(200);
      return void sendLongBody(res, 256 * 1024 ** 2);
    }
    readFile(join(dir, name)).then((data) => res.writeHead(200).end(data), () => res.writeHead(404).end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    log,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

test('a pretrained model at a URL: its password goes to its own server only, is never shown, and a body without end is cut', async () => {
  const served = await pretrainedServer(join(tmp, 'pretrained'));
  try {
    const model = await buildTransferModel({ from: `http://alice:pw@${served.origin.slice('http://'.length)}/m/model.json`, imageSize: 16 });
    assert.deepEqual(model.outputs[0]?.shape, [null, 3]);
    model.dispose();
    assert.deepEqual(served.log, ['/m/model.json auth', '/m/weights.bin auth']);
    // A query on model.json (a token, a signature) goes with its weights files too, as tfjs's own loader sends it.
    const withToken = await buildTransferModel({ from: `http://alice:pw@${served.origin.slice('http://'.length)}/m/model.json?token=abc`, imageSize: 16 });
    withToken.dispose();
    assert.deepEqual(served.log.slice(2), ['/m/model.json?token=abc auth', '/m/weights.bin?token=abc auth']);
    // Trained from a signed link: the card records it with *** for the password and the signature, and a resume from
    // the same model signed anew is the same source.
    const signed = (sig: string): string => `http://alice:pw@${served.origin.slice('http://'.length)}/m/model.json?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=${sig}`;
    const common = { data: join(tmp, 'labeled'), out: join(tmp, 'run-url'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { epochs: 1 } } as const;
    const run = await train({ ...common, initFrom: signed('SECRETSIG1') });
    const recorded = `http://***@${served.origin.slice('http://'.length)}/m/model.json?X-Amz-Credential=***&X-Amz-Signature=***`;
    assert.equal(run.card.training.initFrom, recorded);
    assert.equal((await readFile(join(tmp, 'run-url', 'model', 'pneumotype.json'), 'utf8')).includes('SECRETSIG1'), false);
    assert.equal((await train({ ...common, initFrom: signed('SECRETSIG2'), resume: true })).history.length, 1);
    // A wrong password: the error shows the URL with *** for the user name and password.
    await assert.rejects(buildTransferModel({ from: `http://alice:wrong@${served.origin.slice('http://'.length)}/m/model.json`, imageSize: 16 }), {
      name: 'ConfigError',
      message:
        `cannot start from the pretrained model "http://***@${served.origin.slice('http://'.length)}/m/model.json": downloading it failed ` +
        `(model.json "${served.origin}/m/model.json" answered HTTP 401). Tried the tfjs layers model.json at that URL ` +
        '(needs the internet; HTTPS_PROXY is not used for it); without it, train from scratch (leave out --init-from).',
    });
  } finally {
    await served.close();
  }
  // A model.json that names its weights on another server: not fetched from there.
  const elsewhere = join(tmp, 'pretrained-elsewhere');
  await mkdir(elsewhere, { recursive: true });
  const original = JSON.parse(await readFile(join(tmp, 'pretrained', 'model.json'), 'utf8')) as { weightsManifest: { paths: string[] }[] };
  await writeFile(join(elsewhere, 'model.json'), JSON.stringify({ ...original, weightsManifest: original.weightsManifest.map((g) => ({ ...g, paths: ['http://169.254.169.254/latest/w.bin'] })) }));
  const other = await pretrainedServer(elsewhere);
  try {
    await assert.rejects(buildTransferModel({ from: `http://alice:pw@${other.origin.slice('http://'.length)}/m/model.json`, imageSize: 16 }), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.ok(err.message.includes(`(model.json at "http://***@${other.origin.slice('http://'.length)}/m/model.json" names the weights file "http://169.254.169.254/latest/w.bin" on another server)`), err.message);
      return true;
    });
    assert.deepEqual(other.log, ['/m/model.json auth']);
  } finally {
    await other.close();
  }
  const endless = await pretrainedServer(join(tmp, 'pretrained'), { endless: true });
  try {
    const described = JSON.parse(await readFile(join(tmp, 'pretrained', 'model.json'), 'utf8')) as { weightsManifest: { weights: io.WeightsManifestEntry[] }[] };
    const bytes = weightsManifestBytes(described.weightsManifest.flatMap((g) => g.weights));
    await assert.rejects(buildTransferModel({ from: `http://alice:pw@${endless.origin.slice('http://'.length)}/m/model.json`, imageSize: 16 }), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.match(err.message, new RegExp(`downloading it failed \\(the weights file "http://127\\.0\\.0\\.1:\\d+/m/weights\\.bin" is larger than the ${bytes} bytes expected\\)`));
      return true;
    });
  } finally {
    await endless.close();
  }
});

test('a pretrained model that cannot be had is a clear error saying what was tried', async () => {
  const server = await startFileServer({ data: Buffer.from('{}'), path: '/model.json' });
  try {
    await assert.rejects(buildTransferModel({ from: `${server.origin}/missing/model.json`, imageSize: 32 }), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.match(err.message, new RegExp(`^cannot start from the pretrained model "${server.origin}/missing/model.json": downloading it failed \\(.*404.*\\)\\. Tried the tfjs layers model\\.json at that URL \\(needs the internet; HTTPS_PROXY is not used for it\\); without it, train from scratch \\(leave out --init-from\\)\\.$`));
      return true;
    });
  } finally {
    await server.close();
  }
  // Nothing listening any more: the reason (a refused connection) is said, not only fetch's "fetch failed".
  const closed = await startFileServer({ data: Buffer.from('{}'), path: '/model.json' });
  await closed.close();
  await assert.rejects(buildTransferModel({ from: `${closed.origin}/model.json`, imageSize: 32 }), (err: unknown) => {
    assert.ok(err instanceof Error);
    assert.match(err.message, /downloading it failed \(fetch failed: .*ECONNREFUSED.*\)\. /);
    return true;
  });
  await assert.rejects(buildTransferModel({ from: join(tmp, 'nope'), imageSize: 32 }), {
    name: 'ConfigError',
    message: `cannot start from the pretrained model "${join(tmp, 'nope')}": reading it failed (no such folder). Tried model.json and its weights in that folder; without it, train from scratch (leave out --init-from).`,
  });
});
