// Models saved from Keras 3: a genuine Keras 3 MobileNetV2 topology loads, predicts what Keras predicted, and serves
// as the pretrained model of transfer learning, from a folder and from a URL.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { LayersModel, Tensor } from '@tensorflow/tfjs';
import { readModelArtifacts, saveModel } from '../lib/checkpoint.js';
import { enableFastTraining } from '../lib/fast-train.js';
import { GraphTrainer, planGraphTraining } from '../lib/graph-train.js';
import { fromKeras3, isKeras3Topology } from '../lib/keras3.js';
import { loadTf } from '../lib/tf.js';
import { relabel } from '../lib/relabel.js';
import { train, trainStep } from '../lib/train.js';
import { buildTransferModel, holdFrozenBatchNorms } from '../lib/transfer.js';
import { StallWatchdog } from '../lib/watchdog.js';
import { datasetFiles, writeTree } from './helpers/fixtures.js';
import { fixture, mobilenet, uniform, writeKeras3Model, type FixtureModel } from './helpers/keras3-fixture.js';
import { assertNoTensorLeak } from './helpers/tf-leaks.js';
import { assertStepsAgree, maxDifference } from './helpers/twin-steps.js';
import { movedWeights } from './helpers/weights.js';

/** Loads a fixture model through fromKeras3 and checks its predictions against Keras's (within 1e-5). */
async function loadAndCompare(dir: string, m: FixtureModel): Promise<LayersModel> {
  const tf = loadTf();
  const model = await tf.loadLayersModel(tf.io.fromMemory(fromKeras3(await readModelArtifacts(dir))));
  const got = tf.tidy(() => (model.predict(tf.tensor(Float32Array.from(uniform(m.inputShape.reduce((a, b) => a * b, 1), 1000)), m.inputShape)) as Tensor).arraySync()) as number[][];
  for (const [i, row] of m.expected.entries()) {
    for (const [j, p] of row.entries()) assert.ok(Math.abs((got[i]?.[j] ?? NaN) - p) < 1e-5, `${m.about}: image ${i} class ${j}: tfjs ${got[i]?.[j]}, Keras ${p}`);
  }
  return model;
}

let tmp: string;
let keras3Dir: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-keras3-'));
  keras3Dir = join(tmp, 'mobilenetv2');
  await writeKeras3Model(keras3Dir, mobilenet);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('tfjs-layers alone cannot read the Keras 3 topology (the reason for lib/keras3.ts)', async () => {
  const tf = loadTf();
  const artifacts = await readModelArtifacts(keras3Dir);
  assert.equal(isKeras3Topology(artifacts.modelTopology), true);
  await assert.rejects(tf.loadLayersModel(tf.io.fromMemory(artifacts)), {
    message: 'An InputLayer should be passed either a `batchInputShape` or an `inputShape`.',
  });
});

test('fromKeras3: the Keras 3 MobileNetV2 loads in tfjs and predicts what Keras predicted', async () => {
  const model = await loadAndCompare(keras3Dir, mobilenet);
  try {
    assert.equal(model.layers.length, mobilenet.modelConfig.config.layers.length);
    assert.equal(model.countParams(), 423_018, 'as Keras counts them');
    assert.equal(model.layers.filter((l) => l.getClassName() === 'BatchNormalization').length, 52);
    // A model tfjs saved itself passes unchanged.
    await saveModel({ dir: join(tmp, 'resaved'), model });
    const resaved = await readModelArtifacts(join(tmp, 'resaved'));
    assert.equal(isKeras3Topology(resaved.modelTopology), false);
    assert.equal(fromKeras3(resaved), resaved);
  } finally {
    model.dispose();
  }
});

test('fromKeras3: a Keras 3 Sequential model and a functional model nested in another predict what Keras predicted', async () => {
  for (const name of ['sequential', 'nested'] as const) {
    const m = fixture.models[name];
    await writeKeras3Model(join(tmp, name), m);
    const model = await loadAndCompare(join(tmp, name), m);
    model.dispose();
  }
});

test('a Keras 3 MobileNetV2 as the pretrained model: frozen, only the new head trains and no statistic moves', async () => {
  const tf = loadTf();
  const model = await buildTransferModel({ from: keras3Dir, imageSize: 64, freeze: true });
  const xs = tf.randomUniform([4, 64, 64, 1], 0, 1, 'float32', 3);
  const ys = tf.oneHot(tf.tensor1d([0, 1, 2, 1], 'int32'), 3).toFloat();
  const cw = tf.ones([3]);
  const optimizer = tf.train.sgd(0.5);
  const undo = holdFrozenBatchNorms(model);
  try {
    assert.equal(model.trainableWeights.length, 2);
    const before = model.weights.map((w) => w.read().clone());
    const step = (): void => {
      const { loss, correct } = trainStep({ model, optimizer, xs, ys, classWeights: cw, labelSmoothing: 0 });
      tf.dispose([loss, correct]);
    };
    step();
    const moved = movedWeights(model, before);
    tf.dispose(before);
    assert.deepEqual(moved, ['head_logits/kernel', 'head_logits/bias'], "the 52 batch norms' statistics included");
    await assertNoTensorLeak('a training step of the Keras 3 transfer model', step);
  } finally {
    undo();
    tf.dispose([xs, ys, cw]);
    optimizer.dispose();
    model.dispose();
  }
});

for (const freeze of [true, false]) {
  test(`a Keras 3 MobileNetV2 transfer model ${freeze ? 'frozen' : 'fine-tuned whole'}: the graph step follows the tfjs step`, async () => {
    const tf = loadTf();
    const watchdog = StallWatchdog.start({ seconds: 120, what: 'a TensorFlow graph call of test/keras3.test.ts', hint: 'See "The stall guard" in the README.' });
    const [eager, graphed] = [await buildTransferModel({ from: keras3Dir, imageSize: 96, freeze, dropout: 0 }), await buildTransferModel({ from: keras3Dir, imageSize: 96, freeze, dropout: 0 })];
    assert.ok(!eager.layers.some((l) => 'layers' in l), 'flat: the pretrained layers are the model\'s own');
    assert.deepEqual(planGraphTraining(graphed), { supported: true });
    const [oa, ob] = [tf.train.momentum(5e-3, 0.9, true), tf.train.momentum(5e-3, 0.9, true)];
    const xs = tf.randomUniform([6, 96, 96, 1], 0, 1, 'float32', 6);
    const ys = tf.oneHot(tf.tensor1d([0, 1, 2, 1, 0, 2], 'int32'), 3).toFloat();
    const cw = tf.tensor1d([1.3, 0.7, 1.3]);
    // The tfjs side with fast-train's fused native batch norms, the kernels the graph runs: on this randomly weighted
    // network tfjs-layers' own batch norm (built from single ops) rounds differently enough to move gradients by a
    // few per cent, for fast-train as for the graph.
    const undoHold = holdFrozenBatchNorms(eager);
    const undoFast = enableFastTraining(eager, { optimizer: oa });
    const undo = (): void => {
      undoFast();
      undoHold();
    };
    const trainer = await GraphTrainer.create({ model: graphed, optimizer: ob, classWeights: [1.3, 0.7, 1.3], labelSmoothing: 0.05, watchdog });
    try {
      // Fine-tuned whole, this random network's gradients are large enough (hundreds) that float rounding grows
      // chaotically after two steps; frozen, only the head trains and three steps agree as closely.
      await assertStepsAgree({ eager, optimizer: oa, graphStep: (x, y) => trainer.step(x, y), xs, ys, classWeights: cw, steps: freeze ? 3 : 2, tolerance: 2e-3 });
      trainer.sync();
      const worst = await maxDifference(eager.weights.map((w) => w.read()), graphed.weights.map((w) => w.read()));
      assert.ok(worst < 2e-3, `weights differ by ${worst}`);
      if (freeze) {
        // Only the head moved, in the graph too: the 52 batch norms' statistics included.
        const fresh = await buildTransferModel({ from: keras3Dir, imageSize: 96, freeze, dropout: 0 });
        const moved = movedWeights(graphed, fresh.weights.map((w) => w.read()));
        fresh.dispose();
        assert.deepEqual(moved, ['head_logits/kernel', 'head_logits/bias']);
      }
    } finally {
      trainer.dispose();
      undo();
      await watchdog.stop();
      tf.dispose([xs, ys, cw]);
      oa.dispose();
      ob.dispose();
      eager.dispose();
      graphed.dispose();
    }
  });
}

test('train --init-from a Keras 3 MobileNetV2 --freeze runs in the graph step and says so in the card', async () => {
  await writeTree(join(tmp, 'src'), await datasetFiles({ perClass: { train: 6, test: 2 } }));
  await relabel({ from: join(tmp, 'src'), out: join(tmp, 'labeled') });
  const r = await train({
    data: join(tmp, 'labeled'), out: join(tmp, 'run'), preset: 'smoke', cacheDir: join(tmp, 'cache'), initFrom: keras3Dir, freeze: true,
    config: { epochs: 1, graphOps: true },
  });
  assert.equal(r.card.training.engine, 'one TensorFlow graph per step (lib/graph-train.ts)');
  assert.equal(r.card.training.freeze, true);
  assert.equal(r.card.model.summary.trainableParameters, 1280 * 3 + 3);
});

test('a Keras 3 model.json from a URL loads as the pretrained model too', async () => {
  const server = createServer((req, res) => {
    const name = (req.url ?? '').replace(/^\/models\//, '');
    readFile(join(keras3Dir, name)).then(
      (body) => res.writeHead(200).end(body),
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const model = await buildTransferModel({ from: `http://127.0.0.1:${port}/models/model.json`, imageSize: 32 });
    try {
      assert.equal(model.countParams(), 423_018 - (1280 * 10 + 10) + (1280 * 3 + 3) + 3, 'the trunk, a 3-class head and the 1x1 gray-to-RGB filter');
    } finally {
      model.dispose();
    }
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

test('a Keras 3 tensor without its history is a clear error', () => {
  const broken = structuredClone(mobilenet.modelConfig) as { config: { layers: Array<{ inbound_nodes: Array<{ args: Array<{ config: Record<string, unknown> }> }> }> } };
  const node = broken.config.layers[1]?.inbound_nodes[0]?.args[0];
  assert.ok(node);
  delete node.config.keras_history;
  assert.throws(() => fromKeras3({ modelTopology: { model_config: broken } }), {
    name: 'ConfigError',
    message: 'the Keras 3 tensor in the model layer 1 ("Conv1") has no keras_history [layer, node, tensor] (it has null)',
  });
});
