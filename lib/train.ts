// The training loop: a readable epoch/batch loop with warm-up + cosine (or plateau) learning rates, class weights,
// early stopping on validation macro-F1, atomic best/last checkpoints and exact resume.
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, rmdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, join, resolve } from 'node:path';
import type { LayersModel, Optimizer, Scalar, Tensor, Variable } from '@tensorflow/tfjs';
import type { AugmentOptions } from './augment.js';
import type { CalibrationRecord } from './calibrate.js';
import { CACHE_VERSION, openCache, prepareCache, prepareOptionsFromConfig, type OpenedCache, type PrepareResult, type Subset } from './cache.js';
import { loadLayersModelFromDir, loadOptimizerState, recoverDirSwap, saveModel, trainableVariables } from './checkpoint.js';
import { CLASSES, DEFAULTS, resolveConfig, type Config, type PresetName } from './config.js';
import { augmentThreads, batches } from './dataset.js';
import { BackendError, CacheError, ConfigError, PneumotypeError, checkInteger, messageOf, quote } from './errors.js';
import { groupBalancedWeights, groupOf, readGroups, type GroupingSource } from './balance.js';
import { WeightAverage } from './ema.js';
import { enableFastTraining } from './fast-train.js';
import { isHttpUrl, shownUrl } from './fetch.js';
import { GraphTrainer, planGraphTraining } from './graph-train.js';
import { exists, readJsonFile, sha256File, writeFileAtomic, writeJsonAtomic } from './fsx.js';
import { withLock } from './lock.js';
import { evaluatePredictions, type EvaluationReport } from './metrics.js';
import { checkMixup } from './mixup.js';
import { buildModel, MODEL_CATALOG, modelOptionsFromConfig, resolveModelOptions, summarizeModel, type ModelOptions, type ModelSummary } from './models.js';
import { THUMBNAIL_BYTES, thumbnail, TRAINING_THUMBNAILS_FILE } from './phash.js';
import { mapPool } from './pool.js';
import { ProgressTracker, type ProgressCallback } from './progress.js';
import { loadTfWithInfo } from './tf.js';
import { buildTransferModel, holdFrozenBatchNorms } from './transfer.js';
import { StallWatchdog } from './watchdog.js';

/** A training run that had to stop: a NaN loss, say. The last good checkpoint is kept. */
export class TrainingError extends PneumotypeError {
  constructor(message: string, details: { path?: string; cause?: unknown } = {}) {
    super('ERR_TRAINING', message, details);
  }
}

export interface TrainOptions {
  /** The labelled folder (manifest.csv); its cache is prepared when missing. */
  readonly data: string;
  /** The run folder: checkpoints/, history.json, model/ (the best model, ready to use). */
  readonly out: string;
  readonly preset?: PresetName;
  /** Overrides of the configuration (see DEFAULTS in lib/config.ts). */
  readonly config?: Partial<Config>;
  /** Where the prepared caches live (the config's cacheDir). */
  readonly cacheDir?: string;
  /** Continue from `out/checkpoints/last`, optimizer state included. */
  readonly resume?: boolean;
  /**
   * The caller has just prepared the cache and reported it (`pneumotype run`): train's own check of it reports
   * nothing unless it has to rebuild (prepareCache's `announceReuse` false). Default false.
   */
  readonly cachePrepared?: boolean;
  /**
   * Without `resume`, train afresh into a folder that holds a run (SageMaker with `resume` false): what an earlier
   * run wrote there (checkpoints/last and best, model/, history.json, stalled.txt and their temporary files) is
   * removed before training starts, other files are left alone; a stop before the first epoch ends then leaves no
   * model (never the earlier run's). Default false: such a folder is refused, never silently replaced.
   */
  readonly replace?: boolean;
  /** Random changes applied to training images (none by default, as in the original narrative). */
  readonly augment?: AugmentOptions | false;
  /**
   * Weigh each training image so that the classes balance within every group of this grouping (see
   * groupBalancedWeights in lib/balance.ts), instead of the class weights: e.g. the copy pipeline of each image,
   * `{ csv: '../shared/data/chest_xray_train_224.csv', column: 'derived_from' }`.
   */
  readonly balanceGroups?: GroupingSource;
  /** Start from a pretrained tfjs layers model (folder or URL) with a new head, instead of from scratch. */
  readonly initFrom?: string;
  /** With `initFrom`: train the new head only, the pretrained layers stay fixed (kept on `resume`). Default false. */
  readonly freeze?: boolean;
  /** With `initFrom`: train every pretrained layer, also those it marks frozen (not with `freeze`). Default false. */
  readonly unfreeze?: boolean;
  /**
   * With `initFrom`: the pixel range the pretrained model expects (default [0, 1]; Keras's MobileNetV2: [-1, 1]).
   * [0, 1] given explicitly is the default: the same network, card and run (a resume with or without it continues).
   */
  readonly initRange?: readonly [number, number];
  /**
   * With `initFrom`: the layer whose output feeds the new head (default: found from the pretrained model's own head,
   * see buildTransferModel in lib/transfer.ts), e.g. `'block_16_project_BN'` to cut a MobileNetV2 earlier. The card
   * records the layer used, named or not: a resume naming the default layer, or naming none when the run was started
   * without one, continues the run; naming another layer is refused.
   */
  readonly featureLayer?: string;
  /**
   * Hold `OUT.lock` beside the run folder while training, so that a second training into it is refused (default
   * true). SageMaker passes false: one training per container, and a lock in its checkpoint folder, which SageMaker
   * copies to S3 and back, would come back on a restarted instance as another machine's.
   */
  readonly lock?: boolean;
  /** Stop after this many epochs in this call (the run can be resumed later); for tests and time boxes. */
  readonly stopAfterEpochs?: number;
  readonly onProgress?: ProgressCallback;
  /** Called after every epoch with its record. */
  readonly onEpoch?: (record: EpochRecord) => void;
  readonly signal?: AbortSignal;
}

/** One line of history.json. */
export interface EpochRecord {
  readonly epoch: number;
  readonly learningRate: number;
  readonly loss: number;
  readonly accuracy: number;
  readonly valLoss: number;
  readonly valAccuracy: number;
  readonly valMacroF1: number;
  readonly valBalancedAccuracy: number;
  readonly seconds: number;
  readonly imagesPerSecond: number;
  readonly best: boolean;
}

/** pneumotype.json: everything needed to use a model and to know where it came from. */
export interface ModelCard {
  readonly format: 'pneumotype-model';
  readonly version: 1;
  readonly classes: readonly string[];
  readonly imageSize: number;
  readonly preprocessing: {
    readonly grayscale: true;
    readonly resize: 'fill';
    readonly kernel: 'lanczos3';
    readonly scale: '1/255';
    readonly channels: 1;
  };
  readonly model: ModelOptions & { readonly summary: ModelSummary };
  readonly training: {
    readonly config: Config;
    readonly epoch: number;
    readonly epochs: number;
    readonly seconds: number;
    readonly backend: string;
    readonly augment: AugmentOptions | false;
    /** The pretrained model the run started from, when not from scratch. */
    readonly initFrom: string | null;
    /** Whether the pretrained layers were frozen (only with initFrom). */
    readonly freeze?: boolean;
    /** Whether every pretrained layer was trained, also those it marks frozen (only with initFrom, when true). */
    readonly unfreeze?: boolean;
    /** The pixel range the pretrained model was given (only with initFrom and a range other than [0, 1]). */
    readonly initRange?: readonly [number, number];
    /**
     * The pretrained layer the new head was put on (only with initFrom). Runs started before it was always recorded
     * hold it only when one was named (their `defaultFeatureLayer` is absent).
     */
    readonly featureLayer?: string;
    /** Whether `featureLayer` is the layer buildTransferModel picks by itself (recorded with it; only with initFrom). */
    readonly defaultFeatureLayer?: boolean;
    /** Which weights were saved: the moving average of the weights (emaDecay > 0) or those of the last step. */
    readonly weights?: string;
    /** How the steps ran: one TensorFlow graph per step, fused native ops, or plain tfjs (and why not the graph). */
    readonly engine?: string;
    /** The grouping whose classes the sample weights balanced (file name and column), when one was given. */
    readonly balanceGroups?: string;
    /** The SHA-256 of the grouping CSV of `balanceGroups` (recorded with it; absent in cards of older runs). */
    readonly balanceGroupsSha256?: string;
  };
  readonly data: {
    readonly labeledDir: string;
    readonly manifestSha256: string;
    readonly trainImages: number;
    readonly valImages: number;
    /**
     * The version of the decoding that made the training pixels (CACHE_VERSION of lib/cache.ts; absent in cards written
     * before version 4, when embedded ICC profiles began to be ignored). A run decoded another way is not resumed or
     * reused.
     */
    readonly decoding?: number;
  };
  readonly validation: { readonly accuracy: number; readonly macroF1: number; readonly balancedAccuracy: number; readonly loss: number };
  /** The temperature folded into the output layer by `calibrate`, and what it did (absent when never calibrated). */
  readonly calibration?: CalibrationRecord;
  readonly createdAt: string;
}

export interface TrainResult {
  readonly runDir: string;
  /** The best model, `runDir/model`. */
  readonly modelDir: string;
  readonly history: readonly EpochRecord[];
  readonly bestEpoch: number;
  readonly stoppedEarly: boolean;
  readonly card: ModelCard;
}

/** Trainer state saved with the last checkpoint: what --resume needs besides weights and optimizer. */
interface TrainerState {
  readonly epochsDone: number;
  readonly globalStep: number;
  readonly bestMetric: number;
  readonly bestEpoch: number;
  readonly sinceBest: number;
  readonly plateauScale: number;
  readonly seconds: number;
  readonly history: EpochRecord[];
  readonly configHash: string;
}

const STATE_FILE = 'trainer.json';
/** The model card's file in a model folder. */
export const CARD_FILE = 'pneumotype.json';

/**
 * The learning rate of step `step` (0-based): linear warm-up, then cosine decay to the floor (or a plateau scale).
 * Meant for `learningRate >= minLearningRate` (see {@link checkRecipe}); below its floor the schedule would run backwards.
 */
export function learningRateAt(config: Config, step: number, stepsPerEpoch: number, plateauScale = 1): number {
  const warmup = Math.max(0, Math.round(config.warmupEpochs * stepsPerEpoch));
  const total = Math.max(1, config.epochs * stepsPerEpoch);
  if (step < warmup) return config.minLearningRate + ((config.learningRate - config.minLearningRate) * (step + 1)) / warmup;
  if (config.schedule === 'plateau') return Math.max(config.minLearningRate, config.learningRate * plateauScale);
  const t = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
  return config.minLearningRate + 0.5 * (config.learningRate - config.minLearningRate) * (1 + Math.cos(Math.PI * t));
}

/** Class weights N / (K * n_c) from label counts (1 for every class when `mode` is 'none'). */
export function classWeights(counts: readonly number[], mode: string): number[] {
  if (mode === 'none') return counts.map(() => 1);
  const n = counts.reduce((a, b) => a + b, 0);
  return counts.map((c) => (c > 0 ? n / (counts.length * c) : 0));
}

function makeOptimizer(config: Config): Optimizer {
  const { tf } = loadTfWithInfo();
  if (config.optimizer === 'adam') return tf.train.adam(config.learningRate);
  if (config.optimizer === 'sgd') return tf.train.momentum(config.learningRate, 0.9, true);
  throw new ConfigError(`optimizer ${quote(config.optimizer)} is not one of "adam", "sgd"`);
}

/**
 * False while the run in `runDir` can go on: its last checkpoint has epochs left and did not stop early (a run cut short
 * by a time box or Ctrl-C has a model/ from its best epoch so far). True when there is no such checkpoint.
 *
 * @example if (!(await runFinished('runs/cpu', resolveConfig('cpu')))) await train({ ..., resume: true })
 */
export async function runFinished(runDir: string, config: Pick<Config, 'epochs' | 'patience'>): Promise<boolean> {
  const state = await readTrainerState(runDir);
  return state === undefined || state.epochsDone >= config.epochs || state.sinceBest >= config.patience;
}

/** The trainer state file of the run's last checkpoint. */
function trainerStatePath(runDir: string): string {
  return join(runDir, 'checkpoints', 'last', STATE_FILE);
}

/**
 * Whether `runDir` holds a checkpoint that `resume` continues (a run that is complete holds one too).
 *
 * @example if (!(await hasCheckpoint('runs/cpu'))) console.error('nothing to resume: a new run starts')
 */
export async function hasCheckpoint(runDir: string): Promise<boolean> {
  return exists(trainerStatePath(runDir));
}

/** The trainer state of the run's last checkpoint; undefined when there is none, a CacheError when it is damaged. */
async function readTrainerState(runDir: string): Promise<TrainerState | undefined> {
  const statePath = trainerStatePath(runDir);
  if (!(await exists(statePath))) return undefined;
  return readJsonFile<TrainerState>(statePath, (err) =>
    new CacheError(`cannot resume ${quote(runDir)}: its trainer state ${quote(statePath)} cannot be read (${messageOf(err)}); remove ${quote(runDir)} to start over`, { path: statePath, cause: err }));
}

/**
 * The preset a run folder's training was started with, for resuming it without naming one: the first of `candidates`
 * (a preset, or undefined for DEFAULTS alone) whose configuration with `overrides` is the one the run recorded.
 * Undefined when the folder holds no run to resume, or none fits (train's resume then names the difference).
 *
 * @example const own = await presetOfRun('runs/cpu', {}, ['cpu', 'gpu', undefined]); // { preset: 'cpu' }
 */
export async function presetOfRun(
  out: string,
  overrides: Partial<Config>,
  candidates: ReadonlyArray<PresetName | undefined>,
): Promise<{ preset: PresetName | undefined } | undefined> {
  const saved = await readTrainerState(resolve(out)).catch(() => undefined);
  if (saved === undefined) return undefined;
  for (const preset of candidates) {
    if (equivalentHashes(resolveConfig(preset, overrides)).includes(saved.configHash)) return { preset };
  }
  return undefined;
}

/**
 * True when `history` is of the run that made the card's weights: its epochs up to the chosen one add up to the
 * card's training time (within 5 %, at least 5 s). models/default ships the history of a rerun, whose seconds are
 * the rerun's. False for an empty history.
 *
 * @example historyIsOfCard(history, card.training) // false for a rerun's history.json
 */
export function historyIsOfCard(history: readonly EpochRecord[], training: Pick<ModelCard['training'], 'epoch' | 'seconds'>): boolean {
  if (history.length === 0) return false;
  const toBest = history.filter((e) => e.epoch <= training.epoch).reduce((sum, e) => sum + e.seconds, 0);
  return Math.abs(toBest - training.seconds) <= Math.max(5, 0.05 * training.seconds);
}

/**
 * A model card (pneumotype.json), or a CacheError naming the file when it cannot be read as one.
 *
 * @example (await readCard('runs/cpu/model/pneumotype.json')).training.epoch
 */
export function readCard(path: string): Promise<ModelCard> {
  return readJsonFile<ModelCard>(path, (err) => new CacheError(`${quote(path)} cannot be read as a model card (${messageOf(err)}): the run folder is damaged`, { path, cause: err }));
}

/** Frees an optimizer's tensors: tfjs's momentum optimizer leaves its rate (`c`, from SGD) out of its own dispose. */
function disposeOptimizer(optimizer: Optimizer | undefined): void {
  optimizer?.dispose();
  const rate = (optimizer as unknown as { c?: Tensor } | undefined)?.c;
  if (rate && !rate.isDisposed) rate.dispose();
}

/**
 * Sets the rate of `optimizer`'s next steps. tfjs's SGD and momentum optimizers keep it in a tensor made when they
 * are built (setLearningRate remakes it), Adam reads its `learningRate` at each step.
 *
 * @example setLearningRate(optimizer, learningRateAt(config, step, stepsPerEpoch, 1))
 */
export function setLearningRate(optimizer: Optimizer, lr: number): void {
  const o = optimizer as unknown as { learningRate: number; setLearningRate?: (lr: number) => void };
  if (typeof o.setLearningRate === 'function') o.setLearningRate(lr);
  else o.learningRate = lr;
}

// --- fast-train: the training step, exported (bench/train.ts times exactly this) --------------------------- begin
/** What one training step needs. */
export interface TrainStepOptions {
  readonly model: LayersModel;
  readonly optimizer: Optimizer;
  /** Images [b, S, S, 1]. */
  readonly xs: Tensor;
  /** One-hot labels [b, classes]. */
  readonly ys: Tensor;
  /** Per-class loss weights [classes] (see {@link classWeights}). */
  readonly classWeights: Tensor;
  /** Per-image loss weights [b], used instead of the class weights when given (see groupBalancedWeights). */
  readonly sampleWeights?: Tensor;
  readonly labelSmoothing: number;
  /** The variables to train, in the optimizer's order (default trainableVariables(model); the same every step). */
  readonly variables?: readonly Variable[];
  /**
   * The seed of this step's dropout masks (see {@link stepSeed}). tfjs starts a dropout layer's generator from the
   * layer's own seed at every call, so without one each step draws the same masks.
   */
  readonly dropoutSeed?: number;
}

/**
 * A seed of its own for each step of a run: mixed from the run's seed and the global step, so that a resumed run
 * draws what the uninterrupted one would.
 *
 * @example stepSeed(42, 0) !== stepSeed(42, 1) // true
 */
export function stepSeed(seed: number, step: number): number {
  return (Math.imul(seed | 0, 0x27d4eb2d) ^ Math.imul((step + 1) | 0, 0x165667b1)) >>> 0;
}

/** Every dropout layer of `model`, nested models' included, with the seed its masks are drawn from. */
function dropoutLayers(model: LayersModel): Array<{ seed?: number | undefined }> {
  return leafLayers(model).filter((l) => l.getClassName() === 'Dropout') as unknown as Array<{ seed?: number | undefined }>;
}

/** The layers of `model` with those of nested models in place of the models (a transfer model's pretrained base). */
function leafLayers(model: LayersModel): LayersModel['layers'] {
  const out: LayersModel['layers'] = [];
  const visit = (layers: LayersModel['layers']): void => {
    for (const layer of layers) {
      const inner = (layer as unknown as { layers?: LayersModel['layers'] }).layers;
      if (Array.isArray(inner)) visit(inner);
      else out.push(layer);
    }
  };
  visit(model.layers);
  return out;
}

/**
 * The penalty functions (L2 on kernels) of every layer of `model`, nested models included. tfjs-layers does not gather
 * them into a functional model's own `losses` (which stays empty), so they are collected layer by layer.
 *
 * @example const penalty = regularizationLosses(model).reduce((sum, f) => sum + (f().dataSync()[0] ?? 0), 0)
 */
export function regularizationLosses(model: LayersModel): Array<() => Scalar> {
  return [...(model.losses as Array<() => Scalar>), ...leafLayers(model).flatMap((layer) => layer.losses as Array<() => Scalar>)];
}

/**
 * One optimizer step at the optimizer's current learning rate: `optimizer.minimize` over the class-weighted,
 * label-smoothed cross-entropy of `model.apply(xs, { training: true })` plus the layers' L2 penalties
 * ({@link regularizationLosses}). Returns the
 * loss and the count of correct predictions, scalars the caller disposes.
 *
 * @example
 * const w = tf.tensor1d(classWeights([1349, 2538, 1345], 'balanced')); // tf from loadTf()
 * const { loss, correct } = trainStep({ model, optimizer, xs, ys, classWeights: w, labelSmoothing: 0.05 });
 */
export function trainStep(options: TrainStepOptions): { loss: Scalar; correct: Scalar } {
  const { tf } = loadTfWithInfo();
  const { model: m, optimizer, xs, ys, classWeights: weightTensor, sampleWeights, labelSmoothing } = options;
  // Fresh masks for this step; the layers get their own seeds back after it (a saved model.json stays as built).
  const dropouts = options.dropoutSeed === undefined ? [] : dropoutLayers(m);
  const ownSeeds = dropouts.map((d) => d.seed);
  dropouts.forEach((d, k) => {
    d.seed = ((options.dropoutSeed ?? 0) + k) >>> 0;
  });
  let correct: Scalar | undefined;
  try {
    const loss = optimizer.minimize(() => {
      const probs = m.apply(xs, { training: true }) as Tensor;
      const smooth = ys.mul(1 - labelSmoothing).add(labelSmoothing / CLASSES.length);
      const perImage = smooth.mul(tf.log(tf.clipByValue(probs, 1e-7, 1))).sum(1).neg();
      const w = sampleWeights ?? ys.mul(weightTensor).sum(1);
      let total = perImage.mul(w).sum().div(w.sum()) as Scalar;
      for (const reg of regularizationLosses(m)) total = total.add(reg());
      correct = tf.keep(tf.equal(probs.argMax(1), ys.argMax(1)).sum()) as Scalar;
      return total;
    }, true, [...(options.variables ?? trainableVariables(m))]) as Scalar;
    return { loss, correct: correct as unknown as Scalar };
  } finally {
    dropouts.forEach((d, k) => {
      d.seed = ownSeeds[k];
    });
  }
}
// --- fast-train: the training step ----------------------------------------------------------------------------- end

/**
 * The thumbnails of a cache's training images, one after another (the TRAINING_THUMBNAILS_FILE of a model folder, which
 * {@link seenInTraining} reads).
 *
 * @example await trainingThumbnails(cache, 128, 2) // Uint8Array(4709 * 272)
 */
export async function trainingThumbnails(cache: OpenedCache, size: number, concurrency: number): Promise<Uint8Array> {
  const indices = cache.indices('train');
  const out = new Uint8Array(indices.length * THUMBNAIL_BYTES);
  await mapPool(indices, concurrency, async (i, k) => out.set(await thumbnail(cache.readImage(i), size), k * THUMBNAIL_BYTES));
  return out;
}

/**
 * Writes the thumbnails of a model's training images into its folder (TRAINING_THUMBNAILS_FILE), for a model trained
 * before `train` kept them: its training split is carved again from `data` as the card records it (preparing the cache
 * at its input size where missing), and a labelled folder other than the one the model was trained on is refused.
 *
 * @example await writeTrainingThumbnails({ model: 'models/default', data: 'data/labeled' }) // 'models/default/training-thumbnails.u8'
 */
export async function writeTrainingThumbnails(options: { model: string; data: string; cacheDir?: string; onProgress?: ProgressCallback }): Promise<string> {
  const card = await readCard(join(options.model, CARD_FILE));
  const config = resolveConfig(undefined, card.training.config);
  const prepared = await prepareCache({
    labeledDir: options.data, cacheDir: options.cacheDir ?? config.cacheDir, imageSize: card.imageSize, valFraction: config.valFraction,
    seed: config.seed, concurrency: config.prepareConcurrency, ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  if (prepared.index.manifestSha256 !== card.data.manifestSha256) {
    const manifest = join(options.data, 'manifest.csv');
    throw new ConfigError(
      `${quote(manifest)} (SHA-256 ${prepared.index.manifestSha256.slice(0, 12)}…) is not the manifest the model in ${quote(options.model)} was trained on ` +
        `(${card.data.manifestSha256.slice(0, 12)}…): its training images cannot be told from it`,
      { path: manifest },
    );
  }
  const cache = await openCache(prepared.dir, { pixelsChecked: true });
  try {
    const out = join(options.model, TRAINING_THUMBNAILS_FILE);
    await writeFileAtomic(out, await trainingThumbnails(cache, card.imageSize, config.prepareConcurrency));
    return out;
  } finally {
    await cache.close();
  }
}

/** Probabilities for every image of a subset, in batches, with the validation loss. Tensors are all disposed. */
export async function predictSubset(
  model: LayersModel,
  cache: OpenedCache,
  subset: Subset,
  batchSize: number,
): Promise<{ probs: number[][]; trueIndex: number[]; patientIds: string[]; files: string[]; loss: number }> {
  const { tf } = loadTfWithInfo();
  const probs: number[][] = [];
  const trueIndex: number[] = [];
  const patientIds: string[] = [];
  const files: string[] = [];
  let lossSum = 0;
  for await (const batch of batches(cache, { subset, batchSize, shuffle: false })) {
    try {
      const [p, l] = tf.tidy(() => {
        const out = model.predict(batch.xs) as Tensor;
        return [out, batch.ys.mul(tf.log(tf.clipByValue(out, 1e-7, 1))).sum().neg()] as const;
      });
      const [pv, lv] = await Promise.all([p.array() as Promise<number[][]>, l.data()]);
      tf.dispose([p, l]);
      probs.push(...pv);
      lossSum += lv[0] ?? 0;
      trueIndex.push(...batch.labels);
      files.push(...batch.files);
      for (const i of batch.indices) patientIds.push(cache.index.images[i]?.patientId ?? '');
    } finally {
      tf.dispose([batch.xs, batch.ys]);
    }
  }
  return { probs, trueIndex, patientIds, files, loss: probs.length > 0 ? lossSum / probs.length : Number.NaN };
}

/**
 * The settings a run's weights depend on, as one string: a resumed or reused run must match it. A setting given
 * explicitly at the value its absence stands for (modelDepth "2,2,2,2" or modelWidth 32 for the resnet: the same
 * network) hashes as if it were absent, so that a configuration without explicit defaults hashes as it always did.
 */
export function configHash(config: Config): string {
  return rawConfigHash(alignedToDefaults(config));
}

/**
 * `config` with the network settings that name the model's own default (see MODEL_CATALOG in lib/models.ts) put back
 * to the value that stands for it ('' for modelDepth, 0 for modelWidth). Anything else is left as it is.
 */
function alignedToDefaults(config: Config): Config {
  const defaults = (MODEL_CATALOG as Readonly<Record<string, { defaults: Partial<ModelOptions> } | undefined>>)[config.model]?.defaults;
  if (defaults === undefined) return config;
  let out = config;
  if (config.modelWidth !== 0 && config.modelWidth === defaults.width) out = { ...out, modelWidth: 0 };
  // Only the resnet has blocks per stage (modelDepth is refused with the others).
  const depth = defaults.depth;
  if (config.model === 'resnet' && typeof config.modelDepth === 'string' && config.modelDepth !== '' && depth !== undefined) {
    const parts = config.modelDepth.split(',').map((p) => p.trim());
    if (parts.length === depth.length && parts.every((p, i) => /^\d+$/.test(p) && Number(p) === depth[i])) out = { ...out, modelDepth: '' };
  }
  return out;
}

/** The refusal of a resume whose recipe is not the run's: the settings that differ, by name, from the last checkpoint's card. */
function resumeRefused(runDir: string, savedHash: string, config: Config, last: ModelCard | undefined): ConfigError {
  // A card without its training configuration (damaged, or hand-made) names nothing: the hashes are shown instead.
  const recorded = (last as { training?: { config?: Partial<Config> } } | undefined)?.training?.config;
  const differences = recorded === undefined ? [] : recipeDifferences({ ...DEFAULTS, ...recorded }, config);
  return new ConfigError(
    differences.length > 0
      ? `cannot resume ${quote(runDir)}: it was started with another configuration: ${differences.join(', ')}; a resume continues the ` +
          'same run: give the settings it was started with, or train into another --out'
      : `cannot resume ${quote(runDir)}: it was started with another configuration (${savedHash}, now ${configHash(config)})`,
    { path: runDir },
  );
}

/**
 * The settings of the configuration hash in which `now` differs from `was` (what stops a resume; patience, epochs or
 * --eager are not among them), each as `name was (now value)`; a network setting that names the model's own default
 * counts as the default.
 *
 * @example recipeDifferences(resolveConfig('smoke'), resolveConfig('cpu'))[0] // 'model "tiny" (now "resnet")'
 */
export function recipeDifferences(was: Config, now: Config): string[] {
  const a = alignedToDefaults(was);
  const b = alignedToDefaults(now);
  const shown = (key: string, v: unknown): string =>
    (key === 'modelWidth' && v === 0) || (key === 'modelDepth' && v === '') ? 'default' : typeof v === 'string' ? quote(v) : String(v);
  return [...HASHED_KEYS, ...LATER_HASHED_KEYS].filter((key) => a[key] !== b[key]).map((key) => `${key} ${shown(key, a[key])} (now ${shown(key, b[key])})`);
}

/**
 * Every hash a run of the same configuration may have recorded: {@link configHash}, and the hashes that runs started
 * with the model's default depth or width given explicitly recorded before those were aligned (given as written now,
 * or in their plain form: "2,2,2,2", 32), so that such runs resume with the default given or not.
 */
function equivalentHashes(config: Config): string[] {
  const aligned = alignedToDefaults(config);
  const defaults = (MODEL_CATALOG as Readonly<Record<string, { defaults: Partial<ModelOptions> } | undefined>>)[config.model]?.defaults;
  const depths = [aligned.modelDepth, ...(config.model === 'resnet' && aligned.modelDepth === '' && defaults?.depth ? [defaults.depth.join(',')] : [])];
  const widths = [aligned.modelWidth, ...(aligned.modelWidth === 0 && defaults?.width !== undefined ? [defaults.width] : [])];
  const variants = depths.flatMap((modelDepth) => widths.map((modelWidth) => rawConfigHash({ ...aligned, modelDepth, modelWidth })));
  return [...new Set([configHash(config), rawConfigHash(config), ...variants])];
}

/** The settings a run's configuration hash is made of (a resume must keep them): the first, then those added later. */
const HASHED_KEYS = ['model', 'modelWidth', 'imageSize', 'batchSize', 'optimizer', 'learningRate', 'minLearningRate', 'warmupEpochs',
  'schedule', 'weightDecay', 'labelSmoothing', 'classWeights', 'seed', 'valFraction', 'dropout', 'emaDecay'] as const;
const LATER_HASHED_KEYS = ['mixup', 'antialias', 'standardize', 'modelDepth'] as const;

/** The hash of {@link configHash} without aligning explicit defaults: what runs started with them recorded. */
function rawConfigHash(config: Config): string {
  // Settings added later count only when not at their default, so that runs started before them still resume.
  const later = LATER_HASHED_KEYS.filter((k) => config[k] !== DEFAULTS[k]).map((k) => ({ [k]: config[k] }));
  return JSON.stringify([...HASHED_KEYS.map((k) => config[k]), ...later]);
}

/**
 * Trains a classifier on the prepared cache of `data` and writes the run to `out`:
 * `checkpoints/{best,last}/` (model.json + weights.bin, optimizer state in last), `history.json`, and `model/` (the
 * best model with its pneumotype.json card). `resume` continues from `checkpoints/last` exactly where it stopped.
 * While it runs it holds `OUT.lock` beside the run folder: a second training into the same folder gets a BusyError.
 *
 * @example const r = await train({ data: 'data/labeled', out: 'runs/cpu-1', preset: 'cpu' }); r.history.at(-1)
 */
export async function train(options: TrainOptions): Promise<TrainResult> {
  if (options.lock === false) return trainUnlocked(options);
  const runDir = resolve(options.out);
  // A call of this process stopped by its signal still holds the run while it writes what it has (a notebook's stop
  // button ends the cell at once, and the cell is run again at once): waited for, not a BusyError.
  await windingDown.get(runDir)?.catch(() => undefined);
  const run = withLock(`${runDir}.lock`, `training into ${quote(runDir)}`, () => trainUnlocked(options));
  const onAbort = (): void => void windingDown.set(runDir, run);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await run;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    if (windingDown.get(runDir) === run) windingDown.delete(runDir);
  }
}

/** Run folders whose training in this process was aborted and has not returned yet, with that training. */
const windingDown = new Map<string, Promise<TrainResult>>();

/**
 * Removes what a training into `runDir` writes there, and nothing else: checkpoints/last and checkpoints/best (then
 * checkpoints/ itself when that leaves it empty), model/, history.json, stalled.txt (the watchdog's report) and the
 * temporary names of their atomic writes (`DIR.pneumotype-tmp-PID`, `DIR.pneumotype-old-PID`, and before them
 * `DIR.tmp-PID` and `DIR.old-PID`; `history.json.PID.N.tmp`).
 */
async function removeRunOutputs(runDir: string): Promise<void> {
  const checkpoints = join(runDir, 'checkpoints');
  for (const name of await readdir(checkpoints).catch(() => [] as string[])) {
    if (/^(last|best)(\.(pneumotype-)?(old|tmp)-\d+)?$/.test(name)) await rm(join(checkpoints, name), { recursive: true, force: true });
  }
  await rmdir(checkpoints).catch(() => {}); // absent, or holding files of someone else's: left as it is
  for (const name of await readdir(runDir).catch(() => [] as string[])) {
    if (/^model(\.(pneumotype-)?(old|tmp)-\d+)?$/.test(name) || /^history\.json(\.\d+\.\d+\.tmp)?$/.test(name) || name === 'stalled.txt') {
      await rm(join(runDir, name), { recursive: true, force: true });
    }
  }
}

/**
 * An `initFrom` as cards record it and messages show it: a URL's user name, password and signature as `***` (they are
 * secrets, and a presigned link's signature changes each time it is made); a path as given.
 */
function shownSource(s: string): string {
  return isHttpUrl(s) ? shownUrl(s) : s;
}

/** Whether two `initFrom` values name the same model: URLs as recorded (see shownSource), paths once resolved (`pre`, `./pre/`). */
function sameSource(a: string | null, b: string | null): boolean {
  if (a === null || b === null) return a === b;
  return isHttpUrl(a) || isHttpUrl(b) ? shownSource(a) === shownSource(b) : resolve(a) === resolve(b);
}

/**
 * Checks the training recipe of a configuration, one ConfigError per value that no training could use, naming the
 * key, the value and what is expected (the network's own options are checked by resolveModelOptions). Every preset
 * passes. {@link train} runs it before any work.
 *
 * @example checkRecipe(resolveConfig('gpu', { learningRate: 5e-5 })) // ConfigError: learningRate 0.00005 is below minLearningRate 0.0001 …
 */
export function checkRecipe(config: Config): void {
  const bad = (key: keyof Config, expected: string): ConfigError => new ConfigError(`${key} ${quote(config[key])} is not valid: expected ${expected}`);
  const number = (key: 'learningRate' | 'minLearningRate' | 'warmupEpochs' | 'weightDecay'): void => {
    const v = config[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw bad(key, 'a finite number of at least 0');
  };
  const fraction = (key: 'labelSmoothing' | 'dropout'): void => {
    const v = config[key];
    if (typeof v !== 'number' || !(v >= 0 && v < 1)) throw bad(key, 'a number from 0 up to (not including) 1');
  };
  for (const key of ['epochs', 'batchSize', 'patience', 'plateauPatience'] as const) checkInteger(key, config[key], 1);
  if (config.optimizer !== 'adam' && config.optimizer !== 'sgd') throw new ConfigError(`optimizer ${quote(config.optimizer)} is not one of "adam", "sgd"`);
  if (config.schedule !== 'cosine' && config.schedule !== 'plateau') throw bad('schedule', '"cosine" or "plateau"');
  if (config.classWeights !== 'balanced' && config.classWeights !== 'none') throw bad('classWeights', '"balanced" or "none"');
  number('learningRate');
  number('minLearningRate');
  if (config.learningRate < config.minLearningRate) {
    // The warm-up climbs from the floor to the peak and the decay comes back down: below the floor both would run backwards.
    throw new ConfigError(
      `learningRate ${quote(config.learningRate)} is below minLearningRate ${quote(config.minLearningRate)}, the floor the schedule warms up from ` +
        `and decays to: give a learningRate of at least ${quote(config.minLearningRate)}, or a minLearningRate of at most ${quote(config.learningRate)}`,
    );
  }
  number('warmupEpochs');
  number('weightDecay');
  fraction('labelSmoothing');
  fraction('dropout');
  checkMixup(config.mixup);
  if (typeof config.emaDecay !== 'number' || !(config.emaDecay === 0 || (config.emaDecay > 0 && config.emaDecay < 1))) {
    throw bad('emaDecay', '0 (off) or a number above 0 and below 1, e.g. 0.998');
  }
  if (typeof config.maxSampleWeight !== 'number' || !(config.maxSampleWeight >= 1)) throw bad('maxSampleWeight', 'a number of at least 1');
  if (typeof config.stallSeconds !== 'number' || !(config.stallSeconds >= 0) || !Number.isFinite(config.stallSeconds)) throw bad('stallSeconds', 'a number of seconds of at least 0 (0: no stall guard)');
}

/** A pixel range of [0, 1], the default, is no range at all: treated as absent (the same network, the same card). */
function rangeOrDefault(range: readonly [number, number] | undefined): readonly [number, number] | undefined {
  return range && !(range[0] === 0 && range[1] === 1) ? range : undefined;
}

async function trainUnlocked(options: TrainOptions): Promise<TrainResult> {
  const config = resolveConfig(options.preset, options.config ?? {});
  checkRecipe(config); // the recipe, before any long work
  const modelOptions = modelOptionsFromConfig(config);
  if (!options.initFrom) resolveModelOptions(modelOptions); // checks every model option before any long work
  if (options.freeze && !options.initFrom) throw new ConfigError('freeze needs a pretrained model to freeze: give initFrom (--init-from DIR|URL) too');
  if (options.unfreeze && !options.initFrom) throw new ConfigError('unfreeze needs a pretrained model to unfreeze: give initFrom (--init-from DIR|URL) too');
  if (options.initRange && !options.initFrom) throw new ConfigError('initRange is the pixel range of a pretrained model: give initFrom (--init-from DIR|URL) too');
  if (options.featureLayer !== undefined && !options.initFrom) throw new ConfigError('featureLayer names a layer of a pretrained model: give initFrom (--init-from DIR|URL) too');
  const { tf, info } = loadTfWithInfo();
  const runDir = resolve(options.out);
  const ckptLast = join(runDir, 'checkpoints', 'last');
  const ckptBest = join(runDir, 'checkpoints', 'best');
  const augment = options.augment ?? false;
  // How the card names the grouping the classes were balanced in (and a resume compares against).
  const balanceLabel = options.balanceGroups ? `${basename(options.balanceGroups.csv)}:${options.balanceGroups.column}` : undefined;
  // The pretrained pixel range, [0, 1] given explicitly being the default.
  const initRange = rangeOrDefault(options.initRange);

  // A run folder that holds a run is continued (resume) or left alone: training afresh would replace its
  // checkpoints, model and history without a word.
  if (!options.resume && !options.replace) {
    const held = (['history.json', 'checkpoints', 'model'] as const).filter((f) => existsSync(join(runDir, f)));
    if (held.length > 0) {
      throw new ConfigError(
        `${quote(runDir)} already holds a run (${held.join(', ')}): continue it with --resume, train into another --out, or remove it to start over`,
        { path: runDir },
      );
    }
  }
  // The state a resume continues, read once: a resume with another recipe is refused before the cache is prepared
  // (the settings outside the hash are compared below, with the last checkpoint's card).
  let saved: TrainerState | undefined;
  if (options.resume) {
    // A swap that a killed process left half done is finished first; a damaged state is named here, before the work.
    const recovered = await recoverDirSwap(ckptLast);
    if (recovered !== '') options.onProgress?.({ stage: 'train', unit: 'batches', done: 0, message: recovered });
    saved = await readTrainerState(runDir);
    // A run started with a default given explicitly recorded the hash of that (see equivalentHashes): it resumes too.
    if (saved !== undefined && !equivalentHashes(config).includes(saved.configHash)) {
      const last = await readCard(join(ckptLast, CARD_FILE)).catch(() => undefined);
      throw resumeRefused(runDir, saved.configHash, config, last);
    }
  }
  // The grouping CSV is read before any long work: a typo in its path is not found after the cache is prepared.
  const groups = options.balanceGroups ? await readGroups(options.balanceGroups) : undefined;
  // Its content too, for the card: a resume compares it (the same file name and column may hold other groups).
  const balanceSha256 = options.balanceGroups ? await sha256File(options.balanceGroups.csv) : undefined;
  // Starting over: the earlier run's outputs go now, so that nothing of it can pass for this run's (a stop before
  // the first epoch ends finds no best checkpoint, instead of the earlier run's).
  if (!options.resume && options.replace) await removeRunOutputs(runDir);

  // Data: the prepared cache (built or reused), with the validation subset carved by patient.
  const prepared: PrepareResult = await prepareCache({
    labeledDir: options.data,
    ...prepareOptionsFromConfig(config),
    ...(options.cacheDir !== undefined ? { cacheDir: options.cacheDir } : {}),
    ...(options.cachePrepared ? { announceReuse: false } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  const cache = await openCache(prepared.dir, { pixelsChecked: true }); // prepareCache just checked them
  let model: LayersModel | undefined;
  let optimizer: Optimizer | undefined;
  let undoFastTraining: (() => void) | undefined; // fast-train
  let undoHold: (() => void) | undefined;
  let average: WeightAverage | undefined;
  let graph: GraphTrainer | undefined;
  let watchdog: StallWatchdog | undefined;
  try {
    const trainCount = cache.count('train');
    const valCount = cache.count('val');
    if (trainCount === 0) throw new ConfigError(`no training images in the cache of ${quote(options.data)}`, { path: options.data });
    const labelCounts = CLASSES.map((_, k) => cache.index.images.filter((i) => i.subset === 'train' && i.labelIndex === k).length);
    const weights = classWeights(labelCounts, config.classWeights);
    // Per-image weights balancing the classes within each group, by cache index (0 outside the training subset).
    let sampleWeightOf: Float32Array | undefined;
    if (groups) {
      const trainImages = cache.index.images.map((img, i) => ({ img, i })).filter(({ img }) => img.subset === 'train');
      const w = groupBalancedWeights(trainImages.map(({ img }) => img.labelIndex), trainImages.map(({ img }) => groupOf(groups, img.file)), { maxWeight: config.maxSampleWeight });
      sampleWeightOf = new Float32Array(cache.index.images.length);
      trainImages.forEach(({ i }, k) => {
        (sampleWeightOf as Float32Array)[i] = w[k] ?? 0;
      });
    }
    const stepsPerEpoch = Math.ceil(trainCount / config.batchSize);

    // Model and optimizer: fresh, or restored from the last checkpoint.
    let state: TrainerState = {
      epochsDone: 0, globalStep: 0, bestMetric: -Infinity, bestEpoch: -1, sinceBest: 0, plateauScale: 1, seconds: 0, history: [],
      configHash: configHash(config),
    };
    optimizer = makeOptimizer(config);
    // A folder swap that a killed process left half done (the last checkpoint renamed away, say) is finished first
    // (a resume has done the last checkpoint's above).
    for (const dir of options.resume ? [ckptBest, join(runDir, 'model')] : [ckptLast, ckptBest, join(runDir, 'model')]) {
      const done = await recoverDirSwap(dir);
      if (done !== '') options.onProgress?.({ stage: 'train', unit: 'batches', done: 0, message: done });
    }
    if (options.resume && saved === undefined) {
      const historyPath = join(runDir, 'history.json');
      const earlier = await readFile(historyPath, 'utf8').then((t) => {
        try {
          const parsed: unknown = JSON.parse(t);
          return Array.isArray(parsed) ? parsed.length : 1;
        } catch (err) {
          throw new CacheError(
            `cannot resume ${quote(runDir)}: its history.json is damaged (${messageOf(err)}) and ${quote(join(ckptLast, STATE_FILE))} is missing; ` +
              `train without --resume into another --out, or remove ${quote(runDir)} to start over`,
            { path: historyPath, cause: err },
          );
        }
      }, () => 0);
      if (earlier > 0) {
        throw new CacheError(
          `cannot resume ${quote(runDir)}: its history.json has ${earlier} epoch${earlier === 1 ? '' : 's'} but ${quote(join(ckptLast, STATE_FILE))} is missing, ` +
            `so the run cannot continue where it stopped; train without --resume into another --out, or remove ${quote(runDir)} to start over`,
          { path: ckptLast },
        );
      }
    }
    // The pretrained layer the head is on, for the card: what buildTransferModel resolved, or what the last card says.
    let featureRecord: { featureLayer?: string; defaultFeatureLayer?: boolean } = options.featureLayer !== undefined ? { featureLayer: options.featureLayer } : {};
    /** The epoch of a best checkpoint adopted on resume (written just before a kill, ahead of the last one). */
    let adoptedBest: number | undefined;
    /** The thumbnails of the training images (see trainingThumbnails), made when first saved, then kept. */
    let thumbnails: Uint8Array | undefined;
    const thumbnailsOnce = async (): Promise<Uint8Array> => (thumbnails ??= await trainingThumbnails(cache, config.imageSize, config.prepareConcurrency));
    if (saved !== undefined) {
      state = saved;
      // The best checkpoint is written before the last one: a kill between the two leaves best an epoch ahead of the
      // state. It is adopted (its epoch and metric), so that the run's model and its record name the same epoch even
      // if the epoch trained again does not beat it.
      const bestCard = await readCard(join(ckptBest, CARD_FILE)).catch(() => undefined);
      if (bestCard !== undefined && bestCard.training.epoch > state.epochsDone && Number.isFinite(bestCard.validation.macroF1)) {
        state = { ...state, bestEpoch: bestCard.training.epoch, bestMetric: bestCard.validation.macroF1, sinceBest: 0 };
        adoptedBest = bestCard.training.epoch;
      }
      const lastCard = join(ckptLast, CARD_FILE);
      const last = (await exists(lastCard)) ? await readCard(lastCard) : undefined;
      // Settings outside the configuration hash that change what the rest of the run does: the schedule's length (the
      // cosine decay runs over all epochs), the augmentation, the group balancing (its CSV's content too, where both
      // cards have it), plateauPatience with the plateau schedule, maxSampleWeight with group balancing, and the
      // transfer settings. Patience may change.
      const was = last?.training;
      const wasConfig: Config = { ...DEFAULTS, ...(was?.config ?? {}) };
      const sha = (hex: string): string => `${hex.slice(0, 12)}…`;
      // The feature layer: the one named now (or the default) against the one recorded; compared between transfer
      // runs only (a change of --init-from is reported by itself).
      const sameLayer = (t: ModelCard['training']): boolean =>
        options.featureLayer === undefined ? (t.defaultFeatureLayer ?? (t.featureLayer === undefined)) : options.featureLayer === t.featureLayer;
      const changed = was === undefined ? [] : [
        ...(was.epochs !== config.epochs ? [`${was.epochs} epoch${was.epochs === 1 ? '' : 's'} (now ${config.epochs})`] : []),
        ...(JSON.stringify(was.augment ?? false) !== JSON.stringify(augment) ? [`augmentation ${JSON.stringify(was.augment ?? false)} (now ${JSON.stringify(augment)})`] : []),
        ...((was.balanceGroups ?? undefined) !== balanceLabel
          ? [`group balancing ${quote(was.balanceGroups ?? 'none')} (now ${quote(balanceLabel ?? 'none')})`]
          : was.balanceGroupsSha256 !== undefined && balanceSha256 !== undefined && was.balanceGroupsSha256 !== balanceSha256
            ? [`group balancing ${quote(balanceLabel ?? 'none')} from a CSV with SHA-256 ${sha(was.balanceGroupsSha256)} (now ${sha(balanceSha256)})`]
            : []),
        // Recipe settings outside the hash (kept out of it so that earlier runs still resume), where they act.
        ...(config.schedule === 'plateau' && wasConfig.plateauPatience !== config.plateauPatience ? [`plateauPatience ${quote(wasConfig.plateauPatience)} (now ${quote(config.plateauPatience)})`] : []),
        ...(balanceLabel !== undefined && was.balanceGroups !== undefined && wasConfig.maxSampleWeight !== config.maxSampleWeight
          ? [`maxSampleWeight ${quote(wasConfig.maxSampleWeight)} (now ${quote(config.maxSampleWeight)})`]
          : []),
        // A transfer run: the checkpoint holds its network, and the card must keep saying where it came from.
        ...(sameSource(was.initFrom ?? null, options.initFrom ?? null) ? [] : [`--init-from ${quote(was.initFrom ? shownSource(was.initFrom) : 'none')} (now ${quote(options.initFrom ? shownSource(options.initFrom) : 'none')})`]),
        ...((was.freeze ?? false) !== (options.initFrom ? options.freeze ?? false : false) ? [`--freeze ${was.freeze ?? false} (now ${options.freeze ?? false})`] : []),
        ...((was.unfreeze ?? false) !== (options.initFrom ? options.unfreeze ?? false : false) ? [`--unfreeze ${was.unfreeze ?? false} (now ${options.unfreeze ?? false})`] : []),
        ...(JSON.stringify(rangeOrDefault(was.initRange) ?? null) !== JSON.stringify(options.initFrom ? initRange ?? null : null) ? [`--init-range ${JSON.stringify(rangeOrDefault(was.initRange) ?? null)} (now ${JSON.stringify(initRange ?? null)})`] : []),
        ...(was.initFrom && options.initFrom && !sameLayer(was) ? [`--feature-layer ${quote(was.featureLayer ?? 'default')} (now ${quote(options.featureLayer ?? 'default')})`] : []),
      ];
      if (changed.length > 0) {
        throw new ConfigError(
          `cannot resume ${quote(runDir)}: it was started with ${changed.join(', ')}; a resume continues the same run: ` +
            'give the settings it was started with, or train into another --out',
          { path: runDir },
        );
      }
      const decodedAs = last?.data.decoding;
      if (decodedAs !== undefined && decodedAs !== CACHE_VERSION) {
        throw new ConfigError(
          `cannot resume ${quote(runDir)}: its images were decoded by decoding version ${decodedAs}, and this pneumotype decodes ` +
            `them as version ${CACHE_VERSION} (see CACHE_VERSION in lib/cache.ts): train into another --out, or remove ${quote(runDir)} to start over`,
          { path: runDir },
        );
      }
      const trainedOn = last?.data.manifestSha256;
      if (trainedOn !== undefined && trainedOn !== prepared.index.manifestSha256) {
        throw new ConfigError(
          `cannot resume ${quote(runDir)}: it was trained on other data (manifest SHA-256 ${trainedOn.slice(0, 12)}…, ${quote(options.data)} has ` +
            `${prepared.index.manifestSha256.slice(0, 12)}…): train into another --out, or remove ${quote(runDir)} to start over`,
          { path: runDir },
        );
      }
      if (was?.initFrom) {
        featureRecord = {
          ...(was.featureLayer !== undefined ? { featureLayer: was.featureLayer } : {}),
          ...(was.defaultFeatureLayer !== undefined ? { defaultFeatureLayer: was.defaultFeatureLayer } : {}),
        };
      }
      model = await loadLayersModelFromDir(ckptLast);
      await loadOptimizerState(ckptLast, optimizer, model);
    } else if (options.initFrom) {
      model = await buildTransferModel({
        from: options.initFrom,
        imageSize: config.imageSize,
        dropout: config.dropout,
        l2: config.weightDecay, // on the new head
        seed: config.seed,
        freeze: options.freeze ?? false,
        ...(options.unfreeze ? { unfreeze: true } : {}),
        ...(initRange ? { inputRange: initRange } : {}),
        ...(options.featureLayer !== undefined ? { featureLayer: options.featureLayer } : {}),
        // Recorded in the card whether named or not: a resume naming the default layer is the same run.
        onFeatureLayer: ({ name, isDefault }) => {
          featureRecord = { featureLayer: name, defaultFeatureLayer: isDefault };
        },
      });
    } else {
      model = buildModel(modelOptions);
    }
    // The moving average of the weights (validated and saved as the best model), restored with the last checkpoint.
    if (config.emaDecay > 0) {
      average = options.resume && state.epochsDone > 0
        ? await WeightAverage.restore(ckptLast, model, { decay: config.emaDecay })
        : await WeightAverage.create(model, { decay: config.emaDecay });
    }
    const scored = average?.model ?? model;
    // Frozen batch norms (a frozen pretrained trunk) keep their moving statistics, as in Keras.
    undoHold = holdFrozenBatchNorms(model);
    // The step as one TensorFlow graph where the backend and the model allow it (lib/graph-train.ts); otherwise
    // fast-train's fused native ops (layers and Adam) on tfjs-node (a no-op elsewhere); undone in finally.
    let engine = 'tfjs ops';
    if (config.graphOps) {
      const plan = planGraphTraining(model);
      const why = info.backend !== 'tensorflow' ? `the backend is ${info.backend}` : plan.reason;
      if (why === undefined) {
        try {
          // libtensorflow's session deadlocked once (in a CI run, before the fix of a thread race): a session call
          // blocked past stallSeconds ends the process with a message saying how to resume (lib/watchdog.ts).
          if (config.stallSeconds > 0) {
            watchdog = StallWatchdog.start({
              seconds: config.stallSeconds,
              // A GPU newer than libtensorflow's build compiles its kernels at the first steps, for many minutes.
              firstSeconds: info.package === '@tensorflow/tfjs-node-gpu' ? Math.max(config.stallSeconds, 3600) : config.stallSeconds,
              what: 'a TensorFlow graph call (a training step of lib/graph-train.ts)',
              hint: `The last checkpoint is in ${quote(ckptLast)}: run the same training again with --resume (and --eager to train op by op).`,
              reportFile: join(runDir, 'stalled.txt'),
            });
          }
          graph = await GraphTrainer.create({ model, optimizer, classWeights: weights, labelSmoothing: config.labelSmoothing, seed: config.seed, ...(average ? { average } : {}), ...(watchdog ? { watchdog } : {}) });
          engine = 'one TensorFlow graph per step (lib/graph-train.ts)';
        } catch (err) {
          // An older or other libtensorflow may refuse the graph: train op by op instead, and say why in the card.
          if (!(err instanceof BackendError)) throw err;
          await watchdog?.stop();
          watchdog = undefined;
          engine = `tfjs ops (no graph: ${err.message})`;
        }
      } else {
        engine = `tfjs ops (no graph: ${why})`;
      }
    }
    if (!graph && config.fastOps) {
      undoFastTraining = enableFastTraining(model, { optimizer });
      if (info.backend === 'tensorflow') engine = `${engine}, fused native ops (lib/fast-train.ts)`;
    }
    const summary = { ...summarizeModel(model, modelOptions), ...(options.initFrom ? { name: 'transfer' as const } : {}) };
    const variables = trainableVariables(model);
    const classWeightTensor = tf.tensor1d(weights);
    if (saved !== undefined) {
      // Say what the resume found (the CLI says when there was nothing to resume; run and the notebooks always resume).
      const complete = state.epochsDone >= config.epochs || state.sinceBest >= config.patience;
      const early = complete && state.epochsDone < config.epochs ? ', stopped early' : '';
      const message = complete
        ? `${quote(runDir)} is already complete (${state.epochsDone} of ${config.epochs} epochs${early}): nothing left to train`
        : `resuming ${quote(runDir)} after epoch ${state.epochsDone} of ${config.epochs}`;
      options.onProgress?.({ stage: 'train', unit: 'batches', done: 0, message });
    }
    const tracker = new ProgressTracker({ stage: 'train', unit: 'batches', total: (config.epochs - state.epochsDone) * stepsPerEpoch, onProgress: options.onProgress });
    // A resume keeps the run's configuration, its learning rate included: the way on is a new run with a lower rate.
    const diverged = (epoch: number, what: string): TrainingError =>
      new TrainingError(
        `training diverged in epoch ${epoch + 1} (${what}); ` +
          (epoch > 0 ? `the last good checkpoint (epoch ${epoch}) is kept in ${quote(ckptLast)}` : 'no epoch had finished, so there is no checkpoint') +
          `: start a new run in another output folder with a lower learning rate (now ${config.learningRate})`,
        { path: epoch > 0 ? ckptLast : runDir },
      );
    let epochsThisCall = 0;
    // A resumed run that had already stopped early (killed before its model was written) trains no further.
    let stoppedEarly = state.sinceBest >= config.patience;

    try {
      for (let epoch = state.epochsDone; !stoppedEarly && epoch < config.epochs; epoch++) {
        if (options.signal?.aborted) break;
        const started = performance.now();
        let lossSum: Tensor = tf.scalar(0);
        let correctSum: Tensor = tf.scalar(0);
        let seen = 0;
        let lr = 0;
        let interrupted = false;
        try {
          for await (const batch of batches(cache, { subset: 'train', batchSize: config.batchSize, seed: config.seed, epoch, augment, mixup: config.mixup, shuffle: true, workers: augmentThreads(config.augmentWorkers, availableParallelism()) })) {
            // A turn of the event loop before each batch (microseconds): without it an epoch fed from memory lets no
            // signal handler (a notebook's stop button aborting `signal`), timer or notebook display run until it ends.
            await new Promise<void>((resolve) => setImmediate(resolve));
            if (options.signal?.aborted) {
              // Stop between batches: the unfinished epoch is dropped; the last checkpoint is where --resume continues.
              tf.dispose([batch.xs, batch.ys]);
              interrupted = true;
              break;
            }
            try {
              lr = learningRateAt(config, state.globalStep, stepsPerEpoch, state.plateauScale);
              setLearningRate(optimizer, lr);
              // One step: weighted, label-smoothed cross-entropy plus the layers' L2 penalties (fast-train: exported step).
              const sw = sampleWeightOf ? tf.tensor1d(batch.indices.map((i) => (sampleWeightOf as Float32Array)[i] ?? 0)) : undefined;
              let out: { loss: Scalar; correct: Scalar };
              try {
                out = graph
                  ? graph.step(batch.xs, batch.ys, state.globalStep + 1, sw)
                  : trainStep({
                    model, optimizer, variables, xs: batch.xs, ys: batch.ys, classWeights: classWeightTensor, labelSmoothing: config.labelSmoothing,
                    dropoutSeed: stepSeed(config.seed, state.globalStep), ...(sw ? { sampleWeights: sw } : {}),
                  });
              } finally {
                sw?.dispose();
              }
              const { loss, correct: c } = out;
              const [nextLoss, nextCorrect] = tf.tidy(() => [lossSum.add(loss.mul(batch.labels.length)), correctSum.add(c)]);
              tf.dispose([lossSum, correctSum, loss, c]);
              lossSum = nextLoss;
              correctSum = nextCorrect;
              seen += batch.labels.length;
              state = { ...state, globalStep: state.globalStep + 1 };
              if (!graph) average?.update(model, state.globalStep);
              tracker.add(1);
              if (state.globalStep % 20 === 0) {
                const running = (await lossSum.data())[0] ?? Number.NaN;
                if (!Number.isFinite(running)) throw diverged(epoch, `the training loss became ${running} at step ${state.globalStep}, learning rate ${lr}`);
              }
            } finally {
              tf.dispose([batch.xs, batch.ys]);
            }
          }
        } catch (err) {
          // A diverged loss or a failed batch: the running sums go too (a long-lived process keeps no stray tensors).
          tf.dispose([lossSum, correctSum]);
          throw err;
        }
        if (interrupted) {
          tf.dispose([lossSum, correctSum]);
          break;
        }
        const [lossValue, correctValue] = [(await lossSum.data())[0] ?? Number.NaN, (await correctSum.data())[0] ?? 0];
        tf.dispose([lossSum, correctSum]);
        const trainSeconds = (performance.now() - started) / 1000;
        if (!Number.isFinite(lossValue)) throw diverged(epoch, `the training loss became ${lossValue}`);

        // The graph's state back into the model, the optimizer and the average; then validation on the patient-grouped subset.
        graph?.sync();
        // Fewer steps so far than the average's interval: nothing folded in yet, so the trained weights stand in for it
        // (in the graph's own copy of the average too, which its first fold starts from).
        if (average?.standInUntilFirstFold(model) === true) graph?.reload();
        const val = valCount > 0 ? await predictSubset(scored, cache, 'val', config.batchSize * 2) : undefined;
        if (val?.probs.some((p) => p.some((x) => !Number.isFinite(x)))) throw diverged(epoch, 'the model outputs became NaN');
        const report: EvaluationReport | undefined = val
          ? evaluatePredictions(val.probs.map((p, i) => ({ probs: p, trueIndex: val.trueIndex[i] ?? 0, patientId: val.patientIds[i] ?? '' })), { bootstrap: 0 })
          : undefined;
        const macroF1 = report?.macroF1.value ?? -lossValue / seen;
        // That epoch trained again as before ties the adopted checkpoint: the best, as in the run that was not killed.
        const improved = macroF1 > state.bestMetric || (epoch + 1 === adoptedBest && macroF1 >= state.bestMetric);
        const record: EpochRecord = {
          epoch: epoch + 1,
          learningRate: lr,
          loss: lossValue / seen,
          accuracy: correctValue / seen,
          valLoss: val?.loss ?? Number.NaN,
          valAccuracy: report?.accuracy.value ?? Number.NaN,
          valMacroF1: report?.macroF1.value ?? Number.NaN,
          valBalancedAccuracy: report?.balancedAccuracy.value ?? Number.NaN,
          seconds: (performance.now() - started) / 1000,
          imagesPerSecond: seen / trainSeconds,
          best: improved,
        };
        const sinceBest = improved ? 0 : state.sinceBest + 1;
        const plateauScale = config.schedule === 'plateau' && !improved && sinceBest % config.plateauPatience === 0 ? state.plateauScale / 2 : state.plateauScale;
        state = {
          ...state,
          epochsDone: epoch + 1,
          bestMetric: improved ? macroF1 : state.bestMetric,
          bestEpoch: improved ? epoch + 1 : state.bestEpoch,
          sinceBest,
          plateauScale,
          seconds: state.seconds + record.seconds,
          history: [...state.history, record],
        };
        const card = (): ModelCard => ({
          format: 'pneumotype-model',
          version: 1,
          classes: CLASSES,
          imageSize: config.imageSize,
          preprocessing: { grayscale: true, resize: 'fill', kernel: 'lanczos3', scale: '1/255', channels: 1 },
          model: { ...modelOptions, summary },
          training: {
            config, epoch: epoch + 1, epochs: config.epochs, seconds: state.seconds, backend: `${info.package} (${info.backend})`, augment, initFrom: options.initFrom ? shownSource(options.initFrom) : null,
            ...(options.initFrom ? { freeze: options.freeze ?? false } : {}),
            ...(options.initFrom && initRange ? { initRange } : {}),
            ...(options.initFrom && options.unfreeze ? { unfreeze: true } : {}),
            ...(options.initFrom ? featureRecord : {}),
            weights: average ? `moving average (decay ${config.emaDecay} per step, ${average.count} updates)` : 'last step',
            engine,
            ...(balanceLabel !== undefined ? { balanceGroups: balanceLabel } : {}),
            ...(balanceSha256 !== undefined ? { balanceGroupsSha256: balanceSha256 } : {}),
          },
          data: { labeledDir: options.data, manifestSha256: prepared.index.manifestSha256, trainImages: trainCount, valImages: valCount, decoding: CACHE_VERSION },
          validation: { accuracy: record.valAccuracy, macroF1: record.valMacroF1, balancedAccuracy: record.valBalancedAccuracy, loss: record.valLoss },
          createdAt: new Date().toISOString(),
        });
        // The best checkpoint carries the thumbnails of the training images too (made once): a model published from it
        // (SageMaker after a stop) knows its training images as the run's model/ does.
        if (improved) {
          await saveModel({ dir: ckptBest, model: scored, extra: { [CARD_FILE]: card() }, extraBinary: { [TRAINING_THUMBNAILS_FILE]: await thumbnailsOnce() } });
        }
        await saveModel({
          dir: ckptLast, model, optimizer, extra: { [STATE_FILE]: state, [CARD_FILE]: card() },
          ...(average ? { extraBinary: await average.encode() } : {}),
        });
        await writeJsonAtomic(join(runDir, 'history.json'), state.history);
        options.onEpoch?.(record);
        epochsThisCall++;
        if (state.sinceBest >= config.patience) {
          stoppedEarly = true;
          break;
        }
        if (options.stopAfterEpochs !== undefined && epochsThisCall >= options.stopAfterEpochs) break;
      }
    } finally {
      classWeightTensor.dispose();
    }
    // Stopped early: the epochs not trained are no longer to do, so the bar ends full, not stuck part way with an ETA.
    if (stoppedEarly) tracker.setTotal(tracker.done);
    tracker.finish();

    // The best checkpoint becomes the run's model.
    const modelDir = join(runDir, 'model');
    if (!(await exists(join(ckptBest, CARD_FILE)))) {
      throw new TrainingError(`training of ${quote(runDir)} stopped before its first epoch ended: there is no model yet (run it again with --resume)`, { path: runDir });
    }
    // history.json again: a run killed between its last checkpoint and its history resumes with no epoch to train.
    await writeJsonAtomic(join(runDir, 'history.json'), state.history);
    const card = await readCard(join(ckptBest, CARD_FILE));
    // Nothing trained in this call and model/ is already the best epoch's (calibrated, perhaps): it stays as it is.
    const current = epochsThisCall === 0 ? await readCard(join(modelDir, CARD_FILE)).catch(() => undefined) : undefined; // damaged or absent: written anew
    if (current && current.training.epoch === card.training.epoch && current.data.manifestSha256 === card.data.manifestSha256) {
      return { runDir, modelDir, history: state.history, bestEpoch: state.bestEpoch, stoppedEarly, card: current };
    }
    const best = await loadLayersModelFromDir(ckptBest);
    try {
      // With the thumbnails of the training images, by which evaluate tells when it is shown one of them.
      await saveModel({ dir: modelDir, model: best, extra: { [CARD_FILE]: card }, extraBinary: { [TRAINING_THUMBNAILS_FILE]: await thumbnailsOnce() } });
    } finally {
      best.dispose();
    }
    return { runDir, modelDir, history: state.history, bestEpoch: state.bestEpoch, stoppedEarly, card };
  } finally {
    undoFastTraining?.(); // fast-train
    undoHold?.();
    graph?.dispose();
    await watchdog?.stop();
    average?.dispose();
    model?.dispose();
    disposeOptimizer(optimizer);
    await cache.close();
  }
}
