// Every default in one place: a flat, commented configuration, the named presets and the known dataset sources.

import { ConfigError, quote } from './errors.js';

/** The three classes, in the order used by every tensor, CSV and model output. */
export const CLASSES = ['normal', 'bacteria', 'virus'] as const;
export type Label = (typeof CLASSES)[number];

/** The official splits of the archive (Kaggle's copy adds a tiny `val/`, reported separately). */
export const SPLITS = ['train', 'test'] as const;
export type Split = (typeof SPLITS)[number] | 'val';
/** The split `evaluate` and `calibrate` score: the official test split, or the validation patients carved from train. */
export type EvaluationSplit = 'test' | 'val';
/** Images (or patients) per class, and their total. */
export type ClassCounts = Record<Label | 'total', number>;
/** Every split a labelled folder may hold: the official two, and `val` where Kaggle's copy has one. */
export const SPLIT_NAMES: readonly Split[] = [...SPLITS, 'val'];

/** A dataset archive that can be fetched by name. */
export interface KnownSource {
  readonly name: string;
  readonly url: string;
  /** File name the archive is saved as. */
  readonly fileName: string;
  /** Approximate size, for the documentation only (progress and the free-space check use the length the server gives). */
  readonly approxBytes: number;
  /** Prefix of the chest X-ray entries inside the archive (v3 also holds OCT scans, never extracted). */
  readonly chestPrefix: string;
  readonly description: string;
}

/** Mendeley Data releases of Kermany, Zhang & Goldbaum (2018), CC BY 4.0. URLs as in the original narrative. */
export const SOURCES: Readonly<Record<'v2' | 'v3', KnownSource>> = {
  v2: {
    name: 'v2',
    url: 'https://data.mendeley.com/datasets/rscbjbr9sj/2/files/f12eaf6d-6023-432f-acc9-80c9d7393433/ChestXRay2017.zip?dl=1',
    fileName: 'ChestXRay2017.zip',
    approxBytes: 1_235_000_000,
    chestPrefix: 'chest_xray/',
    description: 'Mendeley Data v2, ChestXRay2017.zip (1.15 GB): chest X-rays only, doi:10.17632/rscbjbr9sj.2',
  },
  v3: {
    name: 'v3',
    url: 'https://data.mendeley.com/datasets/rscbjbr9sj/3/files/810b2ce2-11c3-4424-996e-3bef36600907/ZhangLabData.zip?dl=1',
    fileName: 'ZhangLabData.zip',
    approxBytes: 8_480_000_000,
    chestPrefix: 'CellData/chest_xray/',
    description: 'Mendeley Data v3, ZhangLabData.zip (7.9 GB): OCT and chest X-rays, doi:10.17632/rscbjbr9sj.3',
  },
};

/** The flat configuration. Every option of every step has its default here; presets override a few. */
export const DEFAULTS = {
  // --- where things go (relative to the working directory unless absolute)
  dataDir: 'data',
  downloadsDir: 'data/downloads',
  extractedDir: 'data/extracted',
  labeledDir: 'data/labeled',
  cacheDir: 'data/cache',

  // --- fetch
  source: 'v2', // v2 | v3 | URL | local path; PNEUMOTYPE_SOURCE overrides
  fetchRetries: 5, // transient failures (network errors, 5xx, 429) retried with exponential backoff
  fetchBackoffMs: 1000, // first backoff; doubles each retry, with jitter
  fetchTimeoutMs: 60_000, // no bytes for this long counts as a transient failure
  progressIntervalMs: 250, // at most one progress callback per interval (plus the final one)

  // --- extract (zip bombs and hostile archives)
  maxArchiveEntries: 200_000, // more entries than this in one archive: refused
  maxExtractBytes: 20 * 1024 ** 3, // sum of declared uncompressed sizes of the selected entries: refused above
  maxDownloadBytes: 20 * 1024 ** 3, // a download longer than this (declared, or as it arrives without a length): refused
  maxEntryBytes: 1024 ** 3, // one entry larger than this (declared or actual): refused
  maxCompressionRatio: 1000, // uncompressed / compressed above this for a large entry: refused

  // --- images and the prepared cache
  imageSize: 224, // model input, square; images are squashed to it (sharp fit: 'fill'), as the shared data were
  maxInputPixels: 40_000_000, // decompression-bomb guard (sharp limitInputPixels); the largest originals are ~7 Mpx
  maxInputBytes: 64 * 1024 ** 2, // larger image files are refused before decoding
  minInputSide: 16, // an image narrower or lower than this is refused: no chest X-ray (an icon, a tracking pixel)
  prepareConcurrency: 2, // images decoded at once (sharp also uses its own thread pool)

  // --- validation split and batching
  seed: 42,
  valFraction: 0.1, // share of train patients carved out for validation, stratified by label
  batchSize: 32,
  shuffleBuffer: 0, // not read: every epoch shuffles the whole index (it is only file offsets); kept so that saved cards and configurations naming it stay valid
  augment: false, // not read: the augmentation is train's `augment` option (the CLI's --augment, default traces), which the card records as training.augment; kept so that saved cards and configurations naming it stay valid
  augmentWorkers: 1, // training: threads that augment the next batches while the current one trains (0: none; at most cores - 1)

  // --- model and training (see lib/models.ts for the architectures)
  model: 'resnet', // resnet | mobile | tiny
  modelWidth: 0, // base channels; 0 = the architecture's default
  modelDepth: '', // resnet: basic blocks per stage, e.g. '3,4,6,3' (ResNet-34-like); '' = the default '2,2,2,2' (ResNet-18-like)
  antialias: false, // resnet: blur before each later subsampling (lib/models.ts), against high-frequency copy traces
  standardize: false, // the model standardises each image over its own pixels first (lib/models.ts), against intensity traces
  epochs: 30,
  optimizer: 'adam', // adam | sgd (momentum 0.9, Nesterov)
  learningRate: 1e-3, // peak rate, reached after the warm-up
  minLearningRate: 1e-5, // floor of the cosine decay
  warmupEpochs: 1, // linear warm-up from minLearningRate
  schedule: 'cosine', // cosine | plateau (halve after `plateauPatience` epochs without a better validation macro-F1)
  plateauPatience: 3,
  weightDecay: 1e-4, // L2 on convolution and dense kernels
  labelSmoothing: 0.05,
  mixup: 0, // mixup's alpha (lib/mixup.ts): blend image pairs and their labels, e.g. 0.2; 0: off
  classWeights: 'balanced', // balanced (N / (K * n_class)) | none: the train split is 1,349 : 2,538 : 1,345
  maxSampleWeight: 10, // with train --balance-groups: cap on an image's weight, relative to the mean
  patience: 8, // early stopping: epochs without a better validation macro-F1
  dropout: 0.2,
  emaDecay: 0.998, // validate and ship a moving average of the weights (per step; about 500 steps); 0: the raw weights
  // On tfjs-node, run each training step as one TensorFlow graph (lib/graph-train.ts): the same math, 2x the speed.
  // Its session once deadlocked in CI (inside ResourceApplyAdam; most likely the thread race fixed in graph-train.ts,
  // see the README): stallSeconds still ends a blocked session call's process with a resume hint (lib/watchdog.ts); 0: off.
  graphOps: true,
  stallSeconds: 300,
  fastOps: true, // otherwise, on tfjs-node, train with fused native ops (BN, ReLU, conv, max pool, Adam: lib/fast-train.ts); same results

  // --- upload to S3
  uploadConcurrency: 4, // files uploaded at once
  uploadPartSize: 8 * 1024 ** 2, // larger files go multipart; at most concurrency x 2 parts are buffered
  uploadPrefix: '', // key prefix in the bucket ('' = the bucket's root)
  uploadConnectTimeoutMs: 10_000, // an S3 endpoint that does not accept the connection by then: that attempt fails
  uploadRequestTimeoutMs: 120_000, // a request silent this long (a server that accepts and never answers) fails

  // --- serve (POST /invocations, SageMaker's container contract)
  servePort: 8080,
  serveHost: '0.0.0.0',
  serveMaxBodyBytes: 8 * 1024 ** 2, // larger bodies get 413 before they are read (SageMaker caps real-time bodies at 6 MB)
  serveMaxBatch: 16, // images predicted in one batch at most
  serveMaxInFlight: 32, // invocations handled at once; more get 503 busy with Retry-After (each holds up to serveMaxBodyBytes)
  serveMaxDecoding: 16, // images decoded at once (each holds its full-size pixels while decoding; as many as a batch); the rest wait
  serveBatchWindowMs: 5, // how long the first image of a batch waits for others
  serveDrainTimeoutMs: 25_000, // on close, in-flight requests get this long before their connections are cut (SageMaker kills at 30 s)
  serveRequestTimeoutMs: 60_000, // a body not fully arrived by then is cut (SageMaker allows 60 s per invocation)
} as const;

export type Config = { -readonly [K in keyof typeof DEFAULTS]: (typeof DEFAULTS)[K] extends string
  ? string
  : (typeof DEFAULTS)[K] extends number
    ? number
    : (typeof DEFAULTS)[K] extends boolean
      ? boolean
      : (typeof DEFAULTS)[K] };

/**
 * Named presets: `smoke` for tests and notebook runs in CI, `cpu` for a laptop (a quick run, minutes), `gpu` for a
 * machine that can afford the shipped model's whole recipe (run 22 of docs/experiments.md). Their models
 * (test/models.test.ts asserts these, and that `gpu` is what models/default/pneumotype.json was trained with):
 * - smoke: tiny CNN, width 8, 32 px: 24,939 parameters, 1.9 MFLOPs per image
 * - cpu: ResNet, width 16, 128 px: 703,315 parameters, 76 MFLOPs per image; Adam, 30 epochs, early stopping after 8
 * - gpu: the same ResNet at 128 px, SGD with Nesterov momentum at peak rate 0.1, L2 5e-4, all 60 epochs. A larger
 *   input or a wider network did not do better here (runs 5, 6, 8, 21 and 24 of docs/experiments.md): more pixels
 *   and more capacity went into the copy pipelines' traces, not the lungs.
 */
export const PRESETS: Readonly<Record<'smoke' | 'cpu' | 'gpu', Partial<Config>>> = {
  // smoke trains op by op (graphOps false): CI runs it in many short processes; the graph has tests of its own.
  smoke: { imageSize: 32, batchSize: 8, valFraction: 0.2, model: 'tiny', epochs: 2, warmupEpochs: 0, patience: 2, emaDecay: 0, graphOps: false },
  cpu: { imageSize: 128, batchSize: 32, model: 'resnet', modelWidth: 16, epochs: 30 },
  gpu: {
    imageSize: 128, batchSize: 32, prepareConcurrency: 4, augmentWorkers: 3, model: 'resnet', modelWidth: 16, epochs: 60,
    optimizer: 'sgd', learningRate: 0.1, minLearningRate: 1e-4, weightDecay: 5e-4, patience: 60,
  },
};
export type PresetName = keyof typeof PRESETS;

/**
 * The fields of a configuration that decide what a model learns (not where files go, nor how fast it gets there):
 * two runs with equal recipes on the same data train the same model, up to floating-point order.
 */
export const RECIPE_KEYS = [
  'imageSize', 'batchSize', 'model', 'modelWidth', 'modelDepth', 'antialias', 'standardize', 'epochs', 'optimizer', 'learningRate', 'minLearningRate', 'warmupEpochs',
  'schedule', 'plateauPatience', 'weightDecay', 'labelSmoothing', 'mixup', 'classWeights', 'patience', 'dropout', 'emaDecay',
  'seed', 'valFraction', 'graphOps',
] as const satisfies ReadonlyArray<keyof Config>;

/**
 * The preset whose recipe ({@link RECIPE_KEYS}) a configuration has, if any: how a model card says which
 * `--preset` trains its model again.
 *
 * @example presetMatching(resolveConfig('gpu', { augmentWorkers: 1 })) // 'gpu'
 * @example presetMatching(resolveConfig('gpu', { epochs: 10 })) // undefined
 */
export function presetMatching(config: Readonly<Partial<Config>>): PresetName | undefined {
  return (Object.keys(PRESETS) as PresetName[]).find((p) => {
    const preset = resolveConfig(p);
    // A key absent from a configuration recorded before it existed has its default, the behaviour of that time.
    return RECIPE_KEYS.every((k) => (config[k] ?? DEFAULTS[k]) === preset[k]);
  });
}

/**
 * The preset a name (a flag, PNEUMOTYPE_PRESET) stands for: `tiny` is smoke's other name; undefined for none or an
 * empty name, the name itself (unchecked) otherwise.
 *
 * @example presetAlias('tiny') // 'smoke'
 */
export function presetAlias(name: string | undefined): string | undefined {
  return name === undefined || name === '' ? undefined : name === 'tiny' ? 'smoke' : name;
}

/**
 * The preset a name stands for (`tiny` is smoke's), checked: an unknown name is a ConfigError that names where it
 * came from (`where`: "preset", or the variable it was read from), never the bare defaults in silence.
 *
 * @example presetNamed('tiny') // 'smoke'
 * @example presetNamed('bogus', 'PNEUMOTYPE_PRESET') // throws: PNEUMOTYPE_PRESET="bogus" is not one of smoke (or tiny), cpu, gpu: …
 */
export function presetNamed(name: string, where = 'preset'): PresetName {
  const p = presetAlias(name) ?? name;
  if (Object.hasOwn(PRESETS, p)) return p as PresetName;
  throw where === 'preset'
    ? new ConfigError(`preset ${quote(name)} is not one of ${KNOWN_PRESETS}`)
    : new ConfigError(`${where}=${quote(name)} is not one of ${KNOWN_PRESETS}: set it to one of them, or unset it`);
}

/** The presets, as messages list them: `smoke (or tiny), cpu, gpu`. */
export const KNOWN_PRESETS = Object.keys(PRESETS).map((n) => (n === 'smoke' ? 'smoke (or tiny)' : n)).join(', ');

/**
 * The configuration of a preset (DEFAULTS when none; `tiny` is smoke), with overrides applied last. An unknown preset
 * name (from JavaScript, or a variable) is a ConfigError, not the defaults.
 *
 * @example resolveConfig('cpu', { epochs: 5 }).imageSize // 128
 */
export function resolveConfig(preset?: PresetName, overrides: Partial<Config> = {}): Config {
  return { ...DEFAULTS, ...(preset ? PRESETS[presetNamed(preset)] : {}), ...overrides };
}
