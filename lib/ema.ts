// An exponential moving average of a model's weights while it trains: the averaged copy is what validation scores.
//
// Small-batch training with batch normalisation makes the weights of any single step noisy (the validation accuracy
// of this project's runs swung by 5-30 points from epoch to epoch); averaging them over the last few hundred steps
// gives a steadier and usually better model (Polyak averaging, as timm's ModelEma and Keras's use_ema do). The average
// covers every weight, the batch-norm moving statistics included, and lives in a second model of the same topology.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LayersModel, Tensor, io } from '@tensorflow/tfjs';
import { arrayBufferOf, modelArtifacts } from './checkpoint.js';
import { CacheError, ConfigError, messageOf, quote } from './errors.js';
import { exists } from './fsx.js';
import { loadTf } from './tf.js';

/** Files of the average inside a checkpoint folder (next to the raw model), for --resume. */
export const EMA_JSON = 'ema.json';
export const EMA_BIN = 'ema.bin';

export interface WeightAverageOptions {
  /** Per-step decay (0.998: a time constant of about 500 steps); 0 turns the average off. */
  readonly decay: number;
  /** Fold the weights in every this many steps (the decay is raised to this power): fewer native ops. Default 4. */
  readonly every?: number;
}

/** The state a checkpoint keeps: how many updates were folded in, and the averaged weights. */
interface SavedAverage {
  readonly updates: number;
  readonly decay: number;
  readonly specs: io.WeightsManifestEntry[];
}

/**
 * The moving average of a training model's weights. `update` after each optimizer step; `model` is the averaged model
 * to validate and save; `dispose` when done.
 *
 * @example
 * const ema = await WeightAverage.create(model, { decay: 0.998 });
 * // after every step: ema.update(model, step)
 * const probs = ema.model.predict(xsVal) // validate (and save) the average, not the raw weights
 */
export class WeightAverage {
  private updates: number;

  private constructor(
    /** The averaged model (same topology and weight order as the training model). */
    readonly model: LayersModel,
    readonly decay: number,
    readonly every: number,
    updates: number,
  ) {
    this.updates = updates;
  }

  /** A copy of `model` to average into (its current weights are the starting point). */
  static async create(model: LayersModel, options: WeightAverageOptions): Promise<WeightAverage> {
    const { decay } = options;
    const every = options.every ?? 4;
    if (!(decay > 0 && decay < 1)) throw new ConfigError(`emaDecay ${quote(decay)} is not between 0 and 1 (0 turns the average off)`);
    if (!Number.isInteger(every) || every < 1) throw new ConfigError(`the weight average's interval ${quote(every)} is not a positive integer`);
    return new WeightAverage(await cloneModel(model), decay, every, 0);
  }

  /** How many times weights were folded in. */
  get count(): number {
    return this.updates;
  }

  /**
   * Until the first fold, the average is the model it started from (the random start of a fresh run): `model`'s
   * weights stand in for it then, so that a run of fewer steps than `every` validates and saves what it trained. No
   * effect once anything was folded in.
   *
   * True when it stood in: a trainer that keeps its own copy of the average (lib/graph-train.ts) must take it up
   * (`reload`), or its first fold would blend in the random start after all.
   *
   * @example graph?.sync(); if (average.standInUntilFirstFold(model)) graph?.reload() // before validating average.model
   */
  standInUntilFirstFold(model: LayersModel): boolean {
    if (this.updates !== 0) return false;
    this.blend(model, 0);
    return true;
  }

  /**
   * Folds `model`'s weights into the average when `step` (1-based, counted by the caller) is a multiple of `every`.
   * The decay is warmed up as min(decay, (1 + n) / (10 + n)) so that the first steps do not pin the average to the
   * random start.
   */
  update(model: LayersModel, step: number): void {
    const d = this.foldDecay(step);
    if (d !== 1) this.blend(model, d);
  }

  /** The average becomes d * itself + (1 - d) * `model`'s weights (with d 0: a copy of them). */
  private blend(model: LayersModel, d: number): void {
    const tf = loadTf();
    const source = model.weights;
    const target = this.model.weights;
    if (source.length !== target.length) {
      throw new ConfigError(`the weight average holds ${target.length} weights, the model ${source.length}: not the same topology`);
    }
    tf.tidy(() => {
      for (let i = 0; i < source.length; i++) {
        const from = (source[i] as (typeof source)[number]).read();
        const into = target[i] as (typeof target)[number];
        into.write(d === 0 ? tf.clone(from) : tf.add(tf.mul(into.read(), d), tf.mul(from, 1 - d)));
      }
    });
  }

  /**
   * The decay with which step `step` folds the weights in (1: not this step), counting the fold: what `update` uses,
   * exposed for trainers that keep the average elsewhere (lib/graph-train.ts).
   */
  foldDecay(step: number): number {
    if (step % this.every !== 0) return 1;
    const d = Math.min(this.decay ** this.every, (1 + this.updates) / (10 + this.updates));
    this.updates++;
    return d;
  }

  /** The files a checkpoint folder keeps for {@link WeightAverage.restore}. */
  async encode(): Promise<Record<string, Uint8Array>> {
    const tf = loadTf();
    const named = this.model.weights.map((w, i) => ({ name: `${i}:${w.originalName}`, tensor: w.read() as Tensor }));
    const encoded = await tf.io.encodeWeights(named);
    const data = tf.io.concatenateArrayBuffers(Array.isArray(encoded.data) ? encoded.data : [encoded.data]);
    const saved: SavedAverage = { updates: this.updates, decay: this.decay, specs: encoded.specs };
    return { [EMA_JSON]: new TextEncoder().encode(`${JSON.stringify(saved)}\n`), [EMA_BIN]: new Uint8Array(data) };
  }

  /**
   * The average saved in checkpoint folder `dir` by {@link WeightAverage.encode}, on a copy of `model`; a fresh one
   * (starting from `model`'s weights) when the folder holds none. A damaged average (ema.json garbled, ema.bin missing
   * or cut short, weights that do not fit `model`) is a CacheError naming the file; the copy is freed then.
   */
  static async restore(dir: string, model: LayersModel, options: WeightAverageOptions): Promise<WeightAverage> {
    const average = await WeightAverage.create(model, options);
    try {
      const path = join(dir, EMA_JSON);
      if (!(await exists(path))) return average;
      const binPath = join(dir, EMA_BIN);
      const damaged = (file: string) => (err: unknown): never => {
        throw new CacheError(`the weight average ${quote(file)} cannot be read (${messageOf(err)})`, { path: file, cause: err });
      };
      const saved = await readFile(path, 'utf8').then((text) => checkSaved(JSON.parse(text))).catch(damaged(path));
      const bin = await readFile(binPath).catch(damaged(binPath));
      const tf = loadTf();
      let map: ReturnType<typeof tf.io.decodeWeights> = {};
      try {
        // In a tidy: the weights decoded before one that fails are freed with it.
        map = tf.tidy(() => tf.io.decodeWeights(arrayBufferOf(bin), saved.specs));
      } catch (err) {
        damaged(binPath)(err);
      }
      try {
        const target = average.model.weights;
        if (saved.specs.length !== target.length) {
          throw new CacheError(`the weight average in ${quote(path)} holds ${saved.specs.length} weights, the model ${target.length}: it belongs to another network`, { path });
        }
        saved.specs.forEach((spec, i) => {
          const into = target[i] as (typeof target)[number];
          try {
            into.write(map[spec.name] as Tensor);
          } catch (err) {
            throw new CacheError(`the weight average ${quote(binPath)} does not fit the model: its weight ${quote(spec.name)} (${messageOf(err)})`, { path: binPath, cause: err });
          }
        });
      } finally {
        tf.dispose(Object.values(map));
      }
      average.updates = saved.updates;
      return average;
    } catch (err) {
      average.dispose();
      throw err;
    }
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** The content of ema.json, checked for the fields restore reads. */
function checkSaved(value: unknown): SavedAverage {
  const saved = value as Partial<SavedAverage> | null;
  if (typeof saved !== 'object' || saved === null || !Array.isArray(saved.specs)) throw new Error('it holds no list of weights ("specs")');
  if (typeof saved.updates !== 'number' || !Number.isInteger(saved.updates) || saved.updates < 0) {
    throw new Error(`its count of updates ${quote(saved.updates)} is not a whole number of at least 0`);
  }
  return saved as SavedAverage;
}

/** A new model with `model`'s topology and a copy of its weights. */
async function cloneModel(model: LayersModel): Promise<LayersModel> {
  const artifacts = await modelArtifacts(model);
  if (!artifacts) throw new ConfigError('the model could not be copied for the weight average');
  const tf = loadTf();
  return tf.loadLayersModel(tf.io.fromMemory(artifacts));
}
