// Temperature scaling (Guo et al. 2017): one temperature fitted on validation predictions, folded into the softmax layer.
//
// A network trained with class weights and label smoothing is often over- or underconfident: its top probability is
// not the share of right answers. Dividing the logits by one temperature T fixes much of that without changing any
// prediction (the largest logit stays the largest). T is fitted to minimise the log loss on a held-out split, then
// folded into the output layer's weights (softmax(z / T) = softmax((W / T) x + b / T)), so the saved model gives the
// calibrated probabilities everywhere: predict, evaluate, serve and browsers, with no code of ours.
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { LayersModel } from '@tensorflow/tfjs';
import { checkReplaceable, MODEL_JSON, saveModel, WEIGHTS_BIN } from './checkpoint.js';
import type { EvaluationSplit } from './config.js';
import { ConfigError, messageOf, quote } from './errors.js';
import { loadModel, predictSplit } from './evaluate.js';
import type { FailedImage } from './images.js';
import { evaluatePredictions, validatePredictions, type Prediction } from './metrics.js';
import type { ProgressCallback } from './progress.js';
import { withLock } from './lock.js';
import { loadTf } from './tf.js';
import { CARD_FILE, type ModelCard } from './train.js';

/** The files of a model folder that saving writes. */
const MODEL_FILES = new Set([MODEL_JSON, WEIGHTS_BIN, CARD_FILE]);

/** The search range of {@link fitTemperature}. */
export const TEMPERATURE_RANGE = [0.05, 20] as const;

/** log softmax(log(p) * inverse): the log-probabilities of `probs` tempered by T = 1 / `inverse`. */
function temperedLogProbs(probs: readonly number[], inverse: number): number[] {
  const logs = probs.map((p) => Math.log(Math.max(p, 1e-30)) * inverse);
  const top = Math.max(...logs);
  const lse = top + Math.log(logs.reduce((a, l) => a + Math.exp(l - top), 0));
  return logs.map((l) => l - lse);
}

/** Probabilities re-tempered: softmax(log(p) / T), the same as dividing the logits by T. Pure. */
export function temperatureScaled(probs: readonly number[], temperature: number): number[] {
  if (!(Number.isFinite(temperature) && temperature > 0)) {
    throw new ConfigError(`temperature ${quote(temperature)} is not valid: expected a positive number`);
  }
  return temperedLogProbs(probs, 1 / temperature).map(Math.exp);
}

/** Mean negative log-likelihood of the true classes after tempering by 1 / `inverse`. */
function meanLogLoss(preds: readonly Prediction[], inverse: number): number {
  return preds.reduce((sum, p) => sum - (temperedLogProbs(p.probs, inverse)[p.trueIndex] ?? 0), 0) / preds.length;
}

/**
 * The temperature that minimises the mean log loss of `preds` (golden-section search over 1 / T, in which the loss is
 * convex), within {@link TEMPERATURE_RANGE}. T > 1 softens overconfident probabilities, T < 1 sharpens timid ones.
 *
 * @example fitTemperature(preds) // 1.6
 */
export function fitTemperature(preds: readonly Prediction[]): number {
  if (preds.length === 0) throw new ConfigError('no predictions to fit a temperature on: expected at least one');
  validatePredictions(preds); // a NaN probability or a bad class index would otherwise end at an edge of the range
  let lo = 1 / TEMPERATURE_RANGE[1];
  let hi = 1 / TEMPERATURE_RANGE[0];
  const phi = (Math.sqrt(5) - 1) / 2;
  let a = hi - phi * (hi - lo);
  let b = lo + phi * (hi - lo);
  let fa = meanLogLoss(preds, a);
  let fb = meanLogLoss(preds, b);
  while (hi - lo > 1e-7) {
    if (fa <= fb) {
      hi = b;
      b = a;
      fb = fa;
      a = hi - phi * (hi - lo);
      fa = meanLogLoss(preds, a);
    } else {
      lo = a;
      a = b;
      fa = fb;
      b = lo + phi * (hi - lo);
      fb = meanLogLoss(preds, b);
    }
  }
  return 1 / ((lo + hi) / 2);
}

/**
 * Divides the weights of `model`'s softmax output layer by `temperature`, in place: the model's probabilities become
 * softmax(logits / T), its predictions stay the same.
 *
 * @example foldTemperature(model, 1.6)
 */
export function foldTemperature(model: LayersModel, temperature: number): void {
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new ConfigError(`temperature ${quote(temperature)} is not valid: expected a positive number`);
  const layer = model.outputs[0]?.sourceLayer;
  const activation = (layer as unknown as { activation?: { getClassName?: () => string } } | undefined)?.activation?.getClassName?.();
  if (!layer || layer.getClassName() !== 'Dense' || activation !== 'softmax') {
    throw new ConfigError(`the model's output layer ${quote(layer?.name ?? null)} is not a softmax Dense layer: a temperature cannot be folded into it`);
  }
  const tf = loadTf();
  for (const w of layer.weights) {
    const scaled = tf.tidy(() => tf.div(w.read(), temperature));
    w.write(scaled);
    scaled.dispose();
  }
}

/** Calibration figures before and after tempering, on the fitting split and cross-fitted. */
export interface CalibrationFigures {
  readonly ece: number;
  readonly brier: number;
  readonly logLoss: number;
}

/** What {@link calibrateModel} did, also recorded in the card (`calibration`). */
export interface CalibrationRecord {
  /** The temperature folded into the weights as trained (the product, if a model was calibrated twice). */
  readonly temperature: number;
  readonly split: EvaluationSplit;
  readonly images: number;
  /** On the fitting images, before tempering. */
  readonly before: CalibrationFigures;
  /** On the fitting images, after: optimistic, since T was fitted on them. */
  readonly after: CalibrationFigures;
  /**
   * Two-fold cross-fitted by patient (T fitted on one half of the patients, measured on the other, pooled): an
   * estimate for images the temperature was not fitted on. NaN (JSON null) when the split holds a single patient.
   */
  readonly crossFitted: CalibrationFigures;
}

/** What {@link calibrateModel} returns: the record, where the model went, and what the CLI warns about. */
export interface CalibrationResult extends CalibrationRecord {
  readonly out: string;
  /** Images of the split that could not be read, left out of the fit (as evaluate's `failed`). */
  readonly failed: readonly FailedImage[];
  /** What may make the fit or the folder misleading: a split carved from other data, a model card left stale. */
  readonly warnings: readonly string[];
}

export interface CalibrateOptions {
  /** The model folder to calibrate. */
  readonly model: string;
  /** Labelled data (manifest.csv), as for evaluate. */
  readonly data: string;
  /** The split to fit on: the patient-grouped validation split (default). Never the test split you report. */
  readonly split?: EvaluationSplit;
  /** Where to write the calibrated model (default: the model folder itself, rewritten atomically). */
  readonly out?: string;
  readonly concurrency?: number;
  readonly onProgress?: ProgressCallback;
  /** Hold `OUT.lock` while working (default true); SageMaker passes false, as it does to `train`. */
  readonly lock?: boolean;
}

function figures(preds: readonly Prediction[]): CalibrationFigures {
  const c = evaluatePredictions(preds, { bootstrap: 0 }).calibration;
  return { ece: c.ece.value, brier: c.brier.value, logLoss: c.logLoss.value };
}

function tempered(preds: readonly Prediction[], temperature: number): Prediction[] {
  return preds.map((p) => ({ ...p, probs: temperatureScaled(p.probs, temperature) }));
}

/**
 * The calibration figures of two-fold cross-fitting by patient: each half of the patients tempered with the temperature
 * fitted on the other half, then pooled. NaN for a single patient, where there is no other half to fit on.
 *
 * @example crossFittedFigures(preds).ece // the calibration error to expect on images the temperature was not fitted on
 */
export function crossFittedFigures(preds: readonly Prediction[]): CalibrationFigures {
  // An image without a patient id is a patient of its own (as the bootstrap takes it), known by its file or position.
  const key = (p: Prediction, i: number): string => (p.patientId === '' ? `\u0000image:${p.file ?? i}` : p.patientId);
  const ids = [...new Set(preds.map(key))].sort();
  const fold = new Map(ids.map((id, i) => [id, i % 2]));
  const halves = [0, 1].map((f) => preds.filter((p, i) => fold.get(key(p, i)) === f));
  if (halves.some((h) => h.length === 0)) return { ece: NaN, brier: NaN, logLoss: NaN };
  return figures(halves.flatMap((half, f) => tempered(half, fitTemperature(halves[1 - f] as Prediction[]))));
}

/**
 * Fits a temperature on a model's predictions for a held-out split (the validation patients by default), folds it
 * into the model's output layer and saves the model with its card's `calibration` record. Predictions do not change;
 * the probabilities become honest where the model was over- or underconfident. While it works it holds `OUT.lock`
 * beside the output folder: a second calibration of the same folder (which would fold a second temperature on top)
 * gets a BusyError.
 *
 * @example const r = await calibrateModel({ model: 'runs/gpu/model', data: 'data/labeled' }); r.temperature
 */
export async function calibrateModel(options: CalibrateOptions): Promise<CalibrationResult> {
  const out = options.out ?? options.model;
  if (options.lock === false) return calibrateUnlocked(options, out);
  return withLock(`${resolve(out)}.lock`, `calibrating into ${quote(resolve(out))}`, () => calibrateUnlocked(options, out));
}

async function calibrateUnlocked(options: CalibrateOptions, out: string): Promise<CalibrationResult> {
  const split = options.split ?? 'val';
  await checkReplaceable(out); // before any image is scored
  const loaded = await loadModel(options.model);
  try {
    // The folder is written anew: other files go along (read now, before any image is scored: a broken link is named
    // first), a subfolder (or a link to one) would be lost in place.
    const others: Record<string, Buffer> = {};
    const folders: string[] = [];
    for (const e of await readdir(options.model, { withFileTypes: true })) {
      if (MODEL_FILES.has(e.name)) continue;
      const path = join(options.model, e.name);
      const target = await stat(path).catch((err: unknown) => {
        throw new ConfigError(`${quote(path)} cannot be read (${messageOf(err)}): a broken link? Remove or repair it`, { path, cause: err });
      });
      if (target.isDirectory()) folders.push(e.name);
      else if (target.isFile()) others[e.name] = await readFile(path);
    }
    const [outReal, modelReal] = await Promise.all([realpath(out).catch(() => resolve(out)), realpath(options.model)]);
    if (outReal === modelReal && folders.length > 0) {
      throw new ConfigError(
        `${quote(options.model)} holds ${folders.map((f) => quote(f)).join(', ')}, which calibrating in place would drop (the folder is written anew): ` +
          'give --out another folder, or move them out',
        { path: options.model },
      );
    }
    if (outReal !== modelReal) {
      // Another model folder is replaced whole: what it holds beyond the files written into it would be lost.
      const dropped = (await readdir(out).catch(() => [] as string[])).filter((name) => !MODEL_FILES.has(name) && others[name] === undefined);
      if (dropped.length > 0) {
        throw new ConfigError(
          `${quote(out)} holds ${dropped.sort().map((f) => quote(f)).join(', ')}, which replacing it would drop (the folder is written anew): ` +
            'give --out another folder, or move them out',
          { path: out },
        );
      }
    }
    const { preds, failed, warnings } = await predictSplit(loaded, {
      data: options.data, split, stage: 'calibrate',
      ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    const temperature = fitTemperature(preds);
    const previous = loaded.card.calibration;
    const record: CalibrationRecord = {
      temperature: temperature * (previous?.temperature ?? 1),
      split,
      images: preds.length,
      before: figures(preds),
      after: figures(tempered(preds, temperature)),
      crossFitted: crossFittedFigures(preds),
    };
    foldTemperature(loaded.model, temperature);
    if (others['README.md'] !== undefined) {
      warnings.push(`${quote(join(out, 'README.md'))} (the model card) was copied as it was: its figures predate this calibration (temperature ${record.temperature.toFixed(3)}); write it again (scripts/ship-model.ts)`);
    }
    // A saved evaluation (models/default ships one) is of the weights before: the report refuses it, so say so here.
    const stale = ['evaluation.json', 'predictions.csv'].filter((name) => others[name] !== undefined);
    if (stale.length > 0) {
      warnings.push(`${stale.map((name) => quote(join(out, name))).join(' and ')} (the saved evaluation) ${stale.length > 1 ? 'were' : 'was'} copied as ${stale.length > 1 ? 'they were' : 'it was'}: ` +
        `of the weights before this calibration; evaluate again (pneumotype evaluate --model ${out} --data ${options.data} --split val --out ${join(out, 'evaluation.json')} ` +
        `--predictions ${join(out, 'predictions.csv')}, with --groups as before; for models/default: npx tsx scripts/ship-model.ts --card-only)`);
    }
    await saveModel({ dir: out, model: loaded.model, extra: { [CARD_FILE]: { ...loaded.card, calibration: record } satisfies ModelCard }, extraBinary: others });
    return { ...record, out, failed, warnings };
  } finally {
    loaded.dispose();
  }
}
