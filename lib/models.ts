// The classifier architectures (ResNet-18-like, MobileNetV2-style, a tiny plain CNN) and their parameter/FLOP counts.
import type { LayersModel, SymbolicTensor } from '@tensorflow/tfjs';
import { CLASSES, DEFAULTS, type Config } from './config.js';
import { ConfigError, quote } from './errors.js';
import { createRng, type Rng } from './random.js';
import { loadTf, type Tf } from './tf.js';

export type ModelName = 'resnet' | 'mobile' | 'tiny';

/** The knobs of {@link buildModel}. Unset ones come from {@link MODEL_CATALOG} (and DEFAULTS.seed, CLASSES). */
export interface ModelOptions {
  name: ModelName;
  /** Side of the square, 1-channel input in pixels (the preset's imageSize: 32 smoke, 128 cpu and gpu). */
  imageSize: number;
  /** Base channels: resnet 32 (stages w, 2w, 4w, 8w), mobile 16 (channels of the first bottleneck), tiny 8. */
  width?: number;
  /** resnet only: basic blocks per stage; [2, 2, 2, 2] is ResNet-18-like, [3, 4, 6, 3] ResNet-34-like. */
  depth?: number[];
  /** Dropout rate before the dense head, in [0, 1). Default 0.2. */
  dropout?: number;
  /** L2 weight decay on conv and dense kernels (not depthwise kernels, BN or biases). Default 1e-4; 0 turns it off. */
  l2?: number;
  /** Output classes. Default 3 (CLASSES: normal, bacteria, virus). */
  numClasses?: number;
  /** Seed of the kernel initialisers: the same seed gives the same initial weights. Default DEFAULTS.seed. */
  seed?: number;
  /**
   * resnet only: anti-aliased downsampling (Zhang 2019, "Making convolutional networks shift-invariant again"): each
   * stride-2 step after the stem low-passes with a fixed 3x3 binomial filter before it subsamples (max pool at stride
   * 1 then blur at stride 2; a block's first conv at stride 1, then blur at stride 2; the projection shortcut blurs
   * first). Against high-frequency copy-pipeline traces. Default false.
   */
  antialias?: boolean;
  /**
   * Standardise every image on its own (zero mean, unit variance over its pixels) as the model's first layer, a
   * LayerNormalization whose weights are fixed (not trained), so that training, evaluate, predict and browsers all
   * apply it. Removes the absolute brightness and contrast that one copy pipeline normalised (mean 127, sd 50) and
   * the others did not. Default false.
   */
  standardize?: boolean;
}

/** {@link ModelOptions} with every default filled in. */
export interface ResolvedModelOptions {
  readonly name: ModelName;
  readonly imageSize: number;
  readonly width: number;
  /** Used by resnet only; the catalog default for the others too, so that a record of the options is complete. */
  readonly depth: readonly number[];
  readonly dropout: number;
  readonly l2: number;
  readonly numClasses: number;
  readonly seed: number;
  readonly antialias: boolean;
  readonly standardize: boolean;
}

/** What a model costs: printed by the CLI and recorded next to training runs. */
export interface ModelSummary {
  /** The architecture built here, or `transfer` for a pretrained model with a new head (lib/transfer.ts). */
  readonly name: ModelName | 'transfer';
  readonly imageSize: number;
  /** model.countParams(): trainable weights plus BN moving statistics. */
  readonly parameters: number;
  readonly trainableParameters: number;
  /**
   * Floating-point operations of one forward pass of ONE image: 2 x the multiply-accumulates of the conv, depthwise,
   * separable and dense layers. Biases, batch normalisation, activations, pooling and residual adds are not counted
   * (together about 0.5 % of the total for resnet and about 3 % for mobile and tiny). NaN (null once saved as JSON) when unknown: a nested
   * pretrained model whose own input is not the one it is given.
   */
  readonly flops: number;
  /** model.layers.length, the input layer included. */
  readonly layers: number;
}

/**
 * The architectures, with their defaults. Parameter counts at 3 classes do not depend on imageSize (global average
 * pooling), except resnet's stem kernel (7x7 from 128 px, 5x5 below). FLOPs per image at 128 / 224 px.
 * test/models.test.ts asserts all of these:
 * - resnet (width 32, depth [2,2,2,2]): 2,801,315 parameters (2,796,515 trainable); 0.290 / 0.887 GFLOPs
 *   (2,800,547 parameters below 128 px)
 * - mobile (width 16): 2,261,251 parameters (2,227,139 trainable); 0.191 / 0.585 GFLOPs
 * - tiny (width 8): 24,939 parameters (24,699 trainable); 0.031 / 0.094 GFLOPs
 */
export const MODEL_CATALOG: Readonly<Record<ModelName, { description: string; defaults: Partial<ModelOptions> }>> = {
  resnet: {
    description:
      'ResNet-18-like: stem conv 7x7/2 (5x5/2 below 128 px) + BN + ReLU + maxpool 3x3/2, four stages of basic ' +
      'residual blocks (widths w, 2w, 4w, 8w; stages 2-4 start with stride 2 and a 1x1 projection shortcut), ' +
      'global average pooling, dropout, dense softmax. 2.8 M parameters at the default width 32.',
    defaults: { width: 32, depth: [2, 2, 2, 2], dropout: 0.2, l2: 1e-4, numClasses: CLASSES.length },
  },
  mobile: {
    description:
      'MobileNetV2-style: stem conv 3x3/2, 17 inverted residual blocks (1x1 expand + ReLU6, 3x3 depthwise + BN + ' +
      'ReLU6, 1x1 linear projection, residual add at stride 1 and equal channels), 1x1 conv to 80w channels, ' +
      'global average pooling, dropout, dense softmax. width 16 is MobileNetV2 1.0 (2.3 M parameters).',
    defaults: { width: 16, depth: [2, 2, 2, 2], dropout: 0.2, l2: 1e-4, numClasses: CLASSES.length },
  },
  tiny: {
    description:
      'A small plain CNN: four blocks of conv 3x3 + BN + ReLU + maxpool 2x2 (widths w, 2w, 4w, 8w), global ' +
      'average pooling, dropout, dense softmax. 25 k parameters at width 8: for tests and the smoke preset.',
    defaults: { width: 8, depth: [2, 2, 2, 2], dropout: 0.2, l2: 1e-4, numClasses: CLASSES.length },
  },
};

const MODEL_NAMES = Object.keys(MODEL_CATALOG) as ModelName[];

/** Inputs smaller than this are refused: the models downsample 16x to 32x. */
export const MIN_IMAGE_SIZE = 16;

/** resnet uses the 7x7 stem from this input size up, the 5x5 one below it. */
export const RESNET_LARGE_STEM_FROM = 128;

/** BN running statistics follow the batch quickly (PyTorch's 0.1 update): training here is short and from scratch. */
export const BN_MOMENTUM = 0.9;

/** Added to each image's pixel variance (pixels in [0, 1]) by the `standardize` layer; tfjs-layers' default. */
const STANDARDIZE_EPSILON = 1e-3;

type Initializer = ReturnType<Tf['initializers']['heNormal']>;
type Regularizer = ReturnType<Tf['regularizers']['l2']>;

function bad(option: string, value: unknown, expected: string): ConfigError {
  return new ConfigError(`model option ${option}=${quote(value)} is not usable: expected ${expected}`);
}

function isPositiveInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1;
}

/**
 * The model options a training configuration asks for (its model, width, input size, dropout, weight decay, seed).
 *
 * @example modelOptionsFromConfig(resolveConfig('cpu')) // { name: 'resnet', imageSize: 128, width: 16, ... }
 */
export function modelOptionsFromConfig(config: Config): ModelOptions {
  if (!(config.model in MODEL_CATALOG)) {
    throw new ConfigError(`model ${quote(config.model)} is not one of ${Object.keys(MODEL_CATALOG).map((m) => quote(m)).join(', ')}`);
  }
  return {
    name: config.model as ModelName,
    imageSize: config.imageSize,
    dropout: config.dropout,
    l2: config.weightDecay,
    seed: config.seed,
    ...(config.modelWidth > 0 ? { width: config.modelWidth } : {}),
    ...(config.modelDepth !== '' ? { depth: parseDepth(config.model, config.modelDepth) } : {}),
    ...(config.antialias ? { antialias: true } : {}),
    ...(config.standardize ? { standardize: true } : {}),
  };
}

/**
 * The blocks per stage of a configuration's `modelDepth` (resnet only).
 *
 * @example parseDepth('resnet', '3,4,6,3') // [3, 4, 6, 3]
 */
export function parseDepth(model: string, text: string): number[] {
  const depth = text.split(',').map((part) => (/^\s*\d+\s*$/.test(part) ? Number(part) : Number.NaN));
  if (!depth.every(isPositiveInteger)) {
    throw new ConfigError(`modelDepth ${quote(text)} is not usable: expected blocks per stage, whole numbers of at least 1 separated by commas, e.g. "3,4,6,3"`);
  }
  if (model !== 'resnet') throw new ConfigError(`modelDepth ${quote(text)} is not usable with model ${quote(model)}: only resnet has blocks per stage`);
  return depth;
}

/**
 * Fills in the defaults of `options` and checks every value (pure: builds nothing).
 *
 * @example resolveModelOptions({ name: 'tiny', imageSize: 32 }).width // 8
 */
export function resolveModelOptions(options: ModelOptions): ResolvedModelOptions {
  const name = options.name;
  if (!MODEL_NAMES.includes(name)) {
    throw new ConfigError(
      `model ${quote(name)} is not known: expected one of ${MODEL_NAMES.map((n) => quote(n)).join(', ')}`,
    );
  }
  const d = MODEL_CATALOG[name].defaults;
  const { imageSize } = options;
  const width = options.width ?? d.width;
  const depth = options.depth ?? d.depth;
  const dropout = options.dropout ?? d.dropout;
  const l2 = options.l2 ?? d.l2;
  const numClasses = options.numClasses ?? d.numClasses;
  const seed = options.seed ?? DEFAULTS.seed;
  if (!isPositiveInteger(imageSize) || imageSize < MIN_IMAGE_SIZE) {
    throw bad('imageSize', imageSize, `an integer >= ${MIN_IMAGE_SIZE}`);
  }
  if (!isPositiveInteger(width)) throw bad('width', width, 'a positive integer');
  if (!Array.isArray(depth) || depth.length === 0 || !depth.every(isPositiveInteger)) {
    throw bad('depth', depth, 'a non-empty list of positive integers (blocks per stage)');
  }
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) {
    throw bad('dropout', dropout, 'a number in [0, 1)');
  }
  if (typeof l2 !== 'number' || !Number.isFinite(l2) || l2 < 0) throw bad('l2', l2, 'a finite number >= 0');
  if (!isPositiveInteger(numClasses) || numClasses < 2) throw bad('numClasses', numClasses, 'an integer >= 2');
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) throw bad('seed', seed, 'an integer');
  const antialias = options.antialias ?? false;
  if (typeof antialias !== 'boolean') throw bad('antialias', antialias, 'true or false');
  if (antialias && name !== 'resnet') throw bad('antialias', antialias, `false for ${quote(name)} (only resnet has it)`);
  const standardize = options.standardize ?? false;
  if (typeof standardize !== 'boolean') throw bad('standardize', standardize, 'true or false');
  return { name, imageSize, width, depth: [...depth], dropout, l2, numClasses, seed, antialias, standardize };
}

/** Layer factories sharing one regulariser and one seed stream (each kernel gets its own seed from it). */
class Builder {
  private readonly rng: Rng;
  private readonly regularizer: Regularizer | undefined;
  constructor(
    readonly tf: Tf,
    readonly o: ResolvedModelOptions,
  ) {
    this.rng = createRng(o.seed);
    this.regularizer = o.l2 > 0 ? tf.regularizers.l2({ l2: o.l2 }) : undefined;
  }

  private nextSeed(): number {
    return Math.floor(this.rng() * 2 ** 31);
  }

  private he(): Initializer {
    return this.tf.initializers.heNormal({ seed: this.nextSeed() });
  }

  /** The L2 kernel regulariser, when l2 > 0 (spread into the layer arguments). */
  private decay(): { kernelRegularizer?: Regularizer } {
    return this.regularizer ? { kernelRegularizer: this.regularizer } : {};
  }

  private apply(layer: { apply(x: SymbolicTensor | SymbolicTensor[]): unknown }, x: SymbolicTensor | SymbolicTensor[]) {
    return layer.apply(x) as SymbolicTensor;
  }

  /** Conv without bias (a BN follows). */
  conv(x: SymbolicTensor, name: string, filters: number, kernelSize: number, strides = 1): SymbolicTensor {
    const layer = this.tf.layers.conv2d({
      name,
      filters,
      kernelSize,
      strides,
      padding: 'same',
      useBias: false,
      kernelInitializer: this.he(),
      ...this.decay(),
    });
    return this.apply(layer, x);
  }

  depthwise(x: SymbolicTensor, name: string, strides: number): SymbolicTensor {
    const layer = this.tf.layers.depthwiseConv2d({
      name,
      kernelSize: 3,
      strides,
      padding: 'same',
      depthMultiplier: 1,
      useBias: false,
      depthwiseInitializer: this.he(),
    });
    return this.apply(layer, x);
  }

  /** The blur layers made so far: {@link buildModel} sets their fixed kernels once the model exists. */
  readonly blurs: string[] = [];

  /** A fixed (not trained) 3x3 binomial low-pass filter per channel, then subsampling by `strides`. */
  blur(x: SymbolicTensor, name: string, strides: number): SymbolicTensor {
    const layer = this.tf.layers.depthwiseConv2d({ name, kernelSize: 3, strides, padding: 'same', depthMultiplier: 1, useBias: false, trainable: false, depthwiseInitializer: 'zeros' });
    this.blurs.push(name);
    return this.apply(layer, x);
  }

  /**
   * Each image standardised over its own pixels: (x - mean) / sqrt(variance + 1e-3), with a fixed per-pixel scale of
   * ones and offset of zeros (not trained). They are there only because tfjs cannot record the gradient of a
   * LayerNormalization without them (its batch-norm op then has undefined inputs), and cost 2 x imageSize² weights.
   */
  standardize(x: SymbolicTensor): SymbolicTensor {
    const layer = this.tf.layers.layerNormalization({
      name: 'standardize', axis: [1, 2, 3], trainable: false, epsilon: STANDARDIZE_EPSILON,
    });
    return this.apply(layer, x);
  }

  /** Batch normalisation; `zeroGamma` starts a residual branch as the identity (Goyal et al. 2017). */
  bn(x: SymbolicTensor, name: string, zeroGamma = false): SymbolicTensor {
    const layer = this.tf.layers.batchNormalization({
      name,
      momentum: BN_MOMENTUM,
      ...(zeroGamma ? { gammaInitializer: 'zeros' as const } : {}),
    });
    return this.apply(layer, x);
  }

  relu(x: SymbolicTensor, name: string, maxValue?: number): SymbolicTensor {
    return this.apply(this.tf.layers.reLU({ name, ...(maxValue === undefined ? {} : { maxValue }) }), x);
  }

  maxPool(x: SymbolicTensor, name: string, poolSize: number, strides: number): SymbolicTensor {
    return this.apply(this.tf.layers.maxPooling2d({ name, poolSize, strides, padding: 'same' }), x);
  }

  add(a: SymbolicTensor, b: SymbolicTensor, name: string): SymbolicTensor {
    return this.apply(this.tf.layers.add({ name }), [a, b]);
  }

  /** Global average pooling, dropout, dense softmax. */
  head(x: SymbolicTensor): SymbolicTensor {
    let y = this.apply(this.tf.layers.globalAveragePooling2d({ name: 'pool' }), x);
    if (this.o.dropout > 0) {
      y = this.apply(this.tf.layers.dropout({ name: 'dropout', rate: this.o.dropout, seed: this.nextSeed() }), y);
    }
    const dense = this.tf.layers.dense({
      name: 'logits',
      units: this.o.numClasses,
      activation: 'softmax',
      kernelInitializer: this.tf.initializers.glorotUniform({ seed: this.nextSeed() }),
      ...this.decay(),
    });
    return this.apply(dense, y);
  }
}

function buildResnet(b: Builder, x: SymbolicTensor): SymbolicTensor {
  const { width, depth, imageSize } = b.o;
  const stemKernel = imageSize >= RESNET_LARGE_STEM_FROM ? 7 : 5;
  let y = b.conv(x, 'stem_conv', width, stemKernel, 2);
  y = b.relu(b.bn(y, 'stem_bn'), 'stem_relu');
  // Anti-aliased (b.o.antialias): every later stride 2 becomes stride 1, then a blur that subsamples.
  const aa = b.o.antialias;
  y = aa ? b.blur(b.maxPool(y, 'stem_pool', 3, 1), 'stem_pool_blur', 2) : b.maxPool(y, 'stem_pool', 3, 2);
  let channels = width;
  depth.forEach((blocks, s) => {
    const out = width * 2 ** s;
    for (let i = 0; i < blocks; i++) {
      const p = `stage${s + 1}_block${i + 1}`;
      const stride = s > 0 && i === 0 ? 2 : 1;
      const blurFirst = aa && stride === 2;
      let shortcut = y;
      if (stride !== 1 || channels !== out) {
        const into = blurFirst ? b.blur(y, `${p}_proj_blur`, 2) : y;
        shortcut = b.bn(b.conv(into, `${p}_proj`, out, 1, blurFirst ? 1 : stride), `${p}_proj_bn`);
      }
      let r = b.relu(b.bn(b.conv(y, `${p}_conv1`, out, 3, blurFirst ? 1 : stride), `${p}_bn1`), `${p}_relu1`);
      if (blurFirst) r = b.blur(r, `${p}_blur`, 2);
      r = b.bn(b.conv(r, `${p}_conv2`, out, 3), `${p}_bn2`, true);
      y = b.relu(b.add(shortcut, r, `${p}_add`), `${p}_relu2`);
      channels = out;
    }
  });
  return b.head(y);
}

/** MobileNetV2's table: expansion t, output channels as a multiple of width, repeats n, first stride s. */
const MOBILE_STAGES: ReadonlyArray<readonly [t: number, c: number, n: number, s: number]> = [
  [1, 1, 1, 1],
  [6, 1.5, 2, 2],
  [6, 2, 3, 2],
  [6, 4, 4, 2],
  [6, 6, 3, 1],
  [6, 10, 3, 2],
  [6, 20, 1, 1],
];

function buildMobile(b: Builder, x: SymbolicTensor): SymbolicTensor {
  const { width } = b.o;
  const ch = (mult: number) => Math.max(1, Math.round(width * mult));
  let channels = ch(2);
  let y = b.relu(b.bn(b.conv(x, 'stem_conv', channels, 3, 2), 'stem_bn'), 'stem_relu', 6);
  let index = 0;
  for (const [t, c, n, s] of MOBILE_STAGES) {
    const out = ch(c);
    for (let i = 0; i < n; i++) {
      const p = `block${++index}`;
      const stride = i === 0 ? s : 1;
      const residual = stride === 1 && channels === out;
      let r = y;
      if (t !== 1) r = b.relu(b.bn(b.conv(r, `${p}_expand`, channels * t, 1), `${p}_expand_bn`), `${p}_expand_relu`, 6);
      r = b.relu(b.bn(b.depthwise(r, `${p}_depthwise`, stride), `${p}_depthwise_bn`), `${p}_depthwise_relu`, 6);
      r = b.bn(b.conv(r, `${p}_project`, out, 1), `${p}_project_bn`, residual);
      y = residual ? b.add(y, r, `${p}_add`) : r;
      channels = out;
    }
  }
  y = b.relu(b.bn(b.conv(y, 'top_conv', ch(80), 1), 'top_bn'), 'top_relu', 6);
  return b.head(y);
}

function buildTiny(b: Builder, x: SymbolicTensor): SymbolicTensor {
  let y = x;
  for (let i = 0; i < 4; i++) {
    const p = `block${i + 1}`;
    y = b.relu(b.bn(b.conv(y, `${p}_conv`, b.o.width * 2 ** i, 3), `${p}_bn`), `${p}_relu`);
    y = b.maxPool(y, `${p}_pool`, 2, 2);
  }
  return b.head(y);
}

/**
 * Builds a fresh, NOT compiled classifier: input [b, S, S, 1] float32 in [0, 1], output [b, numClasses] softmax.
 * The caller owns the model: `model.dispose()` frees its weights.
 *
 * @example
 * const model = buildModel({ name: 'resnet', imageSize: 224 });
 * model.compile({ optimizer: 'adam', loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
 */
export function buildModel(options: ModelOptions): LayersModel {
  const o = resolveModelOptions(options);
  const tf = loadTf();
  const b = new Builder(tf, o);
  const input = tf.input({ name: 'image', shape: [o.imageSize, o.imageSize, 1], dtype: 'float32' });
  const build = { resnet: buildResnet, mobile: buildMobile, tiny: buildTiny }[o.name];
  const output = build(b, o.standardize ? b.standardize(input) : input);
  const model = tf.model({ name: o.name, inputs: input, outputs: output });
  if (b.blurs.length > 0) {
    // [1, 2, 1] x [1, 2, 1] / 16 for every channel: kernel [3, 3, channels, 1].
    const binomial = [1, 2, 1].flatMap((a) => [1, 2, 1].map((c) => (a * c) / 16));
    for (const name of b.blurs) {
      const layer = model.getLayer(name);
      const [, , channels] = layer.weights[0]?.shape ?? [];
      const kernel = tf.tidy(() => tf.tensor(binomial, [3, 3, 1, 1]).tile([1, 1, channels ?? 1, 1]));
      layer.setWeights([kernel]);
      kernel.dispose();
    }
  }
  return model;
}

type AnyLayer = LayersModel['layers'][number];

function product(values: ReadonlyArray<number | null>): number {
  let p = 1;
  for (const v of values) p *= v ?? 0;
  return p;
}

/** Forward FLOPs of one layer for one example (2 x multiply-accumulates; 0 for layers that have none counted). */
function layerFlops(layer: AnyLayer): number {
  const nested = (layer as unknown as { layers?: AnyLayer[] }).layers;
  if (Array.isArray(nested)) {
    // Its layers know only the shapes of its own input: counted when that is the input it is applied to, else unknown
    // (NaN; a dynamic [null, null, 3] or another fixed size would give a wrong count).
    const own = (layer as unknown as { inputs?: { shape: (number | null)[] }[] }).inputs?.[0]?.shape;
    const nodes = (layer as unknown as { inboundNodes?: { inputTensors: { shape: (number | null)[] }[] }[] }).inboundNodes ?? [];
    const applied = nodes.at(-1)?.inputTensors[0]?.shape;
    if (!own || !applied || own.length !== applied.length || own.slice(1).some((d, i) => d === null || d !== applied[i + 1])) return Number.NaN;
    return nested.reduce((sum, l) => sum + layerFlops(l), 0);
  }
  const shape = layer.outputShape;
  if (Array.isArray(shape[0]) || shape.length < 2) return 0; // multi-output layers: none of the counted kinds
  const outElements = product((shape as Array<number | null>).slice(1));
  const kernel = layer.weights[0]?.shape ?? [];
  switch (layer.getClassName()) {
    case 'Conv1D':
    case 'Conv2D':
    case 'Conv3D': // kernel [...k, cin, cout]: each output element costs prod(k) * cin MACs
      return 2 * product(kernel.slice(0, -1)) * outElements;
    case 'DepthwiseConv2D': // kernel [kh, kw, cin, multiplier]: kh * kw MACs per output element
      return 2 * product(kernel.slice(0, 2)) * outElements;
    case 'SeparableConv2D': {
      // depthwise [kh, kw, cin, m] into cin * m maps, then pointwise [1, 1, cin * m, cout]
      const [kh, kw, cin, m] = kernel.map((v) => v ?? 0) as [number, number, number, number];
      const spatial = outElements / ((shape[shape.length - 1] as number | null) ?? 1);
      return 2 * kh * kw * cin * m * spatial + 2 * cin * m * outElements;
    }
    case 'Dense': // kernel [in, out]
      return 2 * (kernel[0] ?? 0) * outElements;
    default:
      return 0;
  }
}

/**
 * Parameters, trainable parameters, FLOPs per image and layer count of a model (analytic: runs nothing).
 *
 * @example
 * const model = buildModel({ name: 'tiny', imageSize: 32 });
 * summarizeModel(model, { name: 'tiny', imageSize: 32 }).parameters // 24939
 */
export function summarizeModel(model: LayersModel, options: ModelOptions): ModelSummary {
  const trainableParameters = model.trainableWeights.reduce((sum, w) => sum + product(w.shape), 0);
  return {
    name: options.name,
    imageSize: options.imageSize,
    parameters: model.countParams(),
    trainableParameters,
    flops: model.layers.reduce((sum, l) => sum + layerFlops(l), 0),
    layers: model.layers.length,
  };
}
