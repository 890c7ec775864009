// Tests of lib/models.ts: shapes, exact parameter and FLOP counts, seeded initialisation, a quick overfit, no leaks.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import type { LayersModel, SymbolicTensor, Tensor } from '@tensorflow/tfjs';
import { PRESETS, RECIPE_KEYS, presetMatching, presetNamed, resolveConfig, type Config, type PresetName } from '../lib/config.js';
import { ConfigError } from '../lib/errors.js';
import {
  MODEL_CATALOG,
  buildModel,
  modelOptionsFromConfig,
  parseDepth,
  resolveModelOptions,
  summarizeModel,
  type ModelName,
  type ModelOptions,
} from '../lib/models.js';
import { createRng } from '../lib/random.js';
import { loadTf } from '../lib/tf.js';
import { assertNoTensorLeak } from './helpers/tf-leaks.js';

const tf = loadTf();

/** Builds a model, hands it to `fn`, disposes it whatever happens. */
async function withModel<T>(options: ModelOptions, fn: (model: LayersModel) => T | Promise<T>): Promise<T> {
  const model = buildModel(options);
  try {
    return await fn(model);
  } finally {
    model.dispose();
  }
}

/** A [n, size, size, 1] batch in [0, 1]: class k has a bright square in its own place, plus noise. */
function separableBatch(size: number, perClass: number, seed: number): { xs: Tensor; ys: Tensor } {
  const rng = createRng(seed);
  const n = perClass * 3;
  const pixels = new Float32Array(n * size * size);
  const labels: number[] = [];
  const q = size / 4;
  const corners: Array<[number, number]> = [
    [0, 0],
    [2 * q, 2 * q],
    [0, 2 * q],
  ];
  for (let i = 0; i < n; i++) {
    const k = i % 3;
    labels.push(k);
    const [r0, c0] = corners[k] as [number, number];
    for (let r = 0; r < size; r++) {
      for (let c = 0; c < size; c++) {
        const inside = r >= r0 && r < r0 + 2 * q && c >= c0 && c < c0 + 2 * q;
        pixels[(i * size + r) * size + c] = (inside ? 0.7 : 0.1) + 0.2 * rng();
      }
    }
  }
  return tf.tidy(() => ({
    xs: tf.tensor4d(pixels, [n, size, size, 1]),
    ys: tf.oneHot(tf.tensor1d(labels, 'int32'), 3).toFloat(),
  }));
}

const SMALL: Record<ModelName, ModelOptions> = {
  resnet: { name: 'resnet', imageSize: 32, width: 4, depth: [1, 1, 1, 1] },
  mobile: { name: 'mobile', imageSize: 32, width: 4 },
  tiny: { name: 'tiny', imageSize: 32, width: 4 },
};

for (const name of ['resnet', 'mobile', 'tiny'] as const) {
  test(`${name}: [2, 32, 32, 1] in, [2, 3] softmax out, predict leaks nothing`, async () => {
    await withModel(SMALL[name], async (model) => {
      assert.deepEqual(model.inputs[0]?.shape, [null, 32, 32, 1]);
      assert.deepEqual(model.outputs[0]?.shape, [null, 3]);
      assert.equal(model.name, name);
      const x = tf.tidy(() => tf.randomUniform([2, 32, 32, 1], 0, 1, 'float32', 1));
      try {
        const probs = tf.tidy(() => (model.predict(x) as Tensor).arraySync()) as number[][];
        assert.equal(probs.length, 2);
        for (const row of probs) {
          assert.equal(row.length, 3);
          assert.ok(row.every((p) => p >= 0 && p <= 1 && Number.isFinite(p)));
          assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5, `row sums to 1: ${row.join(', ')}`);
        }
        // Outside tf.tidy, which would dispose whatever predict left behind and hide it.
        await assertNoTensorLeak(`${name} predict`, () => {
          const out = model.predict(x) as Tensor;
          const values = out.dataSync();
          out.dispose();
          return values;
        });
      } finally {
        x.dispose();
      }
    });
  });
}

// The defaults at 224 and 128 px; parameter counts are also in the MODEL_CATALOG doc comment.
const DEFAULT_COUNTS: Array<[ModelName, number, number, number, number, number]> = [
  // name, parameters, trainable, FLOPs at 224, FLOPs at 128, layers
  ['resnet', 2_801_315, 2_796_515, 887_113_216, 289_670_656, 70],
  ['mobile', 2_261_251, 2_227_139, 584_545_536, 190_877_184, 153],
  ['tiny', 24_939, 24_699, 93_929_856, 30_671_232, 20],
];
for (const [name, parameters, trainable, flops224, flops128, layers] of DEFAULT_COUNTS) {
  const count = (n: number) => n.toLocaleString('en');
  test(`${name} defaults: ${count(parameters)} parameters, ${count(flops224)} FLOPs at 224 px`, async () => {
    await withModel({ name, imageSize: 224 }, (model) => {
      assert.deepEqual(summarizeModel(model, { name, imageSize: 224 }), {
        name,
        imageSize: 224,
        parameters,
        trainableParameters: trainable,
        flops: flops224,
        layers,
      });
    });
    await withModel({ name, imageSize: 128 }, (model) => {
      const s = summarizeModel(model, { name, imageSize: 128 });
      assert.equal(s.parameters, parameters);
      assert.equal(s.flops, flops128);
    });
  });
}

// Each preset's model, as the PRESETS doc comment in lib/config.ts gives it: name, px, parameters, FLOPs per image.
const PRESET_MODELS: Record<PresetName, [ModelName, number, number, number]> = {
  smoke: ['tiny', 32, 24_939, 1_917_312],
  cpu: ['resnet', 128, 703_315, 75_629_312],
  gpu: ['resnet', 128, 703_315, 75_629_312],
};
test('each preset builds the model its doc comment gives, parameters and FLOPs included', async () => {
  assert.deepEqual(Object.keys(PRESET_MODELS), Object.keys(PRESETS));
  for (const [preset, [name, imageSize, parameters, flops]] of Object.entries(PRESET_MODELS)) {
    const config = resolveConfig(preset as PresetName);
    const options: ModelOptions = { name: config.model as ModelName, imageSize: config.imageSize, ...(config.modelWidth ? { width: config.modelWidth } : {}) };
    await withModel(options, (model) => {
      const s = summarizeModel(model, options);
      assert.deepEqual([s.name, s.imageSize, s.parameters, s.flops], [name, imageSize, parameters, flops], preset);
    });
  }
});

test('the gpu preset is the recipe the shipped model was trained with (models/default/pneumotype.json)', () => {
  const card = JSON.parse(readFileSync(new URL('../models/default/pneumotype.json', import.meta.url), 'utf8')) as { training: { config: Config } };
  const gpu = resolveConfig('gpu');
  const shipped = resolveConfig(undefined, card.training.config); // keys added since then have their defaults
  assert.deepEqual(Object.fromEntries(RECIPE_KEYS.map((k) => [k, shipped[k]])), Object.fromEntries(RECIPE_KEYS.map((k) => [k, gpu[k]])));
  assert.equal(presetMatching(card.training.config), 'gpu');
});

test('resolveConfig and presetNamed: tiny is smoke; an unknown preset is a ConfigError, never the bare defaults', () => {
  assert.deepEqual(resolveConfig('tiny' as PresetName), resolveConfig('smoke'));
  assert.equal(presetNamed('tiny'), 'smoke');
  assert.throws(() => resolveConfig('bogus' as PresetName), { name: 'ConfigError', message: 'preset "bogus" is not one of smoke (or tiny), cpu, gpu' });
  assert.throws(() => presetNamed('Cpu', 'PNEUMOTYPE_PRESET'), {
    name: 'ConfigError',
    message: 'PNEUMOTYPE_PRESET="Cpu" is not one of smoke (or tiny), cpu, gpu: set it to one of them, or unset it',
  });
});

test('presetMatching: the preset with the same recipe; speed and paths do not count, any recipe change does', () => {
  for (const p of Object.keys(PRESETS) as PresetName[]) assert.equal(presetMatching(resolveConfig(p)), p);
  assert.equal(presetMatching(resolveConfig('gpu', { augmentWorkers: 1, prepareConcurrency: 2, cacheDir: '/elsewhere' })), 'gpu');
  assert.equal(presetMatching(resolveConfig('gpu', { epochs: 10 })), undefined);
  assert.equal(presetMatching(resolveConfig('cpu', { seed: 7 })), undefined);
  assert.equal(presetMatching(resolveConfig()), undefined);
});

test('resnet uses the 5x5 stem below 128 px: 2,800,547 parameters at 32 px, 24 * 32 fewer', async () => {
  await withModel({ name: 'resnet', imageSize: 32 }, (model) => {
    assert.equal(model.countParams(), 2_801_315 - 24 * 32);
    assert.deepEqual(model.getLayer('stem_conv').weights[0]?.shape, [5, 5, 1, 32]);
  });
});

test('resnet structure: projection shortcuts only where the shape changes, conv layers without bias', async () => {
  await withModel({ name: 'resnet', imageSize: 64, width: 4 }, (model) => {
    const names = model.layers.map((l) => l.name);
    assert.deepEqual(
      names.filter((n) => n.endsWith('_proj')),
      ['stage2_block1_proj', 'stage3_block1_proj', 'stage4_block1_proj'],
    );
    for (const l of model.layers.filter((l) => l.getClassName() === 'Conv2D')) {
      assert.equal(l.weights.length, 1, `${l.name} has no bias`);
    }
    assert.deepEqual(model.getLayer('stage4_block2_add').outputShape, [null, 2, 2, 32]);
  });
});

test('resnet antialias: a fixed binomial blur subsamples after the stem pool and in every stride-2 block', async () => {
  await withModel({ name: 'resnet', imageSize: 128, width: 16, antialias: true }, (model) => {
    const blurs = model.layers.filter((l) => l.name.endsWith('_blur'));
    assert.deepEqual(blurs.map((l) => `${l.name} ${JSON.stringify(l.outputShape)}`), [
      'stem_pool_blur [null,32,32,16]',
      'stage2_block1_proj_blur [null,16,16,16]',
      'stage2_block1_blur [null,16,16,32]',
      'stage3_block1_proj_blur [null,8,8,32]',
      'stage3_block1_blur [null,8,8,64]',
      'stage4_block1_proj_blur [null,4,4,64]',
      'stage4_block1_blur [null,4,4,128]',
    ]);
    for (const l of blurs) {
      assert.equal(l.trainable, false, l.name);
      const [kernel] = l.getWeights();
      const channels = kernel?.shape[2] ?? 0;
      // Channel 0's 3x3 kernel, times 16: [1, 2, 1] x [1, 2, 1]; every channel the same.
      const values = Array.from(kernel?.dataSync() ?? []);
      assert.deepEqual(values.filter((_, i) => i % channels === 0).map((v) => v * 16), [1, 2, 1, 2, 4, 2, 1, 2, 1], l.name);
      assert.deepEqual(values.filter((_, i) => i % channels === channels - 1), values.filter((_, i) => i % channels === 0));
    }
    // The convolutions before a blur run at stride 1: 7 blurs and their fixed weights on top of the plain network.
    assert.deepEqual(model.getLayer('stage2_block1_conv1').getConfig().strides, [1, 1]);
    const s = summarizeModel(model, { name: 'resnet', imageSize: 128, width: 16 });
    assert.deepEqual([s.parameters, s.trainableParameters, s.flops, s.layers], [706_483, 700_915, 97_544_960, 77]);
  });
  assert.throws(() => buildModel({ name: 'mobile', imageSize: 32, antialias: true }), {
    name: 'ConfigError',
    message: 'model option antialias=true is not usable: expected false for "mobile" (only resnet has it)',
  });
});

test('modelDepth sets a ResNet\'s blocks per stage (--depth); anything else is refused with the value quoted', async () => {
  const options = modelOptionsFromConfig(resolveConfig('gpu', { modelDepth: '3,4,6,3' }));
  assert.deepEqual(options.depth, [3, 4, 6, 3]);
  await withModel(options, (model) => {
    const s = summarizeModel(model, options);
    // ResNet-34-like at width 16: 1.9x the parameters and 2.0x the FLOPs of the presets' ResNet-18-like network.
    assert.deepEqual([s.parameters, s.flops], [1_338_323, 151_126_784]);
  });
  assert.equal(modelOptionsFromConfig(resolveConfig('gpu')).depth, undefined, 'the default: the architecture\'s own');
  assert.deepEqual(parseDepth('resnet', ' 1, 1,1 ,1'), [1, 1, 1, 1]);
  for (const text of ['3,x', '3,,3', '0,1', '2.5', '']) {
    assert.throws(() => parseDepth('resnet', text), {
      name: 'ConfigError',
      message: `modelDepth "${text}" is not usable: expected blocks per stage, whole numbers of at least 1 separated by commas, e.g. "3,4,6,3"`,
    });
  }
  assert.throws(() => modelOptionsFromConfig(resolveConfig('cpu', { model: 'mobile', modelDepth: '2,2' })), {
    name: 'ConfigError',
    message: 'modelDepth "2,2" is not usable with model "mobile": only resnet has blocks per stage',
  });
});

test('standardize: every image is brought to zero mean and unit variance first, by fixed weights', async () => {
  const tf = loadTf();
  await withModel({ name: 'tiny', imageSize: 32, standardize: true }, async (model) => {
    const layer = model.getLayer('standardize');
    assert.equal(model.layers[1], layer);
    assert.equal(layer.trainable, false);
    assert.equal(model.trainableWeights.some((w) => w.name.startsWith('standardize')), false);
    // Two images of other brightness and contrast (the second is half the first, plus 0.3): each becomes
    // (x - mean) / sqrt(variance + 1e-3) over its own pixels, so nearly the same image.
    const probe = tf.model({ inputs: model.inputs, outputs: layer.output as SymbolicTensor });
    const a = Array.from(tf.tidy(() => tf.randomUniform([32 * 32], 0, 0.8, 'float32', 9).dataSync()));
    const b = a.map((v) => v / 2 + 0.3);
    const out = tf.tidy(() => probe.predict(tf.tensor4d([...a, ...b], [2, 32, 32, 1])) as Tensor);
    const got = Array.from(out.dataSync());
    out.dispose();
    const standardized = (v: number[]) => {
      const mean = v.reduce((x, y) => x + y, 0) / v.length;
      const variance = v.reduce((x, y) => x + (y - mean) ** 2, 0) / v.length;
      return v.map((x) => (x - mean) / Math.sqrt(variance + 1e-3));
    };
    const expected = [...standardized(a), ...standardized(b)];
    assert.ok(got.every((v, i) => Math.abs(v - (expected[i] ?? Number.NaN)) < 1e-4));
    assert.ok(got.slice(0, 1024).every((v, i) => Math.abs(v - (got[1024 + i] ?? Number.NaN)) < 0.05));
    // One layer and 2 x 32 x 32 fixed weights (scale and offset) on top of the plain tiny model; nothing else changes.
    const s = summarizeModel(model, { name: 'tiny', imageSize: 32 });
    assert.deepEqual([s.parameters, s.trainableParameters, s.flops, s.layers], [24_939 + 2_048, 24_699, 1_917_312, 20 + 1]);
  });
  assert.throws(() => buildModel({ name: 'tiny', imageSize: 32, standardize: 1 as unknown as boolean }), {
    name: 'ConfigError',
    message: 'model option standardize=1 is not usable: expected true or false',
  });
});

test('mobile structure: residual adds at stride 1 and equal channels, ReLU6', async () => {
  await withModel({ name: 'mobile', imageSize: 32, width: 8 }, (model) => {
    const adds = model.layers.filter((l) => l.getClassName() === 'Add').map((l) => l.name);
    assert.deepEqual(adds, [
      'block3_add', 'block5_add', 'block6_add', 'block8_add', 'block9_add', 'block10_add',
      'block12_add', 'block13_add', 'block15_add', 'block16_add',
    ]);
    // block1 has expansion 1: no expand conv
    assert.throws(() => model.getLayer('block1_expand'), /block1_expand/);
    assert.deepEqual(model.getLayer('block2_expand').weights[0]?.shape, [1, 1, 8, 48]);
    assert.equal(model.getLayer('block2_depthwise_relu').getConfig().maxValue, 6);
    assert.deepEqual(model.getLayer('block2_depthwise').weights[0]?.shape, [3, 3, 48, 1]);
    assert.deepEqual(model.getLayer('top_conv').outputShape, [null, 1, 1, 640]);
  });
});

test('FLOPs of a hand-checkable model equal the hand count', () => {
  const model = tf.sequential({
    layers: [
      // 8x8x1 -> 8x8x4: 2 * (3*3*1) * (8*8*4) = 4,608
      tf.layers.conv2d({ inputShape: [8, 8, 1], filters: 4, kernelSize: 3, padding: 'same' }),
      // 8x8x4 -> 4x4x4: 2 * (3*3) * (4*4*4) = 1,152
      tf.layers.depthwiseConv2d({ kernelSize: 3, strides: 2, padding: 'same' }),
      // BN and pooling: not counted
      tf.layers.batchNormalization(),
      tf.layers.globalAveragePooling2d({}),
      // 4 -> 3: 2 * 4 * 3 = 24
      tf.layers.dense({ units: 3, activation: 'softmax' }),
    ],
  });
  try {
    const s = summarizeModel(model, { name: 'tiny', imageSize: 8 });
    assert.equal(s.flops, 4_608 + 1_152 + 24);
    // conv 9*4 + 4, depthwise 9*4 + 4, BN 4*4 (2*4 not trainable), dense 4*3 + 3
    assert.equal(s.parameters, 40 + 40 + 16 + 15);
    assert.equal(s.trainableParameters, 40 + 40 + 8 + 15);
    assert.equal(s.layers, 5);
  } finally {
    model.dispose();
  }
});

test('FLOPs of separable convs and of models nested in models', () => {
  const inner = tf.sequential({
    layers: [
      // 8x8x4 -> 8x8x2: depthwise 2 * 9 * (8*8*4) = 4,608, pointwise 2 * 4 * (8*8*2) = 1,024
      tf.layers.separableConv2d({ inputShape: [8, 8, 4], filters: 2, kernelSize: 3, padding: 'same' }),
    ],
  });
  // 8x8x2 -> 8x8x2 through a 1x1 conv: 2 * 2 * (8*8*2) = 512
  const outer = tf.sequential({ layers: [inner, tf.layers.conv2d({ filters: 2, kernelSize: 1 })] });
  try {
    assert.equal(summarizeModel(outer, { name: 'tiny', imageSize: 8 }).flops, 4_608 + 1_024 + 512);
  } finally {
    outer.dispose();
  }
});

test('FLOPs of the tiny model at 32 px, counted by hand', async () => {
  await withModel({ name: 'tiny', imageSize: 32, width: 2 }, (model) => {
    // convs 3x3 'same' at 32, 16, 8, 4 px with channels 1->2->4->8->16, then dense 16 -> 3
    const hand = 2 * (9 * 1 * 2 * 32 * 32 + 9 * 2 * 4 * 16 * 16 + 9 * 4 * 8 * 8 * 8 + 9 * 8 * 16 * 4 * 4) + 2 * 16 * 3;
    assert.equal(summarizeModel(model, { name: 'tiny', imageSize: 32 }).flops, hand);
  });
});

test('the same seed gives the same initial weights, another seed other weights, every kernel its own', async () => {
  const weightsOf = (model: LayersModel) => model.getWeights().map((w) => Array.from(w.dataSync()));
  const options: ModelOptions = { name: 'resnet', imageSize: 32, width: 4, depth: [2, 1, 1, 1], seed: 7 };
  const a = await withModel(options, weightsOf);
  const b = await withModel(options, weightsOf);
  const c = await withModel({ ...options, seed: 8 }, weightsOf);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  await withModel(options, (model) => {
    // stage 1 has two blocks with same-shaped kernels: a shared seed would make them equal
    const k1 = model.getLayer('stage1_block1_conv1').getWeights()[0]?.dataSync();
    const k2 = model.getLayer('stage1_block2_conv1').getWeights()[0]?.dataSync();
    assert.ok(k1 && k2);
    assert.notDeepEqual(Array.from(k1), Array.from(k2));
  });
});

test('tiny at 32 px overfits a separable batch: loss halves within 30 steps, training leaks nothing', async () => {
  const { xs, ys } = separableBatch(32, 4, 3);
  try {
    await withModel({ name: 'tiny', imageSize: 32, seed: 1 }, async (model) => {
      model.compile({ optimizer: tf.train.adam(0.01), loss: 'categoricalCrossentropy' });
      const losses: number[] = [];
      for (let step = 0; step < 30; step++) losses.push((await model.trainOnBatch(xs, ys)) as number);
      const first = losses[0] as number;
      const last = losses[losses.length - 1] as number;
      assert.ok(last < first / 2, `loss went from ${first} to ${last}`);
      await assertNoTensorLeak('tiny trainOnBatch', () => model.trainOnBatch(xs, ys));
    });
  } finally {
    xs.dispose();
    ys.dispose();
  }
});

test('every model survives a save and load round trip with the same predictions', async () => {
  const x = tf.tidy(() => tf.randomUniform([1, 32, 32, 1], 0, 1, 'float32', 2));
  try {
    for (const name of ['resnet', 'mobile', 'tiny'] as const) {
      await withModel(SMALL[name], async (model) => {
        let saved: Parameters<typeof tf.io.fromMemory>[0] | undefined;
        await model.save(tf.io.withSaveHandler(async (artifacts) => {
          saved = artifacts;
          return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
        }));
        assert.ok(saved);
        const loaded = await tf.loadLayersModel(tf.io.fromMemory(saved));
        try {
          const [a, b] = tf.tidy(() => [model, loaded].map((m) => Array.from((m.predict(x) as Tensor).dataSync())));
          assert.deepEqual(b, a, `${name} predicts the same after loading`);
        } finally {
          loaded.dispose();
        }
      });
    }
  } finally {
    x.dispose();
  }
});

test('models are disposable: building and disposing leaves no tensors', async () => {
  await assertNoTensorLeak('build + dispose', () => buildModel({ name: 'mobile', imageSize: 32, width: 4 }).dispose());
});

test('resolveModelOptions fills the catalog defaults and DEFAULTS.seed', () => {
  assert.deepEqual(resolveModelOptions({ name: 'resnet', imageSize: 224 }), {
    name: 'resnet',
    imageSize: 224,
    width: 32,
    depth: [2, 2, 2, 2],
    dropout: 0.2,
    l2: 1e-4,
    numClasses: 3,
    seed: 42,
    antialias: false,
    standardize: false,
  });
  assert.equal(resolveModelOptions({ name: 'mobile', imageSize: 128 }).width, 16);
  assert.equal(resolveModelOptions({ name: 'tiny', imageSize: 32, width: 3 }).width, 3);
  assert.deepEqual(Object.keys(MODEL_CATALOG), ['resnet', 'mobile', 'tiny']);
});

test('l2 = 0 builds kernels without regularisers; dropout = 0 drops the dropout layer', async () => {
  await withModel({ name: 'tiny', imageSize: 32, l2: 0, dropout: 0 }, (model) => {
    assert.equal(model.getLayer('block1_conv').getConfig().kernelRegularizer, null);
    assert.equal(model.layers.some((l) => l.getClassName() === 'Dropout'), false);
  });
  await withModel({ name: 'tiny', imageSize: 32 }, (model) => {
    assert.deepEqual(model.getLayer('block1_conv').getConfig().kernelRegularizer, {
      className: 'L1L2',
      config: { l1: 0, l2: 1e-4 },
    });
  });
});

test('bad options are refused with the value quoted', () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ name: 'vgg', imageSize: 32 }, 'model "vgg" is not known: expected one of "resnet", "mobile", "tiny"'],
    [{ name: 'tiny', imageSize: 8 }, 'model option imageSize=8 is not usable: expected an integer >= 16'],
    [{ name: 'tiny', imageSize: 32.5 }, 'model option imageSize=32.5 is not usable: expected an integer >= 16'],
    [{ name: 'tiny', imageSize: 32, width: 0 }, 'model option width=0 is not usable: expected a positive integer'],
    [
      { name: 'resnet', imageSize: 32, depth: [2, 0] },
      'model option depth=[2,0] is not usable: expected a non-empty list of positive integers (blocks per stage)',
    ],
    [{ name: 'tiny', imageSize: 32, dropout: 1 }, 'model option dropout=1 is not usable: expected a number in [0, 1)'],
    [{ name: 'tiny', imageSize: 32, l2: -1 }, 'model option l2=-1 is not usable: expected a finite number >= 0'],
    [
      { name: 'tiny', imageSize: 32, numClasses: 1 },
      'model option numClasses=1 is not usable: expected an integer >= 2',
    ],
    [{ name: 'tiny', imageSize: 32, seed: 1.5 }, 'model option seed=1.5 is not usable: expected an integer'],
  ];
  for (const [options, message] of cases) {
    assert.throws(() => buildModel(options as unknown as ModelOptions), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, message);
      return true;
    });
  }
});
