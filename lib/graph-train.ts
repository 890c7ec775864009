// Training in TensorFlow graph mode on tfjs-node: the whole step of a tfjs-layers model as one TensorFlow graph.
//
// Eager execution (what tfjs does, op by op) cannot run two independent ops at once, fuse across ops, or skip the
// per-op round trip through JavaScript; Keras's model.fit runs one graph per step and gets all three. tfjs-node can
// load and run a SavedModel through its native binding, so this module writes the training step of a LayersModel as a
// graph (forward pass, hand-derived backward pass, Adam or momentum, batch-norm statistics and the weight average),
// loads it into a TensorFlow session and runs one session call per batch. The weights, the optimizer's slots and the
// averaged weights live in the session's resource variables while an epoch runs; `sync` copies them back into the
// tfjs model, the optimizer and the WeightAverage (before validation and checkpoints), so saved models and resumes
// are unchanged.
//
// The math is the step of lib/train.ts (class-weighted, label-smoothed cross-entropy of the softmax clipped to
// [1e-7, 1], plus the layers' L2 penalties; tfjs's Adam or momentum; tfjs-layers' moving statistics with the biased
// variance); dropout draws other random numbers than tfjs does. Supported layers: InputLayer, Conv2D,
// DepthwiseConv2D, BatchNormalization (a frozen one in inference mode, as lib/transfer.ts's holdFrozenBatchNorms),
// ReLU (max 6 or none), Activation('relu'), MaxPooling2D, ZeroPadding2D, Add, GlobalAveragePooling2D, Dropout, a
// softmax Dense output, and a LayerNormalization over each whole image with no trained scale or offset, on the
// model's input (the `standardize` option of lib/models.ts). Frozen layers pass gradients on and are not updated.
// {@link planGraphTraining} says whether a model qualifies, and why not.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LayersModel, Optimizer, Scalar, Tensor, Variable } from '@tensorflow/tfjs';
import type { WeightAverage } from './ema.js';
import { minimizeOrder } from './checkpoint.js';
import { BackendError, messageOf, quote } from './errors.js';
import { adamOf, type AdamInternals } from './fast-train.js';
import { loadTf, type Tf } from './tf.js';
import type { StallWatchdog } from './watchdog.js';

/** Whether {@link GraphTrainer} can train a model, and why not. */
export interface GraphTrainingPlan {
  readonly supported: boolean;
  /** Why not (the first layer or setting that stops it). */
  readonly reason?: string;
}

type Layer = LayersModel['layers'][number];

interface SymbolicRef {
  readonly id: number;
  readonly shape: Array<number | null>;
}

interface LayerNode {
  readonly inputTensors: SymbolicRef[];
  readonly outputTensors: SymbolicRef[];
}

interface LayerVariable {
  readonly name: string;
  readonly originalName: string;
  readonly shape: number[];
  readonly trainable: boolean;
  read(): Variable;
  write(value: Tensor): unknown;
}

function cfg(layer: Layer): Record<string, unknown> {
  return layer.getConfig() as Record<string, unknown>;
}

function activationOf(layer: Layer): string {
  const a = (layer as unknown as { activation?: { getClassName?: () => string } }).activation;
  return typeof a?.getClassName === 'function' ? a.getClassName() : 'linear';
}

function regularizerOf(layer: Layer, key: 'kernelRegularizer' | 'depthwiseRegularizer' | 'biasRegularizer'): { l1: number; l2: number } | null | 'other' {
  const r = (layer as unknown as Record<string, { getClassName?: () => string; l1?: number; l2?: number } | null | undefined>)[key];
  if (r === null || r === undefined) return null;
  if (r.getClassName?.() !== 'L1L2' || typeof r.l2 !== 'number' || typeof r.l1 !== 'number') return 'other';
  return { l1: r.l1, l2: r.l2 };
}

/** The reason a layer stops graph training, or undefined when it can be translated. */
function layerProblem(layer: Layer, isOutput: boolean): string | undefined {
  const name = layer.getClassName();
  const c = cfg(layer);
  const inbound = (layer as unknown as { inboundNodes: unknown[] }).inboundNodes;
  if (inbound.length !== 1) return `layer "${layer.name}" is used ${inbound.length} times (graph training needs each layer once)`;
  for (const key of ['kernelRegularizer', 'depthwiseRegularizer', 'biasRegularizer'] as const) {
    const r = regularizerOf(layer, key);
    if (r === 'other' || (r && r.l1 !== 0)) return `layer "${layer.name}" has a ${key} other than L2`;
  }
  if ((layer as unknown as { activityRegularizer?: unknown }).activityRegularizer) return `layer "${layer.name}" has an activity regularizer`;
  // Penalties the graph does not translate (batch norm's gamma and beta) would be dropped without a word.
  for (const key of ['gammaRegularizer', 'betaRegularizer'] as const) {
    if ((layer as unknown as Record<string, unknown>)[key]) return `layer "${layer.name}" has a ${key} (graph training translates kernel, depthwise and bias L2 only)`;
  }
  const same = (p: unknown): boolean => p === 'same' || p === 'valid';
  switch (name) {
    case 'InputLayer':
      return undefined;
    case 'Conv2D':
    case 'DepthwiseConv2D': {
      if (c.dataFormat !== 'channelsLast') return `layer "${layer.name}": dataFormat ${JSON.stringify(c.dataFormat)} is not channelsLast`;
      if (!same(c.padding)) return `layer "${layer.name}": padding ${JSON.stringify(c.padding)} is not same or valid`;
      const d = c.dilationRate;
      if (!(d === 1 || (Array.isArray(d) && d.every((v) => v === 1)))) return `layer "${layer.name}": dilation is not 1`;
      if (activationOf(layer) !== 'linear') return `layer "${layer.name}": activation ${activationOf(layer)} inside a convolution`;
      if (name === 'DepthwiseConv2D' && c.depthMultiplier !== 1) return `layer "${layer.name}": depthMultiplier is not 1`;
      return undefined;
    }
    case 'BatchNormalization':
      if (c.axis !== -1 && c.axis !== 3) return `layer "${layer.name}": axis ${JSON.stringify(c.axis)} is not the last of a 4-D input`;
      if (c.center === false || c.scale === false) return `layer "${layer.name}": center and scale must both be on`;
      return undefined;
    case 'ReLU':
      if (c.maxValue === undefined || c.maxValue === null || c.maxValue === 6) return undefined;
      return `layer "${layer.name}": maxValue ${JSON.stringify(c.maxValue)} is neither unset nor 6`;
    case 'Activation':
      return activationOf(layer) === 'relu' ? undefined : `layer "${layer.name}": activation ${activationOf(layer)} is not relu`;
    case 'MaxPooling2D':
      if (c.dataFormat !== 'channelsLast') return `layer "${layer.name}": dataFormat ${JSON.stringify(c.dataFormat)} is not channelsLast`;
      return same(c.padding) ? undefined : `layer "${layer.name}": padding ${JSON.stringify(c.padding)} is not same or valid`;
    case 'Add':
      return undefined;
    case 'ZeroPadding2D': {
      const p = c.padding;
      const ok = Array.isArray(p) && p.length === 2 && p.every((pair) => Array.isArray(pair) && pair.length === 2 && pair.every((v) => Number.isInteger(v) && v >= 0));
      if (c.dataFormat !== undefined && c.dataFormat !== 'channelsLast') return `layer "${layer.name}": dataFormat ${JSON.stringify(c.dataFormat)} is not channelsLast`;
      return ok ? undefined : `layer "${layer.name}": padding ${JSON.stringify(p)} is not [[top, bottom], [left, right]]`;
    }
    case 'LayerNormalization': {
      const axis = Array.isArray(c.axis) ? (c.axis as number[]).map((a) => (a < 0 ? a + 4 : a)).sort() : [];
      if ((layer.trainable && (c.center !== false || c.scale !== false)) || axis.join() !== '1,2,3') {
        return `layer "${layer.name}": a LayerNormalization is translated only over axes [1, 2, 3], with no trained scale or offset`;
      }
      return undefined;
    }
    case 'GlobalAveragePooling2D':
      return c.dataFormat === undefined || c.dataFormat === 'channelsLast' ? undefined : `layer "${layer.name}": dataFormat is not channelsLast`;
    case 'Dropout':
      return c.noiseShape === undefined || c.noiseShape === null ? undefined : `layer "${layer.name}": a noiseShape is set`;
    case 'Dense': {
      const act = activationOf(layer);
      if (isOutput) return act === 'softmax' ? undefined : `the output layer "${layer.name}" is not a softmax Dense (activation ${act})`;
      return act === 'linear' ? undefined : `layer "${layer.name}": activation ${act} inside a Dense layer`;
    }
    default:
      return `layer "${layer.name}" is a ${name}, which graph training does not translate`;
  }
}

/** Whether `layer` reads the model's input itself (so nothing before it needs a gradient). */
function isOnInput(layer: Layer, model: LayersModel): boolean {
  const node = (layer as unknown as { inboundNodes: LayerNode[] }).inboundNodes[0];
  return node?.inputTensors[0]?.id === (model.inputs[0] as unknown as SymbolicRef).id;
}

/**
 * Whether {@link GraphTrainer} can train `model` (pure: looks at the layers and their configurations only).
 *
 * @example planGraphTraining(buildModel({ name: 'resnet', imageSize: 128 })).supported // true
 */
export function planGraphTraining(model: LayersModel): GraphTrainingPlan {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) return { supported: false, reason: 'the model does not have exactly one input and one output' };
  const input = model.inputs[0]?.shape ?? [];
  if (input.length !== 4 || input.slice(1).some((d) => d === null)) return { supported: false, reason: `the input shape ${JSON.stringify(input)} is not [batch, height, width, channels]` };
  const outputLayer = model.outputs[0]?.sourceLayer;
  for (const layer of model.layers) {
    if (!layer.built) return { supported: false, reason: `layer "${layer.name}" is not built` };
    const problem = layerProblem(layer, layer === outputLayer);
    if (problem) return { supported: false, reason: problem };
    if (layer.getClassName() === 'LayerNormalization' && !isOnInput(layer, model)) {
      return { supported: false, reason: `layer "${layer.name}": a LayerNormalization is translated only on the model's input` };
    }
  }
  if (outputLayer?.getClassName() !== 'Dense') return { supported: false, reason: 'the output layer is not a softmax Dense' };
  return { supported: true };
}

// --- the graph, written as a text-format SavedModel -----------------------------------------------------------------

type Attr =
  | { type: 'DT_FLOAT' | 'DT_INT32' | 'DT_BOOL' }
  | { i: number }
  | { f: number }
  | { b: boolean }
  | { s: string }
  | { ints: number[] }
  | { shape: number[] }
  | { tensorInts: number[] }
  | { tensorInt: number }
  | { tensorFloat: number };

function attrText(a: Attr): string {
  if ('type' in a) return `type: ${a.type}`;
  if ('i' in a) return `i: ${a.i}`;
  if ('f' in a) return `f: ${Number.isInteger(a.f) ? `${a.f}.0` : a.f.toPrecision(9)}`;
  if ('b' in a) return `b: ${a.b}`;
  if ('s' in a) return `s: "${a.s}"`;
  if ('ints' in a) return `list { ${a.ints.map((v) => `i: ${v}`).join(' ')} }`;
  if ('shape' in a) return `shape { ${a.shape.map((d) => `dim { size: ${d} }`).join(' ')} }`;
  if ('tensorInts' in a) {
    return `tensor { dtype: DT_INT32 tensor_shape { dim { size: ${a.tensorInts.length} } } ${a.tensorInts.map((v) => `int_val: ${v}`).join(' ')} }`;
  }
  if ('tensorInt' in a) return `tensor { dtype: DT_INT32 tensor_shape { } int_val: ${a.tensorInt} }`;
  const f = a.tensorFloat;
  return `tensor { dtype: DT_FLOAT tensor_shape { } float_val: ${Number.isInteger(f) ? `${f}.0` : f.toPrecision(9)} }`;
}

/** A GraphDef under construction: `op` adds a node and returns its name (output 0); `out(n, k)` names output k. */
class Graph {
  private readonly nodes: string[] = [];
  private count = 0;

  op(op: string, inputs: readonly string[], attrs: Record<string, Attr> = {}, options: { name?: string; control?: readonly string[] } = {}): string {
    const name = options.name ?? `n${++this.count}_${op}`;
    const ins = [...inputs.map((i) => `input: "${i}"`), ...[...new Set((options.control ?? []).map((c) => c.split(':')[0]))].map((c) => `input: "^${c}"`)];
    const as = Object.entries(attrs).map(([k, v]) => `attr { key: "${k}" value { ${attrText(v)} } }`);
    this.nodes.push(`node { name: "${name}" op: "${op}" ${[...ins, ...as].join(' ')} }`);
    return name;
  }

  out(node: string, k: number): string {
    return k === 0 ? node : `${node}:${k}`;
  }

  floatConst(value: number): string {
    return this.op('Const', [], { dtype: { type: 'DT_FLOAT' }, value: { tensorFloat: value } });
  }

  intsConst(values: number[]): string {
    return this.op('Const', [], { dtype: { type: 'DT_INT32' }, value: { tensorInts: values } });
  }

  intConst(value: number): string {
    return this.op('Const', [], { dtype: { type: 'DT_INT32' }, value: { tensorInt: value } });
  }

  placeholder(name: string, shape: number[], type: 'DT_FLOAT' | 'DT_INT32' = 'DT_FLOAT'): string {
    return this.op('Placeholder', [], { dtype: { type }, shape: { shape } }, { name });
  }

  savedModel(tag: string): string {
    return [
      'saved_model_schema_version: 1',
      'meta_graphs {',
      `  meta_info_def { tags: "${tag}" }`,
      '  graph_def {',
      ...this.nodes.map((n) => `    ${n}`),
      // A GraphDef version every TensorFlow 2 runtime accepts (the ops used here all predate it).
      '    versions { producer: 440 }',
      '  }',
      '}',
      '',
    ].join('\n');
  }
}

const F: Attr = { type: 'DT_FLOAT' };
/** The SavedModel tag of the training graph. */
const TAG = 'pneumotype_train';

/** One variable of the session: where it comes from on the tfjs side, and its resource handle node. */
interface SessionVariable {
  readonly handle: string;
  readonly shape: number[];
  /** Copies the tfjs value into the feed at init time. */
  readonly initial: () => Tensor;
  /** Takes the value read back at sync time. */
  readonly store: (value: Tensor) => void;
}

interface NativeBinding {
  loadSavedModel(exportDir: string, tags: string): number;
  deleteSavedModel(id: number): void;
  runSavedModel(id: number, inputTensorIds: number[], inputOpNames: string, outputOpNames: string): unknown[];
}

interface NativeBackend {
  readonly binding: NativeBinding;
  getInputTensorIds(tensors: Tensor[]): number[];
  createOutputTensor(metadata: unknown): Tensor;
}

function nativeBackend(tf: Tf): NativeBackend | undefined {
  if (tf.getBackend() !== 'tensorflow') return undefined;
  const b = tf.backend() as unknown as Partial<NativeBackend>;
  const ok = typeof b.binding?.loadSavedModel === 'function' && typeof b.binding.runSavedModel === 'function' &&
    typeof b.getInputTensorIds === 'function' && typeof b.createOutputTensor === 'function';
  return ok ? (b as NativeBackend) : undefined;
}

/**
 * Why the graph step cannot run on the loaded backend (undefined when it can, models and optimizer aside): for
 * `pneumotype doctor`.
 *
 * @example graphBackendProblem() // undefined on tfjs-node; 'the backend is "cpu" (pure JavaScript)' elsewhere
 */
export function graphBackendProblem(): string | undefined {
  const tf = loadTf();
  if (tf.getBackend() !== 'tensorflow') return `the backend is ${quote(tf.getBackend())}, not tfjs-node's "tensorflow"`;
  return nativeBackend(tf) ? undefined : "this tfjs-node lacks the SavedModel binding (loadSavedModel, runSavedModel)";
}

/** tfjs's momentum optimizer (tf.train.momentum, the config's "sgd"), as graph training continues it. */
interface MomentumInternals {
  learningRate: number;
  readonly momentum: number;
  readonly useNesterov: boolean;
  /** Steps taken (undefined before the first). */
  iterations_?: number;
  accumulations: Array<{ originalName: string; variable: Variable } | undefined>;
}

/** How the session updates the weights: tfjs's Adam or its momentum optimizer, read at each step, written back by sync. */
type UpdateRule = { readonly kind: 'adam'; readonly adam: AdamInternals } | { readonly kind: 'momentum'; readonly momentum: MomentumInternals };

/** `optimizer`'s update rule, or the error that graph training needs Adam or momentum. */
function updateRuleOf(optimizer: Optimizer): UpdateRule {
  const adam = adamOf(optimizer);
  if (adam) return { kind: 'adam', adam };
  const m = optimizer as unknown as Partial<MomentumInternals>;
  if (optimizer.getClassName() === 'Momentum' && typeof m.learningRate === 'number' && typeof m.momentum === 'number' &&
    typeof m.useNesterov === 'boolean' && Array.isArray(m.accumulations)) {
    return { kind: 'momentum', momentum: m as MomentumInternals };
  }
  throw new BackendError(`graph training needs a tf.train.adam or tf.train.momentum optimizer (this is ${optimizer.getClassName()})`);
}

/** Runs a session call under the stall guard when there is one. */
function guarded<T>(watchdog: StallWatchdog | undefined, call: () => T, options: { setup?: boolean } = {}): T {
  return watchdog ? watchdog.guard(call, options) : call();
}

/** What {@link GraphTrainer.create} needs. */
export interface GraphTrainerOptions {
  readonly model: LayersModel;
  /** A tf.train.adam or tf.train.momentum: its learning rate is read at every step, its state continued and written back by sync. */
  readonly optimizer: Optimizer;
  /** Per-class loss weights (see classWeights in lib/train.ts). */
  readonly classWeights: readonly number[];
  readonly labelSmoothing: number;
  /** The weight average to keep up to date inside the session (its `decayFor` decides each step's fold). */
  readonly average?: WeightAverage;
  /** Seed of the dropout masks. */
  readonly seed?: number;
  /** Guards every session call (lib/watchdog.ts): a call that blocks too long ends the process with a message. */
  readonly watchdog?: StallWatchdog;
}

/**
 * The SavedModel text (pbtxt) of `options.model`'s training step, as {@link GraphTrainer.create} loads it: pure, for
 * inspection and tests.
 *
 * @example trainingGraphText({ model, optimizer: tf.train.adam(1e-3), classWeights: [1, 1, 1], labelSmoothing: 0 })
 */
export function trainingGraphText(options: GraphTrainerOptions): string {
  const tf = loadTf();
  return buildStepGraph(tf, options, updateRuleOf(options.optimizer)).graph.savedModel(TAG);
}

/**
 * The training step of a LayersModel as one TensorFlow graph (see the header of this file). `step` trains on one
 * batch; `sync` writes the session's state back into the model, the optimizer and the average; `dispose` ends it.
 *
 * @example
 * const trainer = await GraphTrainer.create({ model, optimizer, classWeights: [1, 1, 1], labelSmoothing: 0.05 });
 * try { const { loss, correct } = trainer.step(xs, ys); tf.dispose([loss, correct]); trainer.sync(); } finally { trainer.dispose(); }
 */
export class GraphTrainer {
  private readonly stepFeeds: string;
  private disposed = false;
  private steps = 0;

  private constructor(
    private readonly tf: Tf,
    private readonly backend: NativeBackend,
    private readonly session: number,
    private readonly variables: SessionVariable[],
    private readonly readNames: string,
    private readonly rule: UpdateRule,
    private readonly average: WeightAverage | undefined,
    private readonly hasDropout: boolean,
    private readonly seed: number,
    private readonly watchdog: StallWatchdog | undefined,
  ) {
    const adamFeeds = rule.kind === 'adam' ? ['beta1_power:0', 'beta2_power:0', 'epsilon_hat:0'] : [];
    this.stepFeeds = ['x:0', 'y:0', 'lr:0', ...adamFeeds, 'ema_decay:0', ...(hasDropout ? ['seed:0'] : [])].join(',');
  }

  /** Builds the graph of `model`'s step, loads it into a session and copies the current state in. */
  static async create(options: GraphTrainerOptions): Promise<GraphTrainer> {
    const tf = loadTf();
    const backend = nativeBackend(tf);
    if (!backend) throw new BackendError(`graph training needs the tfjs-node backend "tensorflow" (this is "${tf.getBackend()}")`);
    const plan = planGraphTraining(options.model);
    if (!plan.supported) throw new BackendError(`graph training cannot train this model: ${plan.reason ?? 'unsupported'}`);
    const rule = updateRuleOf(options.optimizer);
    const built = buildStepGraph(tf, options, rule);
    const dir = await mkdtemp(join(tmpdir(), 'pneumotype-graph-'));
    let session: number;
    try {
      await writeFile(join(dir, 'saved_model.pbtxt'), built.graph.savedModel(TAG));
      try {
        // Setup calls: the first training step still gets the watchdog's longer first limit (a GPU compiles kernels there).
        session = guarded(options.watchdog, () => backend.binding.loadSavedModel(dir, TAG), { setup: true });
      } catch (err) {
        throw new BackendError(`TensorFlow refused the training graph (${messageOf(err)})`, { cause: err });
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const trainer = new GraphTrainer(tf, backend, session, built.variables, built.reads.join(','), rule, options.average, built.hasDropout, (options.seed ?? 0) | 0, options.watchdog);
    try {
      trainer.load();
    } catch (err) {
      trainer.dispose();
      throw new BackendError(`TensorFlow could not start the training graph (${messageOf(err)})`, { cause: err });
    }
    return trainer;
  }

  private run(inputs: Tensor[], inputNames: string, outputNames: string, options: { setup?: boolean } = {}): Tensor[] {
    const ids = this.backend.getInputTensorIds(inputs);
    const metadata = guarded(this.watchdog, () => this.backend.binding.runSavedModel(this.session, ids, inputNames, outputNames), options);
    return metadata.map((m) => this.backend.createOutputTensor(m));
  }

  /**
   * Copies the tfjs state into the session again, after the caller changed it between syncs (the weight average's
   * stand-in: see WeightAverage.standInUntilFirstFold).
   */
  reload(): void {
    if (this.disposed) throw new BackendError('this graph trainer was disposed');
    this.load();
  }

  /** Copies the tfjs state (weights, moments, average) into the session's variables. */
  private load(): void {
    const { tf } = this;
    const values = this.variables.map((v) => v.initial());
    try {
      const names = this.variables.map((_, i) => `init_${i}:0`).join(',');
      tf.dispose(this.run(values, names, 'init_done:0', { setup: true }));
    } finally {
      tf.dispose(values);
    }
  }

  /**
   * One training step on images `xs` [b, S, S, C] and one-hot labels `ys` [b, classes] at the optimizer's current
   * learning rate. `runStep` (1-based: the run's step count, continued across resumes) seeds the dropout masks and
   * lets the weight average fold on its schedule; without it, the trainer's own count is used. `sampleWeights` [b]
   * replace the class weights of the images (as in lib/train.ts's trainStep).
   * Returns the loss and the count of correct predictions (scalars the caller disposes).
   */
  step(xs: Tensor, ys: Tensor, runStep?: number, sampleWeights?: Tensor): { loss: Scalar; correct: Scalar } {
    if (this.disposed) throw new BackendError('this graph trainer was disposed');
    const { tf, rule } = this;
    const rates = rule.kind === 'adam' ? [rule.adam.learningRate, ...adamPowers(rule.adam, this.steps)] : [rule.momentum.learningRate];
    this.steps++;
    const at = runStep ?? this.steps;
    // The average folds the new weights in on the steps WeightAverage.update would (decay 1: left as it is).
    const decay = this.average ? this.average.foldDecay(at) : 1;
    const scalars = [...rates, decay].map((v) => tf.scalar(v));
    const seed = this.hasDropout ? [tf.tensor1d([this.seed, at], 'int32')] : [];
    try {
      const feeds = sampleWeights ? `${this.stepFeeds},sample_weights:0` : this.stepFeeds;
      const [loss, correct] = this.run([xs, ys, ...scalars, ...seed, ...(sampleWeights ? [sampleWeights] : [])], feeds, 'loss_out:0,correct_out:0');
      return { loss: loss as Scalar, correct: correct as Scalar };
    } finally {
      tf.dispose([...scalars, ...seed]);
    }
  }

  /** Writes the session's state back: model weights and moving statistics, the optimizer's slots and counters, the average. */
  sync(): void {
    if (this.disposed) throw new BackendError('this graph trainer was disposed');
    const { tf, rule } = this;
    // The binding needs at least one feed: the learning rate, unused by the reads.
    const dummy = tf.scalar(0);
    let values: Tensor[];
    try {
      values = this.run([dummy], 'lr:0', this.readNames);
    } finally {
      dummy.dispose();
    }
    try {
      values.forEach((value, i) => this.variables[i]?.store(value));
    } finally {
      tf.dispose(values);
    }
    if (this.steps > 0) {
      if (rule.kind === 'adam') {
        const { adam } = rule;
        const iterations = (adam.iterations_ ?? 0) + this.steps;
        adam.iterations_ = iterations;
        tf.tidy(() => {
          adam.accBeta1.assign(tf.pow(adam.beta1, iterations + 1));
          adam.accBeta2.assign(tf.pow(adam.beta2, iterations + 1));
        });
      } else {
        rule.momentum.iterations_ = (rule.momentum.iterations_ ?? 0) + this.steps;
      }
      this.steps = 0;
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.backend.binding.deleteSavedModel(this.session);
  }
}

/**
 * tfjs's Adam at the coming step (`pending` steps after its last sync): the beta powers (float32, as its accBeta
 * variables) and epsilon inside the bias correction.
 */
function adamPowers(adam: AdamInternals, pending: number): [number, number, number] {
  const t = (adam.iterations_ ?? 0) + pending + 1;
  const b1p = Math.fround(adam.beta1 ** t);
  const b2p = Math.fround(adam.beta2 ** t);
  return [b1p, b2p, Math.fround(Math.sqrt(1 - b2p) * adam.epsilon)];
}

interface BuiltGraph {
  readonly graph: Graph;
  readonly variables: SessionVariable[];
  readonly reads: string[];
  readonly hasDropout: boolean;
}

/** Writes the forward pass, the loss, the backward pass and the updates of `model` as graph nodes. */
function buildStepGraph(tf: Tf, options: GraphTrainerOptions, rule: UpdateRule): BuiltGraph {
  const { model, average } = options;
  const g = new Graph();
  const variables: SessionVariable[] = [];
  const controlAfterStep: string[] = [];
  const emaTargets: Array<{ handle: string; source: string }> = [];

  const handleFor = (shape: number[], initial: () => Tensor, store: (t: Tensor) => void): string => {
    const i = variables.length;
    const handle = g.op('VarHandleOp', [], { dtype: F, shape: { shape }, shared_name: { s: `pneumotype_${i}` }, container: { s: '' } }, { name: `var_${i}` });
    variables.push({ handle, shape, initial, store });
    return handle;
  };
  const readVar = (handle: string): string => g.op('ReadVariableOp', [handle], { dtype: F });

  // Every weight of the model gets a session variable; trainable ones also the optimizer's slots (Adam: two moments,
  // momentum: one accumulation).
  const weights = model.weights as unknown as LayerVariable[];
  // In the order of tfjs's optimizer.minimize, which is the order of the optimizer's slots.
  const byName = new Map(weights.map((w) => [w.read().name, w]));
  const trainable = minimizeOrder(model).map((name) => byName.get(name) as LayerVariable);
  const handles = new Map<LayerVariable, string>();
  const reads = new Map<LayerVariable, string>();
  for (const w of weights) {
    const h = handleFor(w.shape, () => w.read().clone(), (t) => w.write(t));
    handles.set(w, h);
  }
  const slots = new Map<LayerVariable, string[]>();
  const slotLists: Array<[MomentumInternals['accumulations'], string]> = rule.kind === 'adam'
    ? [[rule.adam.accumulatedFirstMoment, 'm'], [rule.adam.accumulatedSecondMoment, 'v']]
    : [[rule.momentum.accumulations, 'momentum']];
  trainable.forEach((w, i) => {
    slots.set(w, slotLists.map(([list, suffix]) => handleFor(
      w.shape,
      () => list[i]?.variable.clone() ?? tf.zeros(w.shape),
      (t) => {
        const existing = list[i];
        if (existing) existing.variable.assign(t);
        else list[i] = { originalName: `${w.read().name}/${suffix}`, variable: tf.variable(t, false) };
      },
    )));
  });
  const averaged = average?.model.weights as unknown as LayerVariable[] | undefined;
  if (average && averaged) {
    weights.forEach((w, i) => {
      const target = averaged[i] as LayerVariable;
      const h = handleFor(w.shape, () => target.read().clone(), (t) => target.write(t));
      emaTargets.push({ handle: h, source: handles.get(w) as string });
    });
  }
  const value = (w: LayerVariable | undefined): string => {
    if (!w) throw new BackendError('graph training: a layer lacks one of its weights');
    let r = reads.get(w);
    if (!r) {
      r = readVar(handles.get(w) as string);
      reads.set(w, r);
    }
    return r;
  };

  // Feeds.
  const inputShape = model.inputs[0]?.shape ?? [];
  const x = g.placeholder('x', [-1, ...inputShape.slice(1).map((d) => d ?? -1)]);
  const numClasses = (model.outputs[0]?.shape ?? [])[1] ?? options.classWeights.length;
  const y = g.placeholder('y', [-1, numClasses]);
  const lr = g.placeholder('lr', []);
  const emaDecay = g.placeholder('ema_decay', []);
  let seedFeed: string | undefined;

  // Forward pass: one entry per symbolic tensor; what the backward pass needs is kept per layer.
  const tensorOf = new Map<number, string>();
  // Tensors that depend on no variable (the input, and what is computed from it alone): they need no gradient.
  const constant = new Set<number>();
  type Back = (dy: string) => Array<string | undefined>;
  const backward: Array<{ layer: Layer; node: LayerNode; back: Back }> = [];
  const gradsOf = new Map<LayerVariable, string[]>();
  const addGrad = (w: LayerVariable | undefined, grad: string): void => {
    if (!w) return;
    gradsOf.set(w, [...(gradsOf.get(w) ?? []), grad]);
  };
  const l2Terms: string[] = [];
  const regularize = (layer: Layer, key: 'kernelRegularizer' | 'depthwiseRegularizer' | 'biasRegularizer', w: LayerVariable | undefined): void => {
    const r = regularizerOf(layer, key);
    if (!w || !r || r === 'other' || r.l2 === 0) return;
    const v = value(w);
    l2Terms.push(g.op('Mul', [g.floatConst(r.l2), g.op('Sum', [g.op('Square', [v], { T: F }), g.intsConst([...w.shape.keys()])], { T: F, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } })], { T: F }));
    addGrad(w, g.op('Mul', [g.floatConst(2 * r.l2), v], { T: F }));
  };
  let outputLogits: string | undefined;
  let dropoutCount = 0;

  for (const layer of model.layers) {
    const node = (layer as unknown as { inboundNodes: LayerNode[] }).inboundNodes[0] as LayerNode;
    const className = layer.getClassName();
    if (className === 'InputLayer') {
      tensorOf.set((node.outputTensors[0] as SymbolicRef).id, x);
      constant.add((node.outputTensors[0] as SymbolicRef).id);
      continue;
    }
    const ins = node.inputTensors.map((t) => tensorOf.get(t.id) as string);
    const inShape = node.inputTensors[0]?.shape ?? [];
    const input = ins[0] as string;
    const c = cfg(layer);
    const L = layer as unknown as Record<string, LayerVariable | undefined>;
    let out: string;
    let back: Back;
    const strides = (s: unknown): number[] => {
      const [a, b] = Array.isArray(s) ? (s as number[]) : [s as number, s as number];
      return [1, a ?? 1, b ?? a ?? 1, 1];
    };
    const padding: Attr = { s: c.padding === 'same' ? 'SAME' : 'VALID' };
    switch (className) {
      case 'Conv2D':
      case 'DepthwiseConv2D': {
        const depthwise = className === 'DepthwiseConv2D';
        const kernelVar = depthwise ? L.depthwiseKernel : L.kernel;
        const kernel = value(kernelVar);
        const [fwd, bin, bfil] = depthwise
          ? ['DepthwiseConv2dNative', 'DepthwiseConv2dNativeBackpropInput', 'DepthwiseConv2dNativeBackpropFilter']
          : ['Conv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter'];
        const attrs: Record<string, Attr> = { T: F, strides: { ints: strides(c.strides) }, padding, data_format: { s: 'NHWC' } };
        const conv = g.op(fwd, [input, kernel], attrs);
        const biasVar = c.useBias ? L.bias : undefined;
        out = biasVar ? g.op('BiasAdd', [conv, value(biasVar)], { T: F }) : conv;
        regularize(layer, depthwise ? 'depthwiseRegularizer' : 'kernelRegularizer', kernelVar);
        if (biasVar) regularize(layer, 'biasRegularizer', biasVar);
        const isStem = constant.has(node.inputTensors[0]?.id ?? -1);
        back = (dy) => {
          addGrad(kernelVar, g.op(bfil, [input, g.intsConst((kernelVar as LayerVariable).shape), dy], attrs));
          if (biasVar) addGrad(biasVar, g.op('BiasAddGrad', [dy], { T: F }));
          return [isStem ? undefined : g.op(bin, [g.op('Shape', [input], { T: F, out_type: { type: 'DT_INT32' } }), kernel, dy], attrs)];
        };
        break;
      }
      case 'BatchNormalization': {
        const gamma = L.gamma;
        const beta = L.beta;
        const movingMean = L.movingMean as LayerVariable;
        const movingVar = L.movingVariance as LayerVariable;
        const epsilon = c.epsilon as number;
        const momentum = c.momentum as number;
        if (!layer.trainable) {
          // Frozen: normalised with the moving statistics, which stay; the gradient is dy * gamma / sqrt(var + eps).
          out = g.op('FusedBatchNormV3', [input, value(gamma), value(beta), value(movingMean), value(movingVar)],
            { T: F, U: F, epsilon: { f: epsilon }, data_format: { s: 'NHWC' }, is_training: { b: false }, exponential_avg_factor: { f: 1 } });
          back = (dy) => [g.op('Mul', [dy, g.op('Mul', [value(gamma), g.op('Rsqrt', [g.op('AddV2', [value(movingVar), g.floatConst(epsilon)], { T: F })], { T: F })], { T: F })], { T: F })];
          break;
        }
        const bnAttrs: Record<string, Attr> = { T: F, U: F, epsilon: { f: epsilon }, data_format: { s: 'NHWC' }, is_training: { b: true } };
        const bn = g.op('FusedBatchNormV3', [input, value(gamma), value(beta), value(movingMean), value(movingVar)], { ...bnAttrs, exponential_avg_factor: { f: 1 } });
        out = bn;
        // tfjs-layers' moving statistics: moving -= (moving - batch) * (1 - momentum), with the biased variance.
        const channels = movingMean.shape[0] ?? 1;
        const count = g.op('Mul', [g.op('Cast', [g.op('Size', [input], { T: F, out_type: { type: 'DT_INT32' } })], { SrcT: { type: 'DT_INT32' }, DstT: F }), g.floatConst(1 / channels)], { T: F });
        const biasedVar = g.op('Mul', [g.out(bn, 2), g.op('RealDiv', [g.op('Sub', [count, g.floatConst(1)], { T: F }), count], { T: F })], { T: F });
        const updateStat = (w: LayerVariable, batch: string): void => {
          const h = handles.get(w) as string;
          const delta = g.op('Mul', [g.op('Sub', [value(w), batch], { T: F }), g.floatConst(1 - momentum)], { T: F });
          controlAfterStep.push(g.op('AssignSubVariableOp', [h, delta], { dtype: F }));
        };
        updateStat(movingMean, g.out(bn, 1));
        updateStat(movingVar, biasedVar);
        back = (dy) => {
          const grad = g.op('FusedBatchNormGradV3', [dy, input, value(gamma), g.out(bn, 3), g.out(bn, 4), g.out(bn, 5)], bnAttrs);
          addGrad(gamma, g.out(grad, 1));
          addGrad(beta, g.out(grad, 2));
          return [grad];
        };
        break;
      }
      case 'ReLU':
      case 'Activation': {
        const six = className === 'ReLU' && c.maxValue === 6;
        out = g.op(six ? 'Relu6' : 'Relu', [input], { T: F });
        const y0 = out;
        back = (dy) => [g.op(six ? 'Relu6Grad' : 'ReluGrad', [dy, y0], { T: F })];
        break;
      }
      case 'MaxPooling2D': {
        const ps = c.poolSize as number[] | number;
        const attrs: Record<string, Attr> = { T: F, ksize: { ints: strides(ps) }, strides: { ints: strides(c.strides ?? ps) }, padding, data_format: { s: 'NHWC' } };
        out = g.op('MaxPool', [input], attrs);
        const y0 = out;
        back = (dy) => [g.op('MaxPoolGrad', [input, y0, dy], attrs)];
        break;
      }
      case 'ZeroPadding2D': {
        const [[top, bottom], [left, right]] = c.padding as [[number, number], [number, number]];
        const paddings = g.op('Reshape', [g.intsConst([0, 0, top, bottom, left, right, 0, 0]), g.intsConst([4, 2])], { T: { type: 'DT_INT32' }, Tshape: { type: 'DT_INT32' } });
        out = g.op('Pad', [input, paddings], { T: F, Tpaddings: { type: 'DT_INT32' } });
        back = (dy) => [g.op('Slice', [dy, g.intsConst([0, top, left, 0]), g.op('Shape', [input], { T: F, out_type: { type: 'DT_INT32' } })], { T: F, Index: { type: 'DT_INT32' } })];
        break;
      }
      case 'Add': {
        out = ins.length === 2 ? g.op('AddV2', ins, { T: F }) : g.op('AddN', ins, { T: F, N: { i: ins.length } });
        back = (dy) => ins.map(() => dy);
        break;
      }
      case 'LayerNormalization': {
        // Each image standardised over its own pixels; it reads the model's input (planGraphTraining), so no
        // gradient flows through it.
        const axes = g.intsConst([1, 2, 3]);
        const mean = g.op('Mean', [input, axes], { T: F, Tidx: { type: 'DT_INT32' }, keep_dims: { b: true } });
        const centred = g.op('Sub', [input, mean], { T: F });
        const variance = g.op('Mean', [g.op('Square', [centred], { T: F }), axes], { T: F, Tidx: { type: 'DT_INT32' }, keep_dims: { b: true } });
        const normalized = g.op('Mul', [centred, g.op('Rsqrt', [g.op('AddV2', [variance, g.floatConst(c.epsilon as number)], { T: F })], { T: F })], { T: F });
        const scaled = c.scale === false ? normalized : g.op('Mul', [normalized, value(L.gamma)], { T: F });
        out = c.center === false ? scaled : g.op('AddV2', [scaled, value(L.beta)], { T: F });
        constant.add((node.outputTensors[0] as SymbolicRef).id);
        back = () => [undefined];
        break;
      }
      case 'GlobalAveragePooling2D': {
        out = g.op('Mean', [input, g.intsConst([1, 2])], { T: F, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } });
        const area = (inShape[1] ?? 1) * (inShape[2] ?? 1);
        const channels = inShape[3] ?? -1;
        back = (dy) => {
          const scaled = g.op('Mul', [dy, g.floatConst(1 / area)], { T: F });
          const r = g.op('Reshape', [scaled, g.intsConst([-1, 1, 1, channels])], { T: F, Tshape: { type: 'DT_INT32' } });
          return [g.op('BroadcastTo', [r, g.op('Shape', [input], { T: F, out_type: { type: 'DT_INT32' } })], { T: F, Tidx: { type: 'DT_INT32' } })];
        };
        break;
      }
      case 'Dropout': {
        const rate = c.rate as number;
        if (rate > 0) {
          seedFeed ??= g.placeholder('seed', [2], 'DT_INT32');
          const keep = 1 - rate;
          const uniform = g.op('StatelessRandomUniform', [g.op('Shape', [input], { T: F, out_type: { type: 'DT_INT32' } }), g.op('Add', [seedFeed, g.intsConst([0, ++dropoutCount])], { T: { type: 'DT_INT32' } })], { dtype: F, T: { type: 'DT_INT32' }, Tseed: { type: 'DT_INT32' } });
          const mask = g.op('Mul', [g.op('Floor', [g.op('AddV2', [uniform, g.floatConst(keep)], { T: F })], { T: F }), g.floatConst(1 / keep)], { T: F });
          out = g.op('Mul', [input, mask], { T: F });
          back = (dy) => [g.op('Mul', [dy, mask], { T: F })];
        } else {
          out = input;
          back = (dy) => [dy];
        }
        break;
      }
      case 'Dense': {
        const kernelVar = L.kernel;
        const kernel = value(kernelVar);
        const mm = g.op('MatMul', [input, kernel], { T: F, transpose_a: { b: false }, transpose_b: { b: false } });
        const biasVar = c.useBias ? L.bias : undefined;
        out = biasVar ? g.op('BiasAdd', [mm, value(biasVar)], { T: F }) : mm;
        regularize(layer, 'kernelRegularizer', kernelVar);
        if (biasVar) regularize(layer, 'biasRegularizer', biasVar);
        if (activationOf(layer) === 'softmax') outputLogits = out;
        back = (dy) => {
          addGrad(kernelVar, g.op('MatMul', [input, dy], { T: F, transpose_a: { b: true }, transpose_b: { b: false } }));
          if (biasVar) addGrad(biasVar, g.op('BiasAddGrad', [dy], { T: F }));
          return [g.op('MatMul', [dy, kernel], { T: F, transpose_a: { b: false }, transpose_b: { b: true } })];
        };
        break;
      }
      default:
        throw new BackendError(`graph training: layer "${layer.name}" is a ${className}`);
    }
    tensorOf.set((node.outputTensors[0] as SymbolicRef).id, out);
    // Computed from constants alone with nothing to train (a fixed gray-to-RGB filter on the input): no gradient.
    if (layer.trainableWeights.length === 0 && node.inputTensors.every((t) => constant.has(t.id))) constant.add((node.outputTensors[0] as SymbolicRef).id);
    backward.push({ layer, node, back });
  }
  if (!outputLogits) throw new BackendError('graph training: the model has no softmax output');

  // The loss of lib/train.ts's trainStep and its gradient with respect to the logits (through the clip, exactly).
  const K = numClasses;
  const ls = options.labelSmoothing;
  const probs = g.op('Softmax', [outputLogits], { T: F });
  const smooth = g.op('AddV2', [g.op('Mul', [y, g.floatConst(1 - ls)], { T: F }), g.floatConst(ls / K)], { T: F });
  const clipped = g.op('ClipByValue', [probs, g.floatConst(1e-7), g.floatConst(1)], { T: F });
  const perImage = g.op('Neg', [g.op('Sum', [g.op('Mul', [smooth, g.op('Log', [clipped], { T: F })], { T: F }), g.intsConst([1])], { T: F, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } })], { T: F });
  const weightsConst = g.op('Reshape', [g.op('Pack', options.classWeights.map((w) => g.floatConst(w)), { T: F, N: { i: K }, axis: { i: 0 } }), g.intsConst([1, K])], { T: F, Tshape: { type: 'DT_INT32' } });
  // Per-image weights: fed (sample weights) or, by default, each image's class weight.
  const byClass = g.op('Sum', [g.op('Mul', [y, weightsConst], { T: F }), g.intsConst([1])], { T: F, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } });
  const w = g.op('PlaceholderWithDefault', [byClass], { dtype: F, shape: { shape: [-1] } }, { name: 'sample_weights' });
  const wSum = g.op('Sum', [w, g.intsConst([0])], { T: F, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } });
  let loss = g.op('RealDiv', [g.op('Sum', [g.op('Mul', [perImage, w], { T: F }), g.intsConst([0])], { T: F, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } }), wSum], { T: F });
  for (const term of l2Terms) loss = g.op('AddV2', [loss, term], { T: F });
  const correct = g.op('Sum', [
    g.op('Cast', [g.op('Equal', [
      g.op('ArgMax', [probs, g.intConst(1)], { T: F, Tidx: { type: 'DT_INT32' }, output_type: { type: 'DT_INT32' } }),
      g.op('ArgMax', [y, g.intConst(1)], { T: F, Tidx: { type: 'DT_INT32' }, output_type: { type: 'DT_INT32' } }),
    ], { T: { type: 'DT_INT32' } })], { SrcT: { type: 'DT_BOOL' }, DstT: F }),
    g.intsConst([0]),
  ], { T: F, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } });
  // d loss / d p = -(w_i / W) * smooth / p inside the clip's range (0 outside), then through the softmax.
  const scale = g.op('Neg', [g.op('RealDiv', [w, wSum], { T: F })], { T: F });
  const inRange = g.op('LogicalAnd', [
    g.op('GreaterEqual', [probs, g.floatConst(1e-7)], { T: F }),
    g.op('LessEqual', [probs, g.floatConst(1)], { T: F }),
  ]);
  const dClipped = g.op('Mul', [g.op('RealDiv', [smooth, clipped], { T: F }), g.op('Reshape', [scale, g.intsConst([-1, 1])], { T: F, Tshape: { type: 'DT_INT32' } })], { T: F });
  const dProbs = g.op('Select', [inRange, dClipped, g.op('ZerosLike', [dClipped], { T: F })], { T: F });
  const gp = g.op('Mul', [dProbs, probs], { T: F });
  const dLogits = g.op('Sub', [gp, g.op('Mul', [probs, g.op('Sum', [gp, g.intsConst([1])], { T: F, Tidx: { type: 'DT_INT32' }, keep_dims: { b: true } })], { T: F })], { T: F });

  // Backward pass, layers in reverse order; gradients of a tensor used twice are added.
  const gradOfTensor = new Map<number, string[]>();
  const outputId = (model.outputs[0] as unknown as SymbolicRef).id;
  gradOfTensor.set(outputId, [dLogits]);
  const sum = (parts: string[]): string => (parts.length === 1 ? (parts[0] as string) : g.op('AddN', parts, { T: F, N: { i: parts.length } }));
  for (const { node, back } of [...backward].reverse()) {
    const parts = gradOfTensor.get((node.outputTensors[0] as SymbolicRef).id);
    if (!parts || parts.length === 0) continue;
    const dxs = back(sum(parts));
    node.inputTensors.forEach((t, i) => {
      const dx = dxs[i];
      if (dx === undefined || constant.has(t.id)) return;
      gradOfTensor.set(t.id, [...(gradOfTensor.get(t.id) ?? []), dx]);
    });
  }

  // Every read and gradient is done before any variable changes.
  const grads = new Map<LayerVariable, string>();
  for (const v of trainable) {
    const parts = gradsOf.get(v);
    if (parts && parts.length > 0) grads.set(v, sum(parts));
  }
  // Every read, the loss and every gradient are done before a variable changes. (The moving statistics' updates need
  // no barrier: each reads its variable through the same node as the forward pass, before it writes.)
  const barrier = g.op('NoOp', [], {}, { control: [loss, correct, ...grads.values()] });
  // The update of one variable: tfjs's Adam (bias correction fed as beta powers and epsilon-hat), or its momentum
  // (accum = m * accum + grad; w -= lr * accum, or with Nesterov w -= lr * (grad + m * accum)).
  let update: (handle: string, slotsOf: string[], grad: string) => string;
  if (rule.kind === 'adam') {
    const [b1p, b2p, epsilonHat] = ['beta1_power', 'beta2_power', 'epsilon_hat'].map((name) => g.placeholder(name, [])) as [string, string, string];
    const [beta1, beta2] = [g.floatConst(rule.adam.beta1), g.floatConst(rule.adam.beta2)];
    update = (h, [m, s], grad) => g.op('ResourceApplyAdam', [h, m as string, s as string, b1p, b2p, lr, beta1, beta2, epsilonHat, grad],
      { T: F, use_locking: { b: false }, use_nesterov: { b: false } }, { control: [barrier] });
  } else {
    const momentum = g.floatConst(rule.momentum.momentum);
    update = (h, [accum], grad) => g.op('ResourceApplyMomentum', [h, accum as string, lr, grad, momentum],
      { T: F, use_locking: { b: false }, use_nesterov: { b: rule.momentum.useNesterov } }, { control: [barrier] });
  }
  const updates: string[] = [...controlAfterStep];
  for (const v of trainable) {
    const grad = grads.get(v);
    if (grad) updates.push(update(handles.get(v) as string, slots.get(v) ?? [], grad));
  }
  // The weight average, after the updates: avg -= (avg - w) * (1 - decay) (decay 1: unchanged).
  const emaOps: string[] = [];
  if (emaTargets.length > 0) {
    const oneMinus = g.op('Sub', [g.floatConst(1), emaDecay], { T: F });
    const after = g.op('NoOp', [], {}, { control: updates });
    for (const t of emaTargets) {
      const current = g.op('ReadVariableOp', [t.source], { dtype: F }, { control: [after] });
      const avg = g.op('ReadVariableOp', [t.handle], { dtype: F }, { control: [after] });
      emaOps.push(g.op('AssignSubVariableOp', [t.handle, g.op('Mul', [g.op('Sub', [avg, current], { T: F }), oneMinus], { T: F })], { dtype: F }));
    }
  }
  g.op('Identity', [loss], { T: F }, { name: 'loss_out', control: [...updates, ...emaOps] });
  g.op('Identity', [correct], { T: F }, { name: 'correct_out', control: [...updates, ...emaOps] });

  // Initialisation and read-back. Each fed value is copied (DeepCopy always allocates) before the variable adopts
  // it: a tensor fed from JavaScript lends V8's memory, whose release calls napi_delete_reference, and Adam's
  // copy-on-write would release it on one of TensorFlow's threads, racing the main thread over Node's reference list
  // (a crash at exit, in node_napi_env__::DeleteMe). With the copy, those buffers are released on the main thread.
  const assigns = variables.map((v, i) =>
    g.op('AssignVariableOp', [v.handle, g.op('DeepCopy', [g.placeholder(`init_${i}`, v.shape)], { T: F })], { dtype: F }));
  g.op('Identity', [g.floatConst(0)], { T: F }, { name: 'init_done', control: assigns });
  const readNames = variables.map((v, i) => {
    g.op('ReadVariableOp', [v.handle], { dtype: F }, { name: `read_${i}` });
    return `read_${i}:0`;
  });
  return { graph: g, variables, reads: readNames, hasDropout: seedFeed !== undefined };
}
