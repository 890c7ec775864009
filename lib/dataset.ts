// Batches from the prepared cache: seeded per-epoch order, bounded memory, optional augmentation, tf.data adapter.
import type { Tensor2D, Tensor4D, TensorContainer, data } from '@tensorflow/tfjs';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { augmentBatch, checkAugment, isIdentityAugment, type AugmentOptions, type CheckedAugment } from './augment.js';
import type { AugmentJob } from './augment-worker.js';
import { checkMixup, mixBatch } from './mixup.js';
import type { OpenedCache, Subset } from './cache.js';
import { CLASSES, DEFAULTS } from './config.js';
import { AugmentError, ConfigError, checkInteger, quote } from './errors.js';
import { createRng, shuffled } from './random.js';
import { loadTf } from './tf.js';

/** Options of {@link batches}, {@link batchPlan} and {@link toTfDataset}. */
export interface BatchOptions {
  subset: Subset;
  /** Images per batch (DEFAULTS.batchSize). */
  batchSize?: number;
  /** Shuffle the subset each epoch (default: true for 'train', false for 'val' and 'test'). */
  shuffle?: boolean;
  /** With `epoch`, fixes the order and the augmentation: the order of epoch e is a shuffle seeded by seed + e. */
  seed?: number;
  epoch?: number;
  /** Random changes per image (default DEFAULTS.augment: none). */
  augment?: AugmentOptions | false;
  /**
   * Mixup's alpha (default 0: off; training takes DEFAULTS.mixup): each image and its label row are blended with
   * another of the same batch (lib/mixup.ts), after augmentation; labels then are soft (each row still sums to 1, its
   * own class the largest part).
   */
  mixup?: number;
  /** Leave out the last, smaller batch (default false). */
  dropRemainder?: boolean;
  /**
   * {@link batches} only: augment in this many worker threads, a few batches ahead, while the consumer trains
   * (default 0: in the calling thread, one batch at a time). The batches are the same either way. The threads end
   * with the iteration (when it finishes, breaks or throws).
   */
  workers?: number;
}

/** One batch. The consumer owns `xs` and `ys` and must dispose them (tf.dispose([b.xs, b.ys])). */
export interface Batch {
  /** [b, size, size, 1] float32, pixel / 255 in [0, 1]. */
  readonly xs: Tensor4D;
  /** [b, 3] float32 one-hot, columns in CLASSES order. */
  readonly ys: Tensor2D;
  /** Files (relative to the labelled folder) of the batch's images, in row order. */
  readonly files: string[];
  /** Indices into `cache.index.images`. */
  readonly indices: number[];
  /** Label indices (CLASSES) of the rows. */
  readonly labels: number[];
}

interface Plan {
  batches: number[][];
  augment: ReturnType<typeof checkAugment> | undefined;
  mixup: number;
  seed: number;
  epoch: number;
}

function plan(cache: OpenedCache, options: BatchOptions): Plan {
  const { subset } = options;
  if (subset !== 'train' && subset !== 'val' && subset !== 'test') {
    throw new ConfigError(`subset ${quote(subset)} is not valid: expected "train", "val" or "test"`);
  }
  const batchSize = options.batchSize ?? DEFAULTS.batchSize;
  checkInteger('batchSize', batchSize, 1);
  const seed = options.seed ?? DEFAULTS.seed;
  const epoch = options.epoch ?? 0;
  if (!Number.isInteger(seed)) throw new ConfigError(`seed ${quote(seed)} is not valid: expected an integer`);
  checkInteger('epoch', epoch, 0);
  const augmentOption = options.augment ?? DEFAULTS.augment;
  const checked = augmentOption === false ? undefined : checkAugment(augmentOption);
  const augment = checked && !isIdentityAugment(checked) ? checked : undefined;
  const base = cache.indices(subset);
  const order = (options.shuffle ?? subset === 'train') ? shuffled(base, createRng(seed + epoch)) : [...base];
  const out: number[][] = [];
  for (let start = 0; start < order.length; start += batchSize) {
    const rows = order.slice(start, start + batchSize);
    if (rows.length < batchSize && options.dropRemainder) break;
    out.push(rows);
  }
  return { batches: out, augment, mixup: checkMixup(options.mixup ?? 0), seed, epoch };
}

/**
 * The batches of one epoch as lists of indices into `cache.index.images`, without reading any pixel: pure planning,
 * the same for the same seed and epoch.
 *
 * @example batchPlan(cache, { subset: 'train', batchSize: 32, epoch: 3 }).length // batches in an epoch
 */
export function batchPlan(cache: OpenedCache, options: BatchOptions): number[][] {
  return plan(cache, options).batches;
}

/** A seed for the augmentation of one batch, so a batch is the same whether or not earlier batches were read. */
function batchSeed(seed: number, epoch: number, batch: number): number {
  return (Math.imul((seed + epoch) | 0, 0x9e3779b1) ^ Math.imul(batch + 1, 0x85ebca6b)) >>> 0;
}

/**
 * The batches of one epoch, read synchronously from the cache one batch at a time (memory: one batch). Each yielded
 * batch's tensors belong to the caller, who must dispose them; nothing else is left allocated between batches.
 *
 * @example for (const b of batchIterator(cache, { subset: 'val', batchSize: 64 })) { use(b); tf.dispose([b.xs, b.ys]) }
 */
export function* batchIterator(cache: OpenedCache, options: BatchOptions): Generator<Batch, void, undefined> {
  yield* planned(cache, plan(cache, options));
}

/** The batches of a plan, read and augmented in the calling thread. */
function* planned(cache: OpenedCache, p: Plan): Generator<Batch, void, undefined> {
  for (const [n, rows] of p.batches.entries()) {
    const x = readPixels(cache, rows);
    if (p.augment) augmentBatch(x, cache.imageSize, p.augment, batchSeed(p.seed, p.epoch, n));
    yield toBatch(cache, rows, x, p, n);
  }
}

/** The pixels of `rows` as floats in [0, 1], one image after another. */
function readPixels(cache: OpenedCache, rows: readonly number[]): Float32Array {
  const pixels = cache.imageSize * cache.imageSize;
  const raw = new Uint8Array(rows.length * pixels);
  rows.forEach((i, k) => cache.readInto(i, raw, k * pixels));
  const x = new Float32Array(raw.length);
  for (let j = 0; j < x.length; j++) x[j] = (raw[j] as number) / 255;
  return x;
}

/** The tensors and bookkeeping of batch `n` of the plan, from its (augmented) pixels; mixed up if the plan says so. */
function toBatch(cache: OpenedCache, rows: number[], x: Float32Array, p: Plan, n: number): Batch {
  const tf = loadTf();
  const size = cache.imageSize;
  const { images } = cache.index;
  const b = rows.length;
  const y = new Float32Array(b * CLASSES.length);
  const labels = rows.map((i) => images[i]?.labelIndex ?? -1);
  labels.forEach((l, k) => {
    if (l >= 0) y[k * CLASSES.length + l] = 1;
  });
  if (p.mixup > 0) mixBatch(x, y, { count: b, classes: CLASSES.length, alpha: p.mixup, seed: batchSeed(p.seed, p.epoch, n) ^ 0x6d697875 });
  const xs = tf.tensor4d(x, [b, size, size, 1], 'float32');
  const ys = tf.tensor2d(y, [b, CLASSES.length], 'float32');
  return { xs, ys, files: rows.map((i) => images[i]?.file ?? ''), indices: rows, labels };
}

/** The worker module next to this one (.ts when run from source through tsx, .js when built). */
const WORKER_URL = new URL(`./augment-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url);

/**
 * A worker running {@link WORKER_URL}. From TypeScript source (tests, `tsx` scripts) it first registers tsx's loader
 * in the worker, which does not inherit the loader hooks of its parent's `--import tsx`.
 */
function startWorker(): Worker {
  if (!WORKER_URL.pathname.endsWith('.ts')) return new Worker(WORKER_URL);
  const api = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(WORKER_URL.href)}); });`;
  return new Worker(code, { eval: true });
}

/**
 * Worker threads that augment batches; results come back in any order, matched by id. A worker that fails, sends
 * what cannot be read or stops while batches are due rejects them all with an AugmentError. Exported for its tests
 * (`start` makes a worker); training uses it through {@link batches}.
 */
export class AugmentPool {
  private readonly workers: Worker[];
  private readonly pending = new Map<number, { resolve: (x: Float32Array) => void; reject: (e: Error) => void }>();
  private next = 0;
  private failure: Error | undefined;
  private closing = false;

  constructor(count: number, start: () => Worker = startWorker) {
    this.workers = Array.from({ length: count }, () => {
      const w = start();
      w.on('message', (m: { id: number; x?: Float32Array; error?: string }) => {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.x) p?.resolve(m.x);
        else p?.reject(new AugmentError(`augmenting a batch failed in a worker thread: ${m.error ?? 'no result'}`));
      });
      w.on('error', (err) => this.fail(new AugmentError(`an augmentation worker thread failed: ${err.message}`, { cause: err })));
      w.on('messageerror', (err) => this.fail(new AugmentError(`an augmentation worker thread sent a batch that cannot be read: ${err.message}`, { cause: err })));
      // An exit without 'error' (killed, out of memory) would leave its batches waiting forever.
      w.on('exit', (code) => {
        if (!this.closing) this.fail(new AugmentError(`an augmentation worker thread stopped (exit code ${code}) with batches still to make`));
      });
      return w;
    });
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  run(x: Float32Array, size: number, options: CheckedAugment, seed: number): Promise<Float32Array> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.next++;
    const job: AugmentJob = { id, x, size, options, seed };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      (this.workers[id % this.workers.length] as Worker).postMessage(job, [x.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/**
 * How many augmentation threads training actually starts: the configured `augmentWorkers`, but at most one fewer
 * than the machine's cores (and at least 1), so that a preset written for a many-core GPU instance does not starve
 * TensorFlow's own threads on a laptop. The batches do not depend on it.
 *
 * @example augmentThreads(3, 2) // 1
 * @example augmentThreads(3, 8) // 3
 * @example augmentThreads(0, 8) // 0 (augment in the training thread)
 */
export function augmentThreads(configured: number, cores: number): number {
  return configured <= 0 ? 0 : Math.max(1, Math.min(configured, cores - 1));
}

/**
 * The batches of one epoch as an async iterable: `[b, size, size, 1]` float32 images in [0, 1] and `[b, 3]` one-hot
 * labels. Shuffled by default for 'train' with a seed of `seed + epoch`; reads only the rows of the current batch.
 * **The consumer owns the yielded tensors and must dispose them**; stopping early leaks nothing.
 *
 * @example
 * for await (const { xs, ys } of batches(cache, { subset: 'train', batchSize: 32, epoch })) {
 *   try { await model.trainOnBatch(xs, ys) } finally { tf.dispose([xs, ys]) }
 * }
 */
export async function* batches(cache: OpenedCache, options: BatchOptions): AsyncGenerator<Batch, void, undefined> {
  const workers = options.workers ?? 0;
  checkInteger('workers', workers, 0);
  const p = plan(cache, options);
  const augment = p.augment;
  if (!augment || workers === 0) {
    yield* planned(cache, p);
    return;
  }
  // Augmented in worker threads, up to workers + 1 batches ahead of the consumer, yielded in order.
  const pool = new AugmentPool(workers);
  const ahead: Array<Promise<Float32Array>> = [];
  let submitted = 0;
  const submit = (): void => {
    const rows = p.batches[submitted];
    if (!rows) return;
    const job = pool.run(readPixels(cache, rows), cache.imageSize, augment, batchSeed(p.seed, p.epoch, submitted));
    job.catch(() => undefined); // awaited in order below; a batch never awaited (early stop) must not go unhandled
    ahead.push(job);
    submitted++;
  };
  try {
    for (let n = 0; n < p.batches.length; n++) {
      while (submitted < p.batches.length && ahead.length < workers + 1) submit();
      const x = await (ahead.shift() as Promise<Float32Array>);
      yield toBatch(cache, p.batches[n] as number[], x, p, n);
    }
  } finally {
    await pool.close();
  }
}

/**
 * The same batches as a tf.data.Dataset of `{ xs, ys }`, ready for `model.fitDataset` (which disposes each batch).
 * Every new iteration of the dataset (each fitDataset epoch) advances the epoch, so the order reshuffles:
 * the k-th iteration uses epoch `(options.epoch ?? 0) + k`.
 *
 * @example await model.fitDataset(toTfDataset(cache, { subset: 'train', batchSize: 32 }), { epochs: 10 })
 */
export function toTfDataset(cache: OpenedCache, options: BatchOptions): data.Dataset<{ xs: Tensor4D; ys: Tensor2D }> {
  const tf = loadTf();
  plan(cache, options); // fail now on bad options, not on the first iteration
  let iteration = 0;
  const epoch0 = options.epoch ?? 0;
  return tf.data.generator(function* (): Generator<{ xs: Tensor4D; ys: Tensor2D } & TensorContainer, void, undefined> {
    const epoch = epoch0 + iteration++;
    for (const b of batchIterator(cache, { ...options, epoch })) yield { xs: b.xs, ys: b.ys };
  });
}
