// The training step as one TensorFlow graph: which models qualify, the same losses, weights, optimizer state and
// weight average as the tfjs step, no tensor leaks, and clear refusals.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { LayersModel, Optimizer, Tensor } from '@tensorflow/tfjs';
import { WeightAverage } from '../lib/ema.js';
import { GraphTrainer, planGraphTraining, trainingGraphText, type GraphTrainerOptions } from '../lib/graph-train.js';
import { buildModel, type ModelName, type ModelOptions } from '../lib/models.js';
import { loadTf } from '../lib/tf.js';
import { setLearningRate, trainStep } from '../lib/train.js';
import { holdFrozenBatchNorms } from '../lib/transfer.js';
import { StallWatchdog } from '../lib/watchdog.js';
import { assertNoTensorLeak } from './helpers/tf-leaks.js';
import { assertStepsAgree, maxDifference } from './helpers/twin-steps.js';
import { movedWeights } from './helpers/weights.js';

// Every session call of this file runs under the stall guard, as in train(): a deadlock of libtensorflow's session
// (see "The stall guard" in the README) fails the run within two minutes, with a message, instead of hanging CI.
let watchdog: StallWatchdog;
before(() => {
  watchdog = StallWatchdog.start({ seconds: 120, what: 'a TensorFlow graph call of test/graph-train.test.ts', hint: 'See "The stall guard" in the README.' });
});
after(async () => {
  await watchdog.stop();
});
const createTrainer = (options: GraphTrainerOptions): Promise<GraphTrainer> => GraphTrainer.create({ ...options, watchdog });

const tf = loadTf();
const S = 24;
const WEIGHTS = [1.3, 0.7, 1.3];

function batch(size = S): { xs: Tensor; ys: Tensor } {
  return tf.tidy(() => ({
    xs: tf.randomUniform([6, size, size, 1], 0, 1, 'float32', 3),
    ys: tf.oneHot(tf.tensor1d([0, 1, 2, 1, 0, 2], 'int32'), 3).toFloat(),
  }));
}

function pair(name: ModelName, dropout = 0, extra: Partial<ModelOptions> = {}): [LayersModel, LayersModel] {
  const options = { name, imageSize: S, width: 8, dropout, l2: 1e-4, seed: 5, ...extra };
  return [buildModel(options), buildModel(options)];
}

test('planGraphTraining accepts the three architectures and names what stops another model', () => {
  for (const name of ['resnet', 'tiny', 'mobile'] as const) {
    const [m, other] = pair(name);
    assert.deepEqual(planGraphTraining(m), { supported: true }, name);
    m.dispose();
    other.dispose();
  }
  const input = tf.input({ shape: [S, S, 1] });
  const flat = tf.layers.flatten({ name: 'flat' }).apply(input);
  const out = tf.layers.dense({ name: 'out', units: 3, activation: 'softmax' }).apply(flat);
  const flatModel = tf.model({ inputs: input, outputs: out as ReturnType<typeof tf.input> });
  assert.deepEqual(planGraphTraining(flatModel), { supported: false, reason: 'layer "flat" is a Flatten, which graph training does not translate' });
  flatModel.dispose();
  const input2 = tf.input({ shape: [S, S, 1] });
  const pooled = tf.layers.globalAveragePooling2d({ name: 'gap' }).apply(input2);
  const sigmoid = tf.layers.dense({ name: 'sig', units: 3, activation: 'sigmoid' }).apply(pooled);
  const sigmoidModel = tf.model({ inputs: input2, outputs: sigmoid as ReturnType<typeof tf.input> });
  assert.deepEqual(planGraphTraining(sigmoidModel), { supported: false, reason: 'the output layer "sig" is not a softmax Dense (activation sigmoid)' });
  sigmoidModel.dispose();
  const [standardized, spare] = pair('tiny', 0, { standardize: true });
  assert.deepEqual(planGraphTraining(standardized), { supported: true });
  standardized.dispose();
  spare.dispose();
  const input3 = tf.input({ shape: [S, S, 1] });
  const conv = tf.layers.conv2d({ name: 'conv', filters: 2, kernelSize: 3 }).apply(input3);
  const norm = tf.layers.layerNormalization({ name: 'norm', axis: [1, 2, 3], center: false, scale: false }).apply(conv);
  const head = tf.layers.dense({ name: 'head', units: 3, activation: 'softmax' }).apply(tf.layers.globalAveragePooling2d({}).apply(norm));
  const normModel = tf.model({ inputs: input3, outputs: head as ReturnType<typeof tf.input> });
  assert.deepEqual(planGraphTraining(normModel), { supported: false, reason: 'layer "norm": a LayerNormalization is translated only on the model\'s input' });
  const perChannel = tf.input({ shape: [S, S, 1] });
  const channelNorm = tf.layers.layerNormalization({ name: 'channel_norm' }).apply(perChannel);
  const head2 = tf.layers.dense({ name: 'head2', units: 3, activation: 'softmax' }).apply(tf.layers.globalAveragePooling2d({}).apply(channelNorm));
  const channelModel = tf.model({ inputs: perChannel, outputs: head2 as ReturnType<typeof tf.input> });
  assert.deepEqual(planGraphTraining(channelModel), { supported: false, reason: 'layer "channel_norm": a LayerNormalization is translated only over axes [1, 2, 3], with no trained scale or offset' });
  const input5 = tf.input({ shape: [S, S, 1] });
  const regBn = tf.layers.batchNormalization({ name: 'reg_bn', gammaRegularizer: tf.regularizers.l2({ l2: 0.5 }) }).apply(input5);
  const head5 = tf.layers.dense({ name: 'head5', units: 3, activation: 'softmax' }).apply(tf.layers.globalAveragePooling2d({}).apply(regBn));
  const regModel = tf.model({ inputs: input5, outputs: head5 as ReturnType<typeof tf.input> });
  assert.deepEqual(planGraphTraining(regModel), { supported: false, reason: 'layer "reg_bn" has a gammaRegularizer (graph training translates kernel, depthwise and bias L2 only)' });
  regModel.dispose();
  const input4 = tf.input({ shape: [S, S, 1] });
  const frozenBn = tf.layers.batchNormalization({ name: 'frozen_bn', trainable: false }).apply(input4);
  const head3 = tf.layers.dense({ name: 'head3', units: 3, activation: 'softmax' }).apply(tf.layers.globalAveragePooling2d({}).apply(frozenBn));
  const frozenModel = tf.model({ inputs: input4, outputs: head3 as ReturnType<typeof tf.input> });
  assert.deepEqual(planGraphTraining(frozenModel), { supported: true }, 'a frozen batch norm runs in inference mode');
  normModel.dispose();
  channelModel.dispose();
  frozenModel.dispose();
});

// The same math summed in another order: within 1e-4, relative to each tensor's scale (at least 1).
const TOLERANCE = 1e-4;
// The mobile network subsamples 32-fold. At 24 px its last batch norms would normalise 6 values (one pixel per image),
// whose variance is near 0 and whose gradients amplify rounding without bound (on one CPU, Adam's first moments came 9 %
// apart and the test needed a tolerance of 2e-3, still failing there). At 64 px they see 2x2 pixels per image, and the
// twins agree within 4e-5.
const TWIN_SIZE = { resnet: S, tiny: S, mobile: 64 } as const;
// On CPUs where libtensorflow turns on oneDNN's custom operations (AVX-512 ones), the graph's depthwise convolutions
// run other kernels than the eager ones, and the mobile twins' Adam state came 2.5e-4 apart (relative; 4e-5 there with
// TF_ENABLE_ONEDNN_OPTS=0). A real difference in the step would be orders of magnitude larger.
const TWIN_TOLERANCE = { resnet: TOLERANCE, tiny: TOLERANCE, mobile: 1e-3 } as const;

/**
 * Three steps of twin models, one by trainStep (tfjs), one by the graph, each with its own `make()` optimizer (at the
 * learning rates `rates` when given): the same losses, correct counts, weights, moving statistics and optimizer state.
 */
async function sameAsTfjs(name: ModelName, make: () => Optimizer, rates?: readonly number[], extra: Partial<ModelOptions> = {}): Promise<void> {
  const [eager, graphed] = pair(name, 0, { imageSize: TWIN_SIZE[name], ...extra });
  const [oa, ob] = [make(), make()];
  const { xs, ys } = batch(TWIN_SIZE[name]);
  const cw = tf.tensor1d(WEIGHTS);
  const trainer = await createTrainer({ model: graphed, optimizer: ob, classWeights: WEIGHTS, labelSmoothing: 0.05 });
  try {
    await assertStepsAgree({
      eager, optimizer: oa, graphStep: (x, y) => trainer.step(x, y), xs, ys, classWeights: cw, steps: 3, tolerance: TWIN_TOLERANCE[name], sameCorrect: true,
      beforeStep: (step) => {
        const lr = rates?.[step];
        if (lr !== undefined) for (const o of [oa, ob]) setLearningRate(o, lr);
      },
    });
    trainer.sync();
    const weights = await maxDifference(eager.weights.map((w) => w.read()), graphed.weights.map((w) => w.read()));
    assert.ok(weights < TWIN_TOLERANCE[name], `weights differ by ${weights}`);
    const [wa, wb] = [await oa.getWeights(), await ob.getWeights()];
    // The same slots in the same order (names without the suffixes that tell the twins apart, e.g. kernel_1/m).
    const slotNames = (ws: Array<{ name: string }>) => ws.map((w) => w.name.replace(/_\d+\//, '/'));
    assert.deepEqual(slotNames(wb), slotNames(wa));
    const state = await maxDifference(wa, wb);
    assert.ok(state < TWIN_TOLERANCE[name], `optimizer state differs by ${state}`);
    assert.equal(ob.iterations, 3);
    tf.dispose([...wa, ...wb].map((w) => w.tensor).filter((t) => !(t instanceof tf.Variable)));
  } finally {
    trainer.dispose();
    tf.dispose([xs, ys, cw]);
    for (const o of [oa, ob]) o.dispose();
    eager.dispose();
    graphed.dispose();
  }
}

for (const name of ['resnet', 'tiny', 'mobile'] as const) {
  test(`${name}: graph steps give the tfjs step's losses, weights, moving statistics and Adam state`, async () => {
    // epsilon 1 keeps Adam's update linear in the gradient, so that float rounding cannot flip a near-zero update.
    await sameAsTfjs(name, () => tf.train.adam(1e-2, 0.9, 0.999, 1));
  });
}

test('with SGD (Nesterov momentum, the config\'s "sgd") graph steps follow the tfjs step, learning-rate changes included', async () => {
  await sameAsTfjs('resnet', () => tf.train.momentum(5e-2, 0.9, true), [5e-2, 2e-2, 1e-2]);
});

test('resnet with anti-aliased downsampling: graph steps follow the tfjs step (the fixed blur kernels included)', async () => {
  await sameAsTfjs('resnet', () => tf.train.momentum(5e-2, 0.9, true), [5e-2, 2e-2, 1e-2], { antialias: true });
});

test('a model that standardises each image first: graph steps follow the tfjs step', async () => {
  await sameAsTfjs('resnet', () => tf.train.momentum(5e-2, 0.9, true), [5e-2, 2e-2, 1e-2], { standardize: true });
});

test('zero padding, a frozen batch norm (inference mode) and a fixed filter: graph steps follow the tfjs step', async () => {
  // What a transfer model from a Keras MobileNetV2 holds: ZeroPadding2D before a valid stride-2 depthwise convolution,
  // frozen layers (a fixed 1x1 filter on the input, a frozen batch norm with its own moving statistics).
  const build = (): LayersModel => {
    const input = tf.input({ shape: [S, S, 1] });
    let x = tf.layers.conv2d({ filters: 3, kernelSize: 1, useBias: false, trainable: false, kernelInitializer: 'ones', name: 'fixed' }).apply(input);
    x = tf.layers.conv2d({ filters: 4, kernelSize: 3, padding: 'same', useBias: false, kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }), name: 'conv' }).apply(x);
    x = tf.layers.zeroPadding2d({ padding: [[0, 1], [0, 1]], name: 'pad' }).apply(x);
    x = tf.layers.depthwiseConv2d({ kernelSize: 3, strides: 2, padding: 'valid', useBias: false, depthwiseInitializer: tf.initializers.glorotUniform({ seed: 2 }), name: 'dw' }).apply(x);
    x = tf.layers.batchNormalization({ trainable: false, movingMeanInitializer: tf.initializers.constant({ value: 0.1 }), movingVarianceInitializer: tf.initializers.constant({ value: 0.5 }), name: 'frozen_bn' }).apply(x);
    x = tf.layers.reLU({ maxValue: 6, name: 'relu6' }).apply(x);
    x = tf.layers.batchNormalization({ momentum: 0.9, name: 'bn' }).apply(x);
    x = tf.layers.globalAveragePooling2d({ name: 'gap' }).apply(x);
    const out = tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }), name: 'out' }).apply(x);
    return tf.model({ inputs: input, outputs: out as ReturnType<typeof tf.input> });
  };
  const [eager, graphed] = [build(), build()];
  assert.deepEqual(planGraphTraining(graphed), { supported: true });
  const [oa, ob] = [tf.train.momentum(5e-2, 0.9, true), tf.train.momentum(5e-2, 0.9, true)];
  const { xs, ys } = batch();
  const cw = tf.tensor1d(WEIGHTS);
  const undo = holdFrozenBatchNorms(eager);
  const trainer = await createTrainer({ model: graphed, optimizer: ob, classWeights: WEIGHTS, labelSmoothing: 0.05 });
  try {
    await assertStepsAgree({ eager, optimizer: oa, graphStep: (x, y) => trainer.step(x, y), xs, ys, classWeights: cw, steps: 3, tolerance: 1e-4 });
    trainer.sync();
    assert.ok((await maxDifference(eager.weights.map((w) => w.read()), graphed.weights.map((w) => w.read()))) < 1e-4, 'weights');
    // The frozen layers did not move, in the graph either; the trained batch norm's statistics did.
    const fresh = build();
    const moved = movedWeights(graphed, fresh.weights.map((w) => w.read()));
    fresh.dispose();
    assert.deepEqual(moved.sort(), ['bn/beta', 'bn/gamma', 'bn/moving_mean', 'bn/moving_variance', 'conv/kernel', 'dw/depthwise_kernel', 'out/bias', 'out/kernel']);
  } finally {
    trainer.dispose();
    undo();
    tf.dispose([xs, ys, cw]);
    oa.dispose();
    ob.dispose();
    eager.dispose();
    graphed.dispose();
  }
});

test('per-image weights fed to the graph give the loss of trainStep with the same sampleWeights', async () => {
  const [eager, graphed] = pair('tiny');
  const [oa, ob] = [tf.train.adam(1e-2, 0.9, 0.999, 1), tf.train.adam(1e-2, 0.9, 0.999, 1)];
  const { xs, ys } = batch();
  const cw = tf.tensor1d(WEIGHTS);
  const sw = tf.tensor1d([0.5, 2, 1, 1, 3, 0.25]);
  const trainer = await createTrainer({ model: graphed, optimizer: ob, classWeights: WEIGHTS, labelSmoothing: 0.1 });
  try {
    for (let step = 0; step < 2; step++) {
      const a = trainStep({ model: eager, optimizer: oa, xs, ys, classWeights: cw, sampleWeights: sw, labelSmoothing: 0.1 });
      const b = trainer.step(xs, ys, step + 1, sw);
      const [la, lb] = [(await a.loss.data())[0] ?? 0, (await b.loss.data())[0] ?? 0];
      assert.ok(Math.abs(la - lb) < 1e-4, `step ${step + 1}: loss ${la} vs ${lb}`);
      tf.dispose([a.loss, a.correct, b.loss, b.correct]);
    }
    trainer.sync();
    assert.ok((await maxDifference(eager.weights.map((w) => w.read()), graphed.weights.map((w) => w.read()))) < 1e-4, 'weights');
  } finally {
    trainer.dispose();
    tf.dispose([xs, ys, cw, sw]);
    oa.dispose();
    ob.dispose();
    eager.dispose();
    graphed.dispose();
  }
});

/**
 * A tiny model twice (eager and graphed, the same weights), each with an Adam optimizer and a weight average folding
 * every `every` steps, a batch and a graph trainer; `free` disposes all of it.
 */
async function averagedPair(every: number) {
  const [eager, graphed] = pair('tiny');
  const [oa, ob] = [tf.train.adam(1e-2, 0.9, 0.999, 1), tf.train.adam(1e-2, 0.9, 0.999, 1)];
  const [ea, eb] = [await WeightAverage.create(eager, { decay: 0.9, every }), await WeightAverage.create(graphed, { decay: 0.9, every })];
  const { xs, ys } = batch();
  const cw = tf.tensor1d(WEIGHTS);
  const trainer = await createTrainer({ model: graphed, optimizer: ob, classWeights: WEIGHTS, labelSmoothing: 0, average: eb });
  /** Step `step` on both sides. */
  const stepBoth = (step: number): void => {
    const a = trainStep({ model: eager, optimizer: oa, xs, ys, classWeights: cw, labelSmoothing: 0 });
    ea.update(eager, step);
    const b = trainer.step(xs, ys, step);
    tf.dispose([a.loss, a.correct, b.loss, b.correct]);
  };
  const sameAverage = async (): Promise<boolean> => (await maxDifference(ea.model.weights.map((w) => w.read()), eb.model.weights.map((w) => w.read()))) < 1e-5;
  const free = (): void => {
    trainer.dispose();
    tf.dispose([xs, ys, cw]);
    for (const d of [ea, eb, oa, ob, eager, graphed]) d.dispose();
  };
  return { eager, graphed, ea, eb, trainer, stepBoth, sameAverage, free };
}

test('the weight average kept in the graph equals WeightAverage.update on the tfjs side', async () => {
  const p = await averagedPair(2);
  try {
    for (let step = 1; step <= 5; step++) p.stepBoth(step);
    p.trainer.sync();
    assert.equal(p.eb.count, p.ea.count);
    assert.equal(p.eb.count, 2);
    assert.ok(await p.sameAverage(), 'averaged weights');
  } finally {
    p.free();
  }
});

test('the weight average\'s stand-in (fewer steps than its interval) reaches the graph\'s copy: the first fold starts from it', async () => {
  const p = await averagedPair(4);
  try {
    for (let step = 1; step <= 4; step++) {
      p.stepBoth(step);
      if (step === 2) {
        // An epoch of two steps ends: validation sees the trained weights, not the random start.
        p.trainer.sync();
        assert.equal(p.ea.standInUntilFirstFold(p.eager), true);
        assert.equal(p.eb.standInUntilFirstFold(p.graphed), true);
        p.trainer.reload();
      }
    }
    p.trainer.sync();
    assert.deepEqual([p.ea.count, p.eb.count], [1, 1]);
    assert.equal(p.eb.standInUntilFirstFold(p.graphed), false, 'folded once: no stand-in any more');
    assert.ok(await p.sameAverage(), 'averaged weights');
  } finally {
    p.free();
  }
});

test('steps and syncs leave no tensors behind; dropout masks follow the run step', async () => {
  const [m1, m2] = pair('resnet', 0.3);
  const [o1, o2] = [tf.train.adam(1e-3), tf.train.adam(1e-3)];
  const { xs, ys } = batch();
  const t1 = await createTrainer({ model: m1, optimizer: o1, classWeights: WEIGHTS, labelSmoothing: 0.05, seed: 9 });
  const t2 = await createTrainer({ model: m2, optimizer: o2, classWeights: WEIGHTS, labelSmoothing: 0.05, seed: 9 });
  try {
    await assertNoTensorLeak('GraphTrainer.step', () => {
      const r = t1.step(xs, ys);
      tf.dispose([r.loss, r.correct]);
    });
    await assertNoTensorLeak('GraphTrainer.sync', () => t1.sync());
    // Same state, same run step: the same masks; another run step: other masks.
    const losses = async (t: GraphTrainer, step: number): Promise<number> => {
      const r = t.step(xs, ys, step);
      const v = (await r.loss.data())[0] ?? Number.NaN;
      tf.dispose([r.loss, r.correct]);
      return v;
    };
    const [a, b] = [await losses(t2, 7), await losses(await fresh(), 7)];
    assert.ok(Math.abs(a - b) < 1e-6, `${a} vs ${b}`);
    const c = await losses(await fresh(), 8);
    assert.notEqual(c, a);
  } finally {
    t1.dispose();
    t2.dispose();
    for (const t of spares) t.trainer.dispose();
    for (const t of spares) { t.model.dispose(); t.optimizer.dispose(); }
    tf.dispose([xs, ys]);
    o1.dispose();
    o2.dispose();
    m1.dispose();
    m2.dispose();
  }
});

const spares: Array<{ trainer: GraphTrainer; model: LayersModel; optimizer: Optimizer }> = [];
async function fresh(): Promise<GraphTrainer> {
  const model = buildModel({ name: 'resnet', imageSize: S, width: 8, dropout: 0.3, l2: 1e-4, seed: 5 });
  const optimizer = tf.train.adam(1e-3);
  const trainer = await createTrainer({ model, optimizer, classWeights: WEIGHTS, labelSmoothing: 0.05, seed: 9 });
  spares.push({ trainer, model, optimizer });
  return trainer;
}

// A tensor fed from JavaScript lends V8's memory to TensorFlow; its release calls napi_delete_reference, which only
// the main thread may. Were a variable to adopt a fed buffer, Adam's copy-on-write would release it on a TensorFlow
// thread: Node's reference list then races and corrupts (SIGSEGV at exit in node_napi_env__::DeleteMe, or a hang).
test('every session variable adopts a copy of its fed initial value, never the fed buffer itself', async () => {
  const [m, spare] = pair('resnet', 0.2);
  spare.dispose();
  const [adam, sgd] = [tf.train.adam(1e-3), tf.train.sgd(0.1)];
  const average = await WeightAverage.create(m, { decay: 0.9, every: 1 });
  const text = trainingGraphText({ model: m, optimizer: adam, classWeights: WEIGHTS, labelSmoothing: 0.05, average });
  const nodes = new Map([...text.matchAll(/node \{ name: "([^"]+)" op: "([^"]+)"((?: input: "[^"]+")*)/g)].map((n) => [
    n[1] as string,
    { op: n[2] as string, inputs: [...(n[3] ?? '').matchAll(/input: "([^"]+)"/g)].map((i) => i[1] as string) },
  ]));
  const assigns = [...nodes.values()].filter((n) => n.op === 'AssignVariableOp');
  const variables = [...nodes.values()].filter((n) => n.op === 'VarHandleOp').length;
  assert.ok(variables > 3 * m.trainableWeights.length, `${variables} variables`);
  assert.equal(assigns.length, variables);
  for (const assign of assigns) {
    const value = nodes.get(assign.inputs[1] ?? '');
    assert.equal(value?.op, 'DeepCopy', `${assign.inputs[0]} adopts ${assign.inputs[1]}`);
    assert.equal(nodes.get(value.inputs[0] ?? '')?.op, 'Placeholder');
  }
  assert.throws(() => trainingGraphText({ model: m, optimizer: sgd, classWeights: WEIGHTS, labelSmoothing: 0 }), {
    name: 'BackendError',
    message: 'graph training needs a tf.train.adam or tf.train.momentum optimizer (this is SGD)',
  });
  average.dispose();
  adam.dispose();
  sgd.dispose();
  m.dispose();
});

test('GraphTrainer refuses another optimizer or an untranslatable model, and a disposed trainer', async () => {
  const [m, spare] = pair('tiny');
  spare.dispose();
  const rmsprop = tf.train.rmsprop(1e-2);
  await assert.rejects(createTrainer({ model: m, optimizer: rmsprop, classWeights: WEIGHTS, labelSmoothing: 0 }), {
    name: 'BackendError',
    message: 'graph training needs a tf.train.adam or tf.train.momentum optimizer (this is RMSProp)',
  });
  const input = tf.input({ shape: [S, S, 1] });
  const flat = tf.layers.flatten({ name: 'flat2' }).apply(input);
  const out = tf.layers.dense({ name: 'out2', units: 3, activation: 'softmax' }).apply(flat);
  const flatModel = tf.model({ inputs: input, outputs: out as ReturnType<typeof tf.input> });
  const adam = tf.train.adam(1e-3);
  await assert.rejects(createTrainer({ model: flatModel, optimizer: adam, classWeights: WEIGHTS, labelSmoothing: 0 }), {
    name: 'BackendError',
    message: 'graph training cannot train this model: layer "flat2" is a Flatten, which graph training does not translate',
  });
  const trainer = await createTrainer({ model: m, optimizer: adam, classWeights: WEIGHTS, labelSmoothing: 0 });
  trainer.dispose();
  const { xs, ys } = batch();
  assert.throws(() => trainer.step(xs, ys), { name: 'BackendError', message: 'this graph trainer was disposed' });
  tf.dispose([xs, ys]);
  rmsprop.dispose();
  adam.dispose();
  flatModel.dispose();
  m.dispose();
});
