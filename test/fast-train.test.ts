// Tests of lib/fast-train.ts: patched layers match the originals (values, gradients, moving statistics), undo, no leaks.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LayersModel, Tensor, Variable, io } from '@tensorflow/tfjs';
import { enableFastTraining, planFastTraining } from '../lib/fast-train.js';
import { buildModel } from '../lib/models.js';
import { loadTf } from '../lib/tf.js';
import { trainStep } from '../lib/train.js';
import { assertNoTensorLeak } from './helpers/tf-leaks.js';

const tf = loadTf();
const native = tf.getBackend() === 'tensorflow';
const needsNative = native ? false : 'the patches need tfjs-node (backend "tensorflow")';

/**
 * Tolerance of the comparisons: float32 results of different (fused) kernels differ by rounding only, so a patched
 * value may differ from the original by at most 1e-4 times the largest magnitude of the original tensor.
 */
const REL = 1e-4;

/**
 * A small model with every patched kind and its variants: conv without and with bias (+ relu activation), BN with
 * momentum 0.9 and the defaults (0.99, epsilon 1e-3), ReLU, ReLU(6), Activation('relu'), max pooling 3x3/2 same and
 * 2x2 valid, a residual add, and an L2-regularised softmax head.
 */
function buildTestModel(): LayersModel {
  const input = tf.input({ name: 'x', shape: [8, 8, 2] });
  const conv1 = tf.layers.conv2d({ name: 'c1', filters: 4, kernelSize: 3, padding: 'same', useBias: false, kernelInitializer: tf.initializers.heNormal({ seed: 1 }) });
  const bn1 = tf.layers.batchNormalization({ name: 'bn1', momentum: 0.9 });
  const relu1 = tf.layers.reLU({ name: 'r1' });
  const pool1 = tf.layers.maxPooling2d({ name: 'p1', poolSize: 3, strides: 2, padding: 'same' });
  const conv2 = tf.layers.conv2d({ name: 'c2', filters: 4, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: tf.initializers.heNormal({ seed: 2 }) });
  const bn2 = tf.layers.batchNormalization({ name: 'bn2' });
  const relu2 = tf.layers.reLU({ name: 'r2', maxValue: 6 });
  const add = tf.layers.add({ name: 'add' });
  const act = tf.layers.activation({ name: 'a1', activation: 'relu' });
  const pool2 = tf.layers.maxPooling2d({ name: 'p2', poolSize: 2, strides: 2, padding: 'valid' });
  const gap = tf.layers.globalAveragePooling2d({ name: 'gap' });
  const dense = tf.layers.dense({ name: 'out', units: 3, activation: 'softmax', kernelRegularizer: tf.regularizers.l2({ l2: 1e-2 }), kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) });
  const skip = pool1.apply(relu1.apply(bn1.apply(conv1.apply(input)))) as ReturnType<typeof tf.input>;
  const branch = relu2.apply(bn2.apply(conv2.apply(skip))) as ReturnType<typeof tf.input>;
  const y = dense.apply(gap.apply(pool2.apply(act.apply(add.apply([skip, branch]))))) as ReturnType<typeof tf.input>;
  return tf.model({ name: 'fast_test', inputs: input, outputs: y });
}

/** Two copies of the test model with the same weights; BN parameters and moving statistics set away from 1 and 0. */
function twins(): [LayersModel, LayersModel] {
  const a = buildTestModel();
  const b = buildTestModel();
  const weights = tf.tidy(() =>
    a.weights.map((w, i) => {
      const shape = w.shape as number[];
      if (/gamma|moving_variance/.test(w.originalName)) return tf.randomUniform(shape, 0.5, 1.5, 'float32', 100 + i);
      if (/beta|moving_mean|bias/.test(w.originalName)) return tf.randomNormal(shape, 0, 0.2, 'float32', 200 + i);
      return w.read().clone();
    }),
  );
  a.setWeights(weights);
  b.setWeights(weights);
  tf.dispose(weights);
  return [a, b];
}

/** Asserts |actual - expected| <= REL * max|expected| element-wise (a tiny floor for all-zero tensors). */
function assertClose(actual: Tensor, expected: Tensor, what: string, rel = REL): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  const [diff, scale] = tf.tidy(() => [actual.sub(expected).abs().max().dataSync()[0] ?? Number.NaN, expected.abs().max().dataSync()[0] ?? Number.NaN]);
  assert.ok(diff <= rel * Math.max(scale, 1e-6), `${what}: max difference ${diff} exceeds ${rel} x ${scale}`);
}

/** A scalar loss with a different weight for every output, plus the layers' regularisation losses. */
function lossOf(model: LayersModel, x: Tensor, mix: Tensor): Tensor {
  let total = (model.apply(x, { training: true }) as Tensor).mul(mix).sum();
  for (const reg of model.losses) total = total.add(reg());
  return total;
}

const hasOwnCall = (model: LayersModel): string[] => model.layers.filter((l) => Object.prototype.hasOwnProperty.call(l, 'call')).map((l) => l.name);

test('the first patch (with its one-time checks of the native kernels) leaves no tensors behind once undone', () => {
  const before = tf.memory().numTensors;
  const model = buildTestModel();
  const optimizer = tf.train.adam(1e-3);
  enableFastTraining(model, { optimizer })();
  optimizer.dispose();
  model.dispose();
  assert.equal(tf.memory().numTensors, before);
});

test('planFastTraining lists the patched layers and why others are left alone', () => {
  const model = buildTestModel();
  try {
    const plan = planFastTraining(model);
    assert.deepEqual(
      plan.layers.filter((l) => l.kind).map((l) => `${l.name}:${l.kind}`),
      ['c1:conv', 'bn1:batchNorm', 'r1:relu', 'p1:maxPool', 'c2:conv', 'bn2:batchNorm', 'r2:relu6', 'a1:relu', 'p2:maxPool'],
    );
    assert.equal(plan.patched, 9);
    assert.deepEqual(planFastTraining(model, { batchNorm: false, conv: false }).layers.filter((l) => l.reason).map((l) => `${l.name}: ${l.reason}`), [
      'c1: conv patches are turned off',
      'bn1: batchNorm patches are turned off',
      'c2: conv patches are turned off',
      'bn2: batchNorm patches are turned off',
    ]);
  } finally {
    model.dispose();
  }
  const input = tf.input({ shape: [4, 4, 2] });
  const odd = [
    tf.layers.batchNormalization({ name: 'bn_axis1', axis: 1 }),
    tf.layers.batchNormalization({ name: 'bn_frozen', trainable: false }),
    tf.layers.reLU({ name: 'relu_max3', maxValue: 3 }),
    tf.layers.activation({ name: 'tanh', activation: 'tanh' }),
  ];
  const other = tf.model({ inputs: input, outputs: odd.reduce((x, layer) => layer.apply(x) as typeof input, input) });
  try {
    const plan = planFastTraining(other);
    assert.equal(plan.patched, 0);
    assert.deepEqual(plan.layers.filter((l) => l.reason).map((l) => `${l.name}: ${l.reason}`), [
      'bn_axis1: axis 1 is not the last one of a 4-D input',
      'bn_frozen: the layer is frozen (it normalises with its moving statistics: holdFrozenBatchNorms of lib/transfer.ts)',
      'relu_max3: maxValue 3 is neither unset nor 6',
      'tanh: activation "tanh" is not relu',
    ]);
    const undo = enableFastTraining(other);
    assert.deepEqual(hasOwnCall(other), [], 'unsupported layers keep their original call');
    undo();
  } finally {
    other.dispose();
  }
  const tiny = buildModel({ name: 'tiny', imageSize: 32 });
  try {
    const kinds = planFastTraining(tiny).layers.map((l) => l.kind).filter(Boolean);
    assert.deepEqual([...new Set(kinds)], ['conv', 'batchNorm', 'relu', 'maxPool']);
    assert.equal(kinds.length, 16);
  } finally {
    tiny.dispose();
  }
});

test('patched training matches the original: outputs, gradients (input and weights), moving statistics', { skip: needsNative }, () => {
  const [plain, fast] = twins();
  const undo = enableFastTraining(fast);
  try {
    assert.deepEqual(hasOwnCall(fast), ['c1', 'bn1', 'r1', 'p1', 'c2', 'bn2', 'r2', 'a1', 'p2']);
    tf.tidy(() => {
      const x = tf.randomNormal([4, 8, 8, 2], 0, 1, 'float32', 7);
      const mix = tf.randomNormal([4, 3], 0, 1, 'float32', 8);
      assertClose(fast.apply(x, { training: true }) as Tensor, plain.apply(x, { training: true }) as Tensor, 'training output');
      // Gradient with respect to the input (the stem conv's input gradient is still right when it is asked for).
      const dxFast = tf.grad((t: Tensor) => lossOf(fast, t, mix))(x);
      const dxPlain = tf.grad((t: Tensor) => lossOf(plain, t, mix))(x);
      assertClose(dxFast, dxPlain, 'gradient of the input');
      const gFast = tf.variableGrads(() => lossOf(fast, x, mix) as ReturnType<typeof tf.scalar>, fast.trainableWeights.map((w) => w.read() as never));
      const gPlain = tf.variableGrads(() => lossOf(plain, x, mix) as ReturnType<typeof tf.scalar>, plain.trainableWeights.map((w) => w.read() as never));
      assertClose(gFast.value, gPlain.value, 'loss');
      plain.trainableWeights.forEach((w, i) => {
        const other = fast.trainableWeights[i];
        assert.ok(other && other.originalName === w.originalName);
        const expected = gPlain.grads[(w.read() as Variable).name];
        const actual = gFast.grads[(other.read() as Variable).name];
        assert.ok(expected && actual, `gradients of ${w.originalName}`);
        assertClose(actual, expected, `gradient of ${w.originalName}`);
      });
    });
    // Four training-mode forward passes each (momentum 0.9 and 0.99): the moving statistics moved alike.
    plain.weights.forEach((w, i) => {
      const other = fast.weights[i];
      assert.ok(other);
      if (/moving_/.test(w.originalName)) assertClose(other.read(), w.read(), w.originalName);
    });
    tf.tidy(() => {
      const changed = plain.weights.find((w) => w.originalName === 'bn1/moving_mean');
      assert.ok(changed && changed.read().abs().max().dataSync()[0] !== 0);
    });
  } finally {
    undo();
    plain.dispose();
    fast.dispose();
  }
});

test('inference runs the original code: predictions are identical, patched or not', () => {
  const [plain, fast] = twins();
  const undo = enableFastTraining(fast);
  try {
    tf.tidy(() => {
      const x = tf.randomNormal([3, 8, 8, 2], 0, 1, 'float32', 9);
      assert.deepEqual((fast.predict(x) as Tensor).arraySync(), (plain.predict(x) as Tensor).arraySync());
      assert.deepEqual((fast.apply(x, { training: false }) as Tensor).arraySync(), (plain.apply(x) as Tensor).arraySync());
    });
  } finally {
    undo();
    plain.dispose();
    fast.dispose();
  }
});

test('a few Adam steps of lib/train.ts patched (layers and Adam) end with the same weights and optimizer state', { skip: needsNative }, async () => {
  const [plain, fast] = twins();
  const optimizers = [tf.train.adam(1e-2), tf.train.adam(1e-2)] as const;
  const undo = enableFastTraining(fast, { optimizer: optimizers[1] });
  assert.ok(Object.prototype.hasOwnProperty.call(optimizers[1], 'applyGradients'), 'the Adam update is patched');
  const classWeights = tf.tensor1d([1, 2, 0.5]);
  try {
    for (let step = 0; step < 5; step++) {
      tf.tidy(() => {
        const xs = tf.randomNormal([6, 8, 8, 2], 0, 1, 'float32', 30 + step);
        const ys = tf.oneHot(tf.tensor1d([0, 1, 2, 0, 1, 2], 'int32'), 3).toFloat();
        const a = trainStep({ model: plain, optimizer: optimizers[0], xs, ys, classWeights, labelSmoothing: 0.1 });
        const b = trainStep({ model: fast, optimizer: optimizers[1], xs, ys, classWeights, labelSmoothing: 0.1 });
        assertClose(b.loss, a.loss, `loss of step ${step + 1}`);
        assert.equal(b.correct.dataSync()[0], a.correct.dataSync()[0]);
      });
    }
    // Adam divides by sqrt(v): near-zero gradients can amplify rounding, hence a looser tolerance on the weights.
    plain.weights.forEach((w, i) => {
      const other = fast.weights[i];
      assert.ok(other);
      assertClose(other.read(), w.read(), `${w.originalName} after 5 steps`, 1e-3);
    });
    // The optimizer's state (what checkpoints save) is tfjs's: iterations, first and second moments.
    const [a, b] = [await optimizers[0].getWeights(), await optimizers[1].getWeights()];
    assert.equal(b.length, a.length);
    assert.equal(a.length, 1 + 2 * plain.trainableWeights.length);
    a.forEach((expected, i) => {
      const actual = b[i];
      assert.ok(actual);
      assertClose(actual.tensor, expected.tensor, `optimizer weight ${i} (${expected.name})`, 1e-3);
    });
  } finally {
    undo();
    tf.dispose(classWeights);
    for (const o of optimizers) o.dispose();
    plain.dispose();
    fast.dispose();
  }
});

test('a patched training step and patched inference leave no tensors behind', async () => {
  const [model, spare] = twins();
  spare.dispose();
  const optimizer = tf.train.adam(1e-3);
  const undo = enableFastTraining(model, { optimizer });
  const xs = tf.randomNormal([4, 8, 8, 2], 0, 1, 'float32', 11);
  const ys = tf.oneHot(tf.tensor1d([0, 1, 2, 1], 'int32'), 3).toFloat();
  const classWeights = tf.ones([3]);
  try {
    await assertNoTensorLeak('a patched trainStep', () => {
      const { loss, correct } = trainStep({ model, optimizer, xs, ys, classWeights, labelSmoothing: 0.05 });
      tf.dispose([loss, correct]);
    });
    await assertNoTensorLeak('a patched forward pass without gradients', () => tf.dispose(model.apply(xs, { training: true }) as Tensor));
    await assertNoTensorLeak('patched inference', () => tf.dispose(model.predict(xs) as Tensor));
  } finally {
    undo();
    tf.dispose([xs, ys, classWeights]);
    optimizer.dispose();
    model.dispose();
  }
});

test('undo restores the original calls, twice is harmless, and a second patch does not stack', { skip: needsNative }, () => {
  const [plain, fast] = twins();
  try {
    const undo = enableFastTraining(fast);
    const again = enableFastTraining(fast);
    assert.equal(hasOwnCall(fast).length, 9);
    again();
    assert.equal(hasOwnCall(fast).length, 9, 'the second patch patched nothing, so its undo restores nothing');
    undo();
    undo();
    assert.deepEqual(hasOwnCall(fast), []);
    tf.tidy(() => {
      const x = tf.randomNormal([4, 8, 8, 2], 0, 1, 'float32', 12);
      // The original code on both sides again: bit for bit the same.
      assert.deepEqual((fast.apply(x, { training: true }) as Tensor).arraySync(), (plain.apply(x, { training: true }) as Tensor).arraySync());
    });
    const relu = enableFastTraining(fast, { batchNorm: false, conv: false, maxPool: false });
    assert.deepEqual(hasOwnCall(fast), ['r1', 'r2', 'a1']);
    relu();
    const optimizer = tf.train.adam(1e-3);
    const sgd = tf.train.sgd(1e-3);
    try {
      const before = tf.memory().numTensors;
      const first = enableFastTraining(fast, { optimizer });
      const second = enableFastTraining(fast, { optimizer: sgd });
      assert.ok(Object.prototype.hasOwnProperty.call(optimizer, 'applyGradients'), 'adam is patched');
      assert.ok(!Object.prototype.hasOwnProperty.call(sgd, 'applyGradients'), 'sgd is left alone');
      tf.tidy(() => {
        const xs = tf.randomNormal([2, 8, 8, 2], 0, 1, 'float32', 14);
        const ys = tf.oneHot(tf.tensor1d([0, 2], 'int32'), 3).toFloat();
        tf.dispose(Object.values(trainStep({ model: fast, optimizer, xs, ys, classWeights: tf.ones([3]), labelSmoothing: 0 })));
      });
      second();
      first();
      assert.ok(!Object.prototype.hasOwnProperty.call(optimizer, 'applyGradients'), 'adam is restored');
      // What stays: the optimizer's own moments (2 per trainable weight); the native mirrors are gone.
      assert.equal(tf.memory().numTensors, before + 2 * fast.trainableWeights.length);
    } finally {
      optimizer.dispose();
      sgd.dispose();
    }
  } finally {
    plain.dispose();
    fast.dispose();
  }
});

test('the native Adam leaves tensors read before a step untouched (no update in place of shared buffers)', { skip: needsNative }, () => {
  const [model, spare] = twins();
  spare.dispose();
  const optimizer = tf.train.adam(1e-1);
  const undo = enableFastTraining(model, { optimizer });
  const weight = model.trainableWeights[0];
  assert.ok(weight);
  const held = tf.keep(weight.read().clone());
  const copy = held.arraySync();
  try {
    tf.tidy(() => {
      const xs = tf.randomNormal([2, 8, 8, 2], 0, 1, 'float32', 15);
      const ys = tf.oneHot(tf.tensor1d([1, 2], 'int32'), 3).toFloat();
      for (let i = 0; i < 2; i++) tf.dispose(Object.values(trainStep({ model, optimizer, xs, ys, classWeights: tf.ones([3]), labelSmoothing: 0 })));
    });
    assert.deepEqual(held.arraySync(), copy, 'the tensor held before the steps');
    assert.notDeepEqual(weight.read().arraySync(), copy, 'the weight itself moved');
  } finally {
    undo();
    held.dispose();
    optimizer.dispose();
    model.dispose();
  }
});

test('a patched model saves the same standard model.json and weights, which plain tf.loadLayersModel loads', async () => {
  const model = buildTestModel();
  const save = async (): Promise<io.ModelArtifacts> => {
    let artifacts: io.ModelArtifacts | undefined;
    await model.save(tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }));
    assert.ok(artifacts);
    return artifacts;
  };
  let loaded: LayersModel | undefined;
  try {
    const before = await save();
    const undo = enableFastTraining(model);
    const patched = await save();
    undo();
    const after = await save();
    assert.deepEqual(patched.modelTopology, before.modelTopology);
    assert.deepEqual(after.modelTopology, before.modelTopology);
    assert.deepEqual(patched.weightSpecs, before.weightSpecs);
    assert.deepEqual(patched.weightData, before.weightData);
    // Standard tfjs-layers classes only: nothing of the patch leaks into the topology.
    const layerClasses = (patched.modelTopology as { config: { layers: Array<{ class_name: string }> } }).config.layers.map((l) => l.class_name);
    assert.deepEqual([...new Set(layerClasses)].sort(), [
      'Activation', 'Add', 'BatchNormalization', 'Conv2D', 'Dense', 'GlobalAveragePooling2D', 'InputLayer', 'MaxPooling2D', 'ReLU',
    ]);
    loaded = await tf.loadLayersModel(tf.io.fromMemory(patched));
    const m = loaded;
    tf.tidy(() => {
      const x = tf.randomNormal([2, 8, 8, 2], 0, 1, 'float32', 13);
      assert.deepEqual((m.predict(x) as Tensor).arraySync(), (model.predict(x) as Tensor).arraySync());
    });
  } finally {
    loaded?.dispose();
    model.dispose();
  }
});

test('on a backend other than tfjs-node the patch is a no-op', { skip: native ? false : 'tfjs-node is not loaded' }, async () => {
  assert.ok(await tf.setBackend('cpu'));
  try {
    const model = buildTestModel();
    try {
      const undo = enableFastTraining(model);
      assert.deepEqual(hasOwnCall(model), []);
      undo();
    } finally {
      model.dispose();
    }
  } finally {
    assert.ok(await tf.setBackend('tensorflow'));
  }
});
