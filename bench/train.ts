// Benchmark of training throughput: the lib/train.ts step in tfjs-node vs Python Keras (model.fit) on the same libtensorflow.
// Run with `npm run bench:train`. A benchmark, not a test: it prints figures and, as its last line, one JSON object.
//
// Environment: BENCH_MODEL (resnet | mobile | tiny), BENCH_WIDTH, BENCH_SIZE, BENCH_BATCH (default: the cpu preset),
// BENCH_STEPS (timed steps per block, 8), BENCH_BLOCKS (timed blocks per side, alternated, 5), BENCH_WARMUP (3),
// BENCH_VENV (the Python virtual environment, `.bench-venv`), BENCH_PYTHON (the interpreter that creates it, python3),
// BENCH_NO_KERAS=1 (tfjs only), BENCH_KERAS_ARGS (extra options for bench/keras_train.py, e.g. `--eager`),
// BENCH_PROFILE=1 (also break a few eager tfjs steps down: native TensorFlow ops, uploads, JavaScript), BENCH_NO_BN=1
// (diagnosis: both models without their BatchNormalization layers), BENCH_FAST (0: plain tfjs only, 1: with
// lib/fast-train.ts's patch only; default: both, alternated with Keras in every block), BENCH_GRAPH (0: leave out the
// graph step of lib/graph-train.ts, which `pneumotype train` runs with graphOps on; tfjsImagesPerSecond and
// ratioToKeras are the step it runs by default, graphRatioToKeras the graph's), BENCH_KERAS_SERIAL (0: leave out
// the second Keras reference, the same graph run one op at a time, TF_NUM_INTEROP_THREADS=1, which is what an eager
// runtime such as tfjs-node can at best match: it runs one op after the other, each on every core).
// The on/off switches (BENCH_NO_KERAS, BENCH_PROFILE, BENCH_NO_BN, BENCH_GRAPH, BENCH_KERAS_SERIAL) all read alike: 1 or
// true is on, 0 or false is off, unset or empty is the default (off for the first three, on for the last two), and any
// other value is an error.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { LayersModel, Optimizer, Tensor, Variable } from '@tensorflow/tfjs';
import { trainableVariables } from '../lib/checkpoint.js';
import { CLASSES, resolveConfig, type Config } from '../lib/config.js';
import { MODEL_CATALOG, buildModel, resolveModelOptions, type ModelName, type ModelOptions } from '../lib/models.js';
import { createRng } from '../lib/random.js';
import { loadTfWithInfo, type Tf } from '../lib/tf.js';
import { enableFastTraining, planFastTraining } from '../lib/fast-train.js';
import { GraphTrainer, planGraphTraining } from '../lib/graph-train.js';
import { classWeights, learningRateAt, trainStep } from '../lib/train.js';
import { intEnv, median, round } from './util.js';

const root = resolve(fileURLToPath(new URL('.', import.meta.url)), '..');
const venvDir = resolve(root, process.env.BENCH_VENV ?? '.bench-venv');
const venvPython = join(venvDir, 'bin', 'python');
const kerasScript = join(root, 'bench', 'keras_train.py');
/** Label counts of the real train split (normal, bacteria, virus), for the class weights the real step uses. */
const TRAIN_LABEL_COUNTS = [1349, 2538, 1345];
/** Distinct random batches cycled through (both sides), so that no step sees exactly the previous input. */
const DISTINCT_BATCHES = 4;

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** An on/off switch from the environment: 1 or true is on, 0 or false off, unset or empty `fallback`, else an error. */
function flag(name: string, fallback = false): boolean {
  const raw = process.env[name];
  const v = raw?.trim().toLowerCase() ?? '';
  if (v === '') return fallback;
  if (v === '1' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  throw new Error(`${name}=${JSON.stringify(raw)} is not an on/off switch: expected 1 or true, 0 or false (or unset)`);
}

// --- the Python side: virtual environment and the Keras process ---------------------------------------------------

interface VenvResult {
  readonly python: string | undefined;
  readonly action: string;
}

function tensorflowVersionIn(python: string): string | undefined {
  if (!existsSync(python)) return undefined;
  const r = spawnSync(python, ['-c', 'import tensorflow as tf; print(tf.__version__)'], {
    encoding: 'utf8',
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '3' },
    timeout: 120_000,
  });
  return r.status === 0 ? r.stdout.trim().split('\n').at(-1) : undefined;
}

/** Creates `.bench-venv` with tensorflow-cpu==version unless it already imports that version. Prints what it did. */
function ensureVenv(version: string): VenvResult {
  const rel = relative(root, venvDir);
  const where = rel && !rel.startsWith('..') ? rel : venvDir;
  const found = tensorflowVersionIn(venvPython);
  if (found === version) return { python: venvPython, action: `reused ${where} (tensorflow ${found})` };
  const steps: string[] = [];
  if (!existsSync(venvPython)) {
    const base = process.env.BENCH_PYTHON ?? 'python3';
    log(`python: creating ${where} with \`${base} -m venv\``);
    const r = spawnSync(base, ['-m', 'venv', venvDir], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 300_000 });
    if (r.status !== 0) {
      return { python: undefined, action: `could not create ${where} with \`${base} -m venv\` (${r.error?.message ?? `exit ${r.status}`})` };
    }
    steps.push('created');
  }
  log(`python: installing tensorflow-cpu==${version} into ${where}${found ? ` (it has tensorflow ${found})` : ''}; pip's output follows on stderr`);
  const started = performance.now();
  // --retries 0: the default index may be unreachable (a local mirror is configured as an extra index); do not wait on it.
  const r = spawnSync(venvPython, ['-m', 'pip', 'install', '--retries', '0', '--timeout', '30', '--progress-bar', 'off', `tensorflow-cpu==${version}`], {
    stdio: ['ignore', process.stderr, process.stderr],
    timeout: 900_000,
  });
  const after = tensorflowVersionIn(venvPython);
  if (r.status !== 0 || after !== version) {
    return { python: undefined, action: `could not install tensorflow-cpu==${version} into ${where} (pip ${r.error?.message ?? `exit ${r.status}`}, tensorflow now ${after ?? 'missing'})` };
  }
  steps.push(`installed tensorflow-cpu==${version} in ${round((performance.now() - started) / 1000)} s`);
  return { python: venvPython, action: `${steps.join(', ')} (${where})` };
}

interface KerasReady {
  readonly event: 'ready';
  readonly parameters: number;
  readonly trainableParameters: number;
  readonly weightShapes: string[];
  readonly tensorflow: string;
  readonly keras: string;
  readonly jitCompile: boolean;
  readonly runEagerly: boolean;
  readonly method: string;
  readonly warmupSeconds: number;
  readonly startupSeconds: number;
  readonly intraOpThreads: number;
}

interface Block {
  readonly steps: number;
  readonly seconds: number;
  readonly imagesPerSecond: number;
}

/** bench/keras_train.py in --serve mode: one JSON line per answer on stdout, stderr kept for error reports. */
class KerasProcess {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterator<string>;
  private stderr = '';

  constructor(python: string, args: string[], env: Record<string, string> = {}) {
    this.child = spawn(python, [kerasScript, ...args, '--serve'], { env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2', ...env } });
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-8000);
    });
    this.lines = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  async next<T>(timeoutMs: number): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`bench/keras_train.py did not answer within ${timeoutMs / 1000} s`)), timeoutMs);
    });
    try {
      const r = await Promise.race([this.lines.next(), timeout]);
      if (r.done) throw new Error(`bench/keras_train.py exited early; its stderr ends with:\n${this.stderr.trim().split('\n').slice(-15).join('\n')}`);
      return JSON.parse(r.value) as T;
    } finally {
      clearTimeout(timer);
    }
  }

  async run(): Promise<Block> {
    this.child.stdin.write('run\n');
    return this.next<Block>(600_000);
  }

  close(): void {
    if (this.child.exitCode === null) {
      this.child.stdin.end('quit\n');
      setTimeout(() => this.child.kill(), 5000).unref();
    }
  }
}

// --- the tfjs side: the step of lib/train.ts ----------------------------------------------------------------------

/**
 * One training step as lib/train.ts runs it: the learning rate of the schedule set on the optimizer, its exported
 * `trainStep` (optimizer.minimize over the class-weighted, label-smoothed cross-entropy plus the layers' L2 losses),
 * and the running loss and accuracy sums updated; a sync every 20 steps as the real loop checks for NaN.
 */
class TfjsTrainer {
  private lossSum: Tensor;
  private correctSum: Tensor;
  private step = 0;
  /** The variables the step trains, found once as `pneumotype train` does. */
  private readonly variables: Variable[];
  constructor(
    private readonly tf: Tf,
    private readonly model: LayersModel,
    private readonly optimizer: Optimizer,
    private readonly config: Config,
    private readonly classWeightTensor: Tensor,
    private readonly stepsPerEpoch: number,
    /** Run each step as this graph instead (lib/graph-train.ts, as `pneumotype train` does on tfjs-node). */
    private readonly graph?: GraphTrainer,
  ) {
    this.lossSum = tf.scalar(0);
    this.correctSum = tf.scalar(0);
    this.variables = trainableVariables(model);
  }

  async trainStep(xs: Tensor, ys: Tensor, batchSize: number): Promise<void> {
    const { tf, model: m, config, classWeightTensor } = this;
    const lr = learningRateAt(config, this.step, this.stepsPerEpoch);
    (this.optimizer as unknown as { learningRate: number }).learningRate = lr;
    const { loss, correct: c } = this.graph
      ? this.graph.step(xs, ys, this.step + 1)
      : trainStep({ model: m, optimizer: this.optimizer, variables: this.variables, xs, ys, classWeights: classWeightTensor, labelSmoothing: config.labelSmoothing });
    const [nextLoss, nextCorrect] = tf.tidy(() => [this.lossSum.add(loss.mul(batchSize)), this.correctSum.add(c)]);
    tf.dispose([this.lossSum, this.correctSum, loss, c]);
    this.lossSum = nextLoss;
    this.correctSum = nextCorrect;
    this.step++;
    if (this.step % 20 === 0) await this.sync();
  }

  /** Waits for every queued step: the running loss is read back (the real loop does this at the end of an epoch). */
  async sync(): Promise<number> {
    const v = (await this.lossSum.data())[0] ?? Number.NaN;
    if (!Number.isFinite(v)) throw new Error(`the training loss became ${v} at step ${this.step}`);
    return v;
  }

  dispose(): void {
    this.tf.dispose([this.lossSum, this.correctSum]);
  }
}

type Variant = 'plain' | 'fast' | 'graph';

interface NativeBinding {
  executeOp(name: string, attrs: unknown, inputs: number[], numOutputs: number): unknown;
  createTensor(shape: number[], dtype: number, values: unknown): number;
}

/**
 * Where the time of a tfjs step goes (BENCH_PROFILE=1), over `steps` steps: the native TensorFlow ops (the binding's
 * executeOp, timed around each call: tfjs-node runs every op synchronously, so this is the op's own time), the
 * uploads of JS-made tensors to TensorFlow (createTensor), and the rest (JavaScript: layers, autodiff, bookkeeping,
 * garbage collection). Plus tf.profile's count of tfjs kernels (composite kernels counted with their parts).
 */
async function profileSteps(tf: Tf, trainer: TfjsTrainer, data: readonly { xs: Tensor; ys: Tensor }[], batch: number, steps: number) {
  // The binding object is frozen: the backend gets a stand-in that times the two calls and delegates the rest.
  const backend = tf.backend() as unknown as { binding?: NativeBinding };
  const binding = backend.binding;
  const byOp = new Map<string, { count: number; ms: number }>();
  let uploads = 0;
  let uploadMs = 0;
  if (binding) {
    backend.binding = Object.create(binding, {
      executeOp: {
        value: (name: string, attrs: unknown, inputs: number[], numOutputs: number) => {
          const t = performance.now();
          try {
            return binding.executeOp(name, attrs, inputs, numOutputs);
          } finally {
            const e = byOp.get(name) ?? { count: 0, ms: 0 };
            e.count++;
            e.ms += performance.now() - t;
            byOp.set(name, e);
          }
        },
      },
      createTensor: {
        value: (shape: number[], dtype: number, values: unknown) => {
          const t = performance.now();
          try {
            return binding.createTensor(shape, dtype, values);
          } finally {
            uploads++;
            uploadMs += performance.now() - t;
          }
        },
      },
    }) as NativeBinding;
  }
  const started = performance.now();
  try {
    for (let i = 0; i < steps; i++) {
      const d = data[i % data.length]!;
      await trainer.trainStep(d.xs, d.ys, batch);
    }
    await trainer.sync();
  } finally {
    if (binding) backend.binding = binding;
  }
  const wallMs = (performance.now() - started) / steps;
  const kernelInfo = await tf.profile(async () => {
    const d = data[0]!;
    await trainer.trainStep(d.xs, d.ys, batch);
    await trainer.sync();
    return [];
  });
  const ops = [...byOp.entries()]
    .sort((a, b) => b[1].ms - a[1].ms)
    .map(([name, e]) => ({ name, callsPerStep: round(e.count / steps, 1), msPerStep: round(e.ms / steps, 2) }));
  const nativeMs = [...byOp.values()].reduce((s, e) => s + e.ms, 0) / steps;
  return {
    steps,
    wallMsPerStep: round(wallMs, 1),
    nativeOpMsPerStep: round(nativeMs, 1),
    nativeOpCallsPerStep: round([...byOp.values()].reduce((s, e) => s + e.count, 0) / steps),
    uploadMsPerStep: round(uploadMs / steps, 1),
    uploadsPerStep: round(uploads / steps, 1),
    otherMsPerStep: round(wallMs - nativeMs - uploadMs / steps, 1),
    tfjsKernelCallsPerStep: kernelInfo.kernels.length,
    ops,
  };
}

/**
 * Diagnosis (BENCH_NO_BN=1): the same model without its BatchNormalization layers, rebuilt from its topology with each
 * BN's consumers wired to the BN's input. Weights are initialised afresh (with the same seeded initialisers).
 */
async function withoutBatchNorm(tf: Tf, model: LayersModel): Promise<LayersModel> {
  type Ref = [string, number, number, Record<string, unknown>];
  type LayerJson = { name: string; class_name: string; inbound_nodes: Ref[][] };
  const json = model.toJSON(null, false) as unknown as { config: { layers: LayerJson[]; output_layers: Ref[] } };
  const source = new Map<string, Ref>();
  for (const l of json.config.layers) if (l.class_name === 'BatchNormalization') source.set(l.name, l.inbound_nodes[0]![0]!);
  const rewire = (r: Ref): Ref => (source.has(r[0]) ? rewire(source.get(r[0])!) : r);
  json.config.layers = json.config.layers
    .filter((l) => l.class_name !== 'BatchNormalization')
    .map((l) => ({ ...l, inbound_nodes: l.inbound_nodes.map((node) => node.map(rewire)) }));
  json.config.output_layers = json.config.output_layers.map(rewire);
  return tf.models.modelFromJSON(json as unknown as Parameters<Tf['models']['modelFromJSON']>[0]);
}

// --- main ----------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const cores = availableParallelism();
  const config = resolveConfig('cpu');
  const name = (process.env.BENCH_MODEL ?? config.model) as ModelName;
  if (!(name in MODEL_CATALOG)) throw new Error(`BENCH_MODEL=${JSON.stringify(name)} is not one of ${Object.keys(MODEL_CATALOG).join(', ')}`);
  const modelOptions: ModelOptions = {
    name,
    imageSize: intEnv('BENCH_SIZE', config.imageSize),
    dropout: config.dropout,
    l2: config.weightDecay,
    seed: config.seed,
  };
  const width = process.env.BENCH_WIDTH ? intEnv('BENCH_WIDTH', 1) : name === config.model && config.modelWidth > 0 ? config.modelWidth : undefined;
  if (width !== undefined) modelOptions.width = width;
  const resolved = resolveModelOptions(modelOptions);
  const batch = intEnv('BENCH_BATCH', config.batchSize);
  const steps = intEnv('BENCH_STEPS', 8);
  const blocks = intEnv('BENCH_BLOCKS', 5);
  const warmup = intEnv('BENCH_WARMUP', 3);
  const S = resolved.imageSize;
  const noKeras = flag('BENCH_NO_KERAS');
  const noBn = flag('BENCH_NO_BN');
  const profileWanted = flag('BENCH_PROFILE');
  const kerasSerialWanted = flag('BENCH_KERAS_SERIAL', true);
  const fastEnv = process.env.BENCH_FAST?.trim() ?? '';
  if (!['', '0', '1'].includes(fastEnv)) throw new Error(`BENCH_FAST=${JSON.stringify(fastEnv)} is not 0 or 1 (or unset: both)`);
  /** The tfjs variants timed: plain (lib/train.ts's step as is) and fast (the same with enableFastTraining). */
  const variants: Variant[] = fastEnv === '0' ? ['plain'] : fastEnv === '1' ? ['fast'] : ['plain', 'fast'];
  if (flag('BENCH_GRAPH', true)) variants.push('graph');

  const { tf, info } = loadTfWithInfo();
  const lib = info.libtensorflowVersion ?? 'unknown';
  log(`machine: ${cores} cores (${cpus()[0]?.model ?? 'unknown CPU'}), node ${process.version}, load average ${loadavg().map((l) => round(l, 2)).join(' ')}`);
  log(`tfjs: ${info.package} ${info.tfjsVersion}, backend ${info.backend}, libtensorflow ${lib}`);
  log(`model: ${name} width ${resolved.width}, ${S} px, batch ${batch}; ${warmup} warm-up steps, then ${blocks} blocks of ${steps} timed steps per side`);

  // Python first (it may take minutes the first time), so that the timed blocks follow one another closely.
  const wanted = /^\d+\.\d+\.\d+$/.test(lib) ? lib : '2.21.0';
  const venv: VenvResult = noKeras ? { python: undefined, action: 'skipped (BENCH_NO_KERAS)' } : ensureVenv(wanted);
  log(`python: ${venv.action}`);
  if (!venv.python && !noKeras) log('python: the Keras side is skipped: kerasImagesPerSecond will be null');

  const built = buildModel(modelOptions);
  const model = noBn ? await withoutBatchNorm(tf, built) : built;
  if (noBn) {
    built.dispose();
    log('diagnosis: BENCH_NO_BN=1, both models are built without their BatchNormalization layers');
  }
  const optimizer = tf.train.adam(config.learningRate);
  const weights = classWeights(TRAIN_LABEL_COUNTS, config.classWeights);
  const classWeightTensor = tf.tensor1d(weights);
  const stepsPerEpoch = Math.ceil(TRAIN_LABEL_COUNTS.reduce((a, b) => a + b, 0) / batch);
  const eagerTrainer = new TfjsTrainer(tf, model, optimizer, config, classWeightTensor, stepsPerEpoch);
  // The graph variant trains its own copy (same architecture and initial weights): its state lives in the session.
  let graphParts: { model: LayersModel; optimizer: Optimizer; graph: GraphTrainer; trainer: TfjsTrainer } | undefined;
  if (variants.includes('graph')) {
    const graphPlan = planGraphTraining(model);
    if (info.backend !== 'tensorflow' || !graphPlan.supported) {
      log(`graph: left out (${info.backend !== 'tensorflow' ? `backend ${info.backend}` : graphPlan.reason})`);
      variants.splice(variants.indexOf('graph'), 1);
    } else {
      const graphModel = noBn ? await withoutBatchNorm(tf, buildModel(modelOptions)) : buildModel(modelOptions);
      const graphOptimizer = tf.train.adam(config.learningRate);
      const graph = await GraphTrainer.create({ model: graphModel, optimizer: graphOptimizer, classWeights: weights, labelSmoothing: config.labelSmoothing, seed: config.seed });
      graphParts = { model: graphModel, optimizer: graphOptimizer, graph, trainer: new TfjsTrainer(tf, graphModel, graphOptimizer, config, classWeightTensor, stepsPerEpoch, graph) };
      log('graph: the step of lib/graph-train.ts (one TensorFlow session call per step), on a copy of the model');
    }
  }
  const trainerFor = (variant: Variant): TfjsTrainer => (variant === 'graph' && graphParts ? graphParts.trainer : eagerTrainer);
  const trainer = eagerTrainer;
  const rng = createRng(config.seed);
  const data = Array.from({ length: DISTINCT_BATCHES }, (_, i) => ({
    xs: tf.randomUniform([batch, S, S, 1], 0, 1, 'float32', config.seed + i),
    ys: tf.tidy(() => tf.oneHot(tf.tensor1d(Array.from({ length: batch }, () => Math.floor(rng() * CLASSES.length)), 'int32'), CLASSES.length).toFloat()),
  }));
  let keras: KerasProcess | undefined;
  let kerasSerial: KerasProcess | undefined;
  let kerasSerialError: string | undefined;
  let exitCode = 0;
  let undoFast: (() => void) | undefined;
  try {
    const parameters = model.countParams();
    const trainableParameters = model.trainableWeights.reduce((s, w) => s + w.shape.reduce<number>((a, b) => a * (b ?? 0), 1), 0);
    const bn = model.layers.find((l) => l.getClassName() === 'BatchNormalization')?.getConfig() as { momentum?: number; epsilon?: number } | undefined;
    const stem = (model.layers.find((l) => l.name === 'stem_conv')?.getConfig() as { kernelSize?: number[] } | undefined)?.kernelSize?.[0];

    // --- tfjs warm-up (kernels, lazy variables, the optimizer's slots), each variant
    const plan = planFastTraining(model);
    if (variants.includes('fast')) {
      const kinds = new Map<string, number>();
      for (const l of plan.layers) if (l.kind) kinds.set(l.kind, (kinds.get(l.kind) ?? 0) + 1);
      const skipped = plan.layers.filter((l) => l.reason).map((l) => `${l.name} (${l.reason})`);
      log(`fast: enableFastTraining patches ${plan.patched} layers (${[...kinds].map(([kind, n]) => `${n} ${kind}`).join(', ')}) and the Adam update` +
        `${skipped.length ? `; left alone: ${skipped.join(', ')}` : ''}${info.backend === 'tensorflow' ? '' : `; backend ${info.backend}: a no-op`}`);
    }
    /** Runs `fn` with the model patched (fast) or as built (plain). */
    const as = async <T>(variant: Variant, fn: () => Promise<T>): Promise<T> => {
      undoFast = variant === 'fast' ? enableFastTraining(model, { optimizer }) : undefined;
      try {
        return await fn();
      } finally {
        undoFast?.();
        undoFast = undefined;
      }
    };
    let t = performance.now();
    let k = 0;
    for (const variant of variants) {
      t = performance.now();
      await as(variant, async () => {
        for (let i = 0; i < warmup; i++, k++) {
          const d = data[k % DISTINCT_BATCHES]!;
          await trainerFor(variant).trainStep(d.xs, d.ys, batch);
        }
        await trainerFor(variant).sync();
      });
      log(`tfjs ${variant}: ${parameters.toLocaleString('en')} parameters (${trainableParameters.toLocaleString('en')} trainable); warm-up ${warmup} steps in ${round((performance.now() - t) / 1000, 2)} s`);
    }

    // --- Keras process: built and warmed up once, then asked for one block at a time
    let ready: KerasReady | undefined;
    let kerasError: string | undefined;
    if (venv.python) {
      const args = [
        '--model', name, '--image-size', String(S), '--batch', String(batch), '--width', String(resolved.width),
        '--depth', resolved.depth.join(','), '--dropout', String(resolved.dropout), '--l2', String(resolved.l2),
        '--bn-momentum', String(bn?.momentum ?? 0.99), '--bn-epsilon', String(bn?.epsilon ?? 1e-3),
        '--classes', String(resolved.numClasses), '--label-smoothing', String(config.labelSmoothing),
        '--class-weights', weights.join(','), '--learning-rate', String(config.learningRate),
        '--seed', String(config.seed), '--warmup', String(warmup), '--steps', String(steps),
        ...(stem ? ['--stem-kernel', String(stem)] : []),
        ...(noBn ? ['--no-bn'] : []),
        ...(process.env.BENCH_KERAS_ARGS?.split(/\s+/).filter(Boolean) ?? []),
      ];
      t = performance.now();
      keras = new KerasProcess(venv.python, args);
      try {
        ready = await keras.next<KerasReady>(600_000);
        log(`keras: tensorflow ${ready.tensorflow}, keras ${ready.keras}, ${ready.parameters.toLocaleString('en')} parameters ` +
          `(${ready.trainableParameters.toLocaleString('en')} trainable); ${ready.method}; jit_compile ${ready.jitCompile}, ` +
          `run_eagerly ${ready.runEagerly}; start-up + warm-up ${round((performance.now() - t) / 1000, 1)} s`);
      } catch (err) {
        kerasError = (err as Error).message;
        log(`keras: failed to start: ${kerasError}`);
        keras.close();
        keras = undefined;
      }
      if (ready) {
        const mine = model.weights.map((w) => JSON.stringify(w.shape)).sort();
        const same = ready.parameters === parameters && ready.trainableParameters === trainableParameters && JSON.stringify(mine) === JSON.stringify([...ready.weightShapes].sort());
        if (!same) {
          log(`ERROR: the two models differ: tfjs ${parameters} parameters (${trainableParameters} trainable, ${mine.length} weights), ` +
            `keras ${ready.parameters} (${ready.trainableParameters} trainable, ${ready.weightShapes.length} weights); the comparison is meaningless`);
          exitCode = 1;
        } else {
          log(`check: both models have ${parameters.toLocaleString('en')} parameters in ${mine.length} weights of the same shapes`);
        }
      }
      if (ready && exitCode === 0 && kerasSerialWanted) {
        kerasSerial = new KerasProcess(venv.python, args, { TF_NUM_INTEROP_THREADS: '1' });
        try {
          await kerasSerial.next<KerasReady>(600_000);
          log('keras serial: the same graph with TF_NUM_INTEROP_THREADS=1 (one op at a time, each on every core)');
        } catch (err) {
          kerasSerialError = (err as Error).message;
          log(`keras serial: failed to start: ${kerasSerialError}`);
          kerasSerial.close();
          kerasSerial = undefined;
        }
      }
    }

    // --- timed blocks, alternated: tfjs (plain, fast), keras, tfjs (plain, fast), keras, ...
    const tfjsBlocks: Block[] = [];
    const fastBlocks: Block[] = [];
    const kerasBlocks: Block[] = [];
    const kerasSerialBlocks: Block[] = [];
    const graphBlocks: Block[] = [];
    if (exitCode === 0) {
      log(`timing: ${blocks} blocks per side, alternated (${variants.map((v) => `tfjs ${v}`).join(', ')}, keras, ...) so that other load on this machine affects all alike`);
      for (let b = 0; b < blocks; b++) {
        for (const variant of variants) {
          const seconds = await as(variant, async () => {
            const started = performance.now();
            for (let i = 0; i < steps; i++, k++) {
              const d = data[k % DISTINCT_BATCHES]!;
              await trainerFor(variant).trainStep(d.xs, d.ys, batch);
            }
            await trainerFor(variant).sync();
            return (performance.now() - started) / 1000;
          });
          (variant === 'fast' ? fastBlocks : variant === 'graph' ? graphBlocks : tfjsBlocks).push({ steps, seconds: round(seconds, 4), imagesPerSecond: (steps * batch) / seconds });
          log(`  tfjs ${variant.padEnd(5)} block ${b + 1}: ${steps} steps in ${round(seconds, 2)} s = ${round((steps * batch) / seconds)} images/s (load ${round(loadavg()[0] ?? 0, 2)})`);
        }
        // A Keras process that fails in the middle loses its own figures (null, with the error), not the tfjs ones.
        if (keras) {
          try {
            const { steps: s, seconds, imagesPerSecond } = await keras.run();
            const kb: Block = { steps: s, seconds, imagesPerSecond };
            kerasBlocks.push(kb);
            log(`  keras      block ${b + 1}: ${kb.steps} steps in ${round(kb.seconds, 2)} s = ${round(kb.imagesPerSecond)} images/s (load ${round(loadavg()[0] ?? 0, 2)})`);
          } catch (err) {
            kerasError = `block ${b + 1}: ${(err as Error).message}`;
            log(`keras: failed in ${kerasError}; its figures are left out`);
            kerasBlocks.length = 0;
            keras.close();
            keras = undefined;
          }
        }
        if (kerasSerial) {
          try {
            const { steps: s, seconds, imagesPerSecond } = await kerasSerial.run();
            kerasSerialBlocks.push({ steps: s, seconds, imagesPerSecond });
            log(`  keras 1-op block ${b + 1}: ${s} steps in ${round(seconds, 2)} s = ${round(imagesPerSecond)} images/s (load ${round(loadavg()[0] ?? 0, 2)})`);
          } catch (err) {
            kerasSerialError = `block ${b + 1}: ${(err as Error).message}`;
            log(`keras serial: failed in ${kerasSerialError}; its figures are left out`);
            kerasSerialBlocks.length = 0;
            kerasSerial.close();
            kerasSerial = undefined;
          }
        }
      }
    }
    keras?.close();
    keras = undefined;
    kerasSerial?.close();
    kerasSerial = undefined;

    const profiles: Partial<Record<Variant, Awaited<ReturnType<typeof profileSteps>>>> = {};
    if (profileWanted && exitCode === 0) {
      for (const variant of variants.filter((v) => v !== 'graph')) {
        const profile = await as(variant, () => profileSteps(tf, trainer, data, batch, steps));
        profiles[variant] = profile;
        log(`profile of the tfjs ${variant} step (mean of ${profile.steps} steps): ${profile.wallMsPerStep} ms wall = ${profile.nativeOpMsPerStep} ms in ` +
          `${profile.nativeOpCallsPerStep} native TensorFlow ops + ${profile.uploadMsPerStep} ms uploading ${profile.uploadsPerStep} JS-made tensors + ` +
          `${profile.otherMsPerStep} ms of JavaScript (${profile.tfjsKernelCallsPerStep} tfjs kernel calls, composites included)`);
        for (const o of profile.ops.slice(0, 20)) log(`  ${o.name.padEnd(28)} ${String(o.callsPerStep).padStart(6)} calls ${String(o.msPerStep).padStart(9)} ms per step`);
      }
    }

    const med = (bs: Block[]): number | null => (bs.length ? median(bs.map((b) => b.imagesPerSecond)) : null);
    const ratioOf = (a: number | null, b: number | null): number | null => (a !== null && b !== null ? a / b : null);
    const r4 = (v: number | null): number | null => (v === null ? null : round(v, 4));
    const r2 = (v: number | null): number | null => (v === null ? null : round(v, 2));
    const plainIps = med(tfjsBlocks);
    const fastIps = med(fastBlocks);
    const graphIps = med(graphBlocks);
    const kerasIps = med(kerasBlocks);
    const serialIps = med(kerasSerialBlocks);
    // The step `pneumotype train` runs here by default: the graph (graphOps, on in the cpu preset), else the fast patch.
    const [trainIps, trainVariant] = config.graphOps && graphIps !== null ? [graphIps, 'graph'] : fastIps !== null ? [fastIps, 'fast'] : [plainIps, 'plain'];
    // The speed-up of the patch, as the median of the per-block ratios (the runs of a block are back to back).
    const speedup = tfjsBlocks.length && fastBlocks.length
      ? median(tfjsBlocks.map((b, i) => (fastBlocks[i]?.imagesPerSecond ?? Number.NaN) / b.imagesPerSecond))
      : null;
    if (trainIps !== null) {
      const ips = (v: number | null) => (v === null ? 'n/a' : `${round(v)} images/s`);
      const part = (label: string, v: number | null) => (v === null ? '' : `, ${label} = ${round(v, 3)}`);
      log(`result: tfjs plain ${ips(plainIps)}, tfjs fast ${ips(fastIps)}, tfjs graph ${ips(graphIps)}, keras ${ips(kerasIps)}, ` +
        `keras one op at a time ${ips(serialIps)}; ratios to keras: ${trainVariant} (what pneumotype train runs) = ${round(ratioOf(trainIps, kerasIps) ?? Number.NaN, 3)}` +
        `${part('plain', ratioOf(plainIps, kerasIps))}${part('fast', ratioOf(fastIps, kerasIps))}` +
        `${part('fast/plain', speedup)}${part('graph/fast', ratioOf(graphIps, fastIps))} (medians of ${blocks} alternated blocks; ` +
        `other processes on this machine may slow all sides, the alternation spreads that load over them)`);
    }
    log(JSON.stringify({
      tfjsImagesPerSecond: r2(trainIps),
      kerasImagesPerSecond: r2(kerasIps),
      ratioToKeras: r4(ratioOf(trainIps, kerasIps)),
      tfjsStep: trainVariant,
      tfjsPlainImagesPerSecond: r2(plainIps),
      tfjsFastImagesPerSecond: r2(fastIps),
      tfjsGraphImagesPerSecond: r2(graphIps),
      plainRatioToKeras: r4(ratioOf(plainIps, kerasIps)),
      fastRatioToKeras: r4(ratioOf(fastIps, kerasIps)),
      graphRatioToKeras: r4(ratioOf(graphIps, kerasIps)),
      fastSpeedup: r4(speedup),
      graphSpeedupOverFast: r4(ratioOf(graphIps, fastIps)),
      kerasSerialImagesPerSecond: r2(serialIps),
      ratioToKerasSerial: r4(ratioOf(trainIps, serialIps)),
      fastLayersPatched: variants.includes('fast') ? plan.patched : null,
      imageSize: S,
      batchSize: batch,
      model: name,
      ...(noBn ? { withoutBatchNorm: true } : {}),
      width: resolved.width,
      depth: name === 'resnet' ? resolved.depth : undefined,
      parameters,
      trainableParameters,
      kerasParameters: ready?.parameters ?? null,
      steps,
      blocks,
      warmupSteps: warmup,
      alternated: true,
      cores,
      loadAverage: loadavg().map((l) => round(l, 2)),
      tfjsBackend: `${info.package} (${info.backend})`,
      tfjsVersion: info.tfjsVersion,
      libtensorflowVersion: lib,
      tensorflowPython: ready?.tensorflow ?? null,
      keras: ready?.keras ?? null,
      kerasMethod: ready ? `${ready.method}; jit_compile ${ready.jitCompile}, run_eagerly ${ready.runEagerly}` : null,
      tfjsMethod: 'plain: lib/train.ts trainStep (optimizer.minimize with Adam over model.apply(x, {training: true}), class-weighted label-smoothed cross-entropy + L2); ' +
        'fast: the same with lib/fast-train.ts enableFastTraining(model, { optimizer }); graph: lib/graph-train.ts GraphTrainer.step (the same math as one TensorFlow graph); sync at block end',
      tfjsBlocks: tfjsBlocks.map((b) => ({ ...b, imagesPerSecond: round(b.imagesPerSecond, 2) })),
      tfjsFastBlocks: fastBlocks.map((b) => ({ ...b, imagesPerSecond: round(b.imagesPerSecond, 2) })),
      tfjsGraphBlocks: graphBlocks.map((b) => ({ ...b, imagesPerSecond: round(b.imagesPerSecond, 2) })),
      kerasBlocks: kerasBlocks.map((b) => ({ ...b, imagesPerSecond: round(b.imagesPerSecond, 2) })),
      kerasSerialBlocks: kerasSerialBlocks.map((b) => ({ ...b, imagesPerSecond: round(b.imagesPerSecond, 2) })),
      venv: venv.action,
      ...(kerasError ? { kerasError } : {}),
      ...(kerasSerialError ? { kerasSerialError } : {}),
      ...(exitCode ? { error: 'the tfjs and Keras models differ (parameters or weight shapes)' } : {}),
      ...(profiles.plain ? { profile: { ...profiles.plain, ops: profiles.plain.ops.slice(0, 30) } } : {}),
      ...(profiles.fast ? { profileFast: { ...profiles.fast, ops: profiles.fast.ops.slice(0, 30) } } : {}),
    }));
  } finally {
    keras?.close();
    kerasSerial?.close();
    undoFast?.();
    trainer.dispose();
    if (graphParts) {
      graphParts.trainer.dispose();
      graphParts.graph.dispose();
      graphParts.optimizer.dispose();
      graphParts.model.dispose();
    }
    tf.dispose([classWeightTensor, ...data.flatMap((d) => [d.xs, d.ys])]);
    optimizer.dispose();
    model.dispose();
  }
  process.exitCode = exitCode;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:train failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
