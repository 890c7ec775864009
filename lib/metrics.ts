// Evaluation metrics of the 3-class classifier: confusion, per-class scores, ROC/AUC, binary views, patient bootstrap.
import { CLASSES, DEFAULTS, type Label } from './config.js';
import { ConfigError, quote } from './errors.js';
import { createRng } from './random.js';

/** Default number of bootstrap resamples of {@link evaluatePredictions}. */
export const DEFAULT_BOOTSTRAP_RESAMPLES = 1000;
/** The most bootstrap resamples {@link evaluatePredictions} takes: each holds every metric (memory), and intervals settle long before. */
export const MAX_BOOTSTRAP_RESAMPLES = 100_000;
/** Default coverage of the bootstrap intervals of {@link evaluatePredictions}. */
export const DEFAULT_CONFIDENCE = 0.95;

/** One model output on one image: the true class index (order of CLASSES) and the predicted probabilities. */
export interface Prediction {
  /** Index of the true class in CLASSES (0 normal, 1 bacteria, 2 virus). */
  readonly trueIndex: number;
  /** One probability per class, in CLASSES order (length 3, summing to about 1; the sum is not checked). */
  readonly probs: readonly number[];
  /** Images with the same id belong to one patient; an empty id makes the image a patient of its own. */
  readonly patientId: string;
  /** The image file, named in error messages. */
  readonly file?: string;
}

/** Scores of one class. Every ratio is 0 (not NaN) when its denominator is 0; see {@link perClassMetrics}. */
export interface ClassMetrics {
  precision: number;
  recall: number;
  f1: number;
  /** Number of images whose true class is this one. */
  support: number;
}

/** Scores of a binary decision. Every ratio is NaN when undefined; see {@link binaryMetrics}. */
export interface BinaryMetrics {
  accuracy: number;
  /** True positive rate: TP / (TP + FN). */
  sensitivity: number;
  /** True negative rate: TN / (TN + FP). */
  specificity: number;
  /** ROC AUC of the scores (threshold-free). */
  auc: number;
  n: number;
}

/**
 * A point estimate with its bootstrap interval. `low`/`high` are NaN (JSON null) when fewer than
 * {@link MIN_DEFINED_SHARE} of the resamples define it (a class of one or two patients: its interval would describe only
 * the resamples that happen to hold it).
 */
export interface Interval {
  value: number;
  low: number;
  high: number;
}

/** Per-class part of an {@link EvaluationReport}. */
export interface ClassReport {
  precision: Interval;
  recall: Interval;
  f1: Interval;
  support: number;
}

/** Binary part of an {@link EvaluationReport}. */
export interface BinaryReport {
  accuracy: Interval;
  sensitivity: Interval;
  specificity: Interval;
  auc: Interval;
  n: number;
}

/** What {@link evaluatePredictions} returns; `pneumotype evaluate` prints it as JSON (NaN prints as null). */
export interface EvaluationReport {
  n: number;
  accuracy: Interval;
  balancedAccuracy: Interval;
  macroF1: Interval;
  perClass: Record<Label, ClassReport>;
  /** Rows: true class, columns: predicted class, both in CLASSES order. */
  confusion: number[][];
  /** One-vs-rest ROC AUC of each class's probability. */
  auc: Record<Label, Interval>;
  binary: {
    /** Positive: pneumonia (bacteria or virus); score 1 - p(normal); predicted positive when argmax is not normal. */
    normalVsPneumonia: BinaryReport;
    /**
     * Among images whose TRUE class is bacteria or virus only. Positive: virus; score p(virus) / (p(bacteria) +
     * p(virus)) (0.5 when both are 0); predicted virus when p(virus) > p(bacteria).
     */
    bacteriaVsVirus: BinaryReport;
  };
  /** How well the top probability matches the share of right answers (see {@link CalibrationReport}). */
  calibration: CalibrationReport;
  /** `minDefinedShare`: the share of resamples that must define a figure for it to get an interval (absent in reports written before it). */
  bootstrap: { resamples: number; seed: number; confidence: number; unit: 'patient'; minDefinedShare?: number };
}

/** One bin of the reliability diagram: images whose top probability lies in [low, high) ([low, 1] for the last). */
export interface CalibrationBin {
  low: number;
  high: number;
  n: number;
  /** Mean top probability of its images (NaN, JSON null, when empty). */
  confidence: number;
  /** Share of its images predicted right (NaN, JSON null, when empty). */
  accuracy: number;
}

/** Calibration part of an {@link EvaluationReport}. */
export interface CalibrationReport {
  /**
   * Expected calibration error (Guo et al. 2017): the images' share-weighted mean of |accuracy − confidence| over
   * CALIBRATION_BINS equal-width bins of the top probability. 0 is perfect.
   */
  ece: Interval;
  /** Multi-class Brier score: the mean over images of Σ_k (p_k − y_k)², from 0 (perfect) to 2. */
  brier: Interval;
  /** Mean negative log of the true class's probability (natural log, probabilities clipped to at least 1e-15). */
  logLoss: Interval;
  bins: CalibrationBin[];
}

/**
 * The calibration of a report, or undefined for one read from an evaluation.json written before calibration was
 * measured.
 *
 * @example calibrationOf(JSON.parse(await readFile('runs/cpu/evaluation.json', 'utf8')))?.ece.value
 */
export function calibrationOf(report: EvaluationReport): CalibrationReport | undefined {
  return (report as { calibration?: CalibrationReport }).calibration;
}

/** Options of {@link evaluatePredictions}. */
export interface EvaluatePredictionsOptions {
  /** Bootstrap resamples (an integer >= 0; 0 skips the bootstrap and leaves every low/high NaN). Default 1000. */
  bootstrap?: number;
  /** Seed of the resampling. Default DEFAULTS.seed (42). */
  seed?: number;
  /** Coverage of the percentile intervals, strictly between 0 and 1. Default 0.95. */
  confidence?: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Validation helpers

/** quote() writes NaN and Infinity as null; numbers read better as themselves. */
function show(value: unknown): string {
  return typeof value === 'number' ? String(value) : quote(value);
}

function checkIndices(name: string, values: readonly number[], k: number): void {
  values.forEach((v, i) => {
    if (!Number.isInteger(v) || v < 0 || v >= k) {
      throw new ConfigError(`${name}[${i}] is ${show(v)}: expected an integer from 0 to ${k - 1}`);
    }
  });
}

function checkSameLength(aName: string, a: readonly unknown[], bName: string, b: readonly unknown[]): void {
  if (a.length !== b.length) {
    throw new ConfigError(`${aName} has ${entries(a.length)} but ${bName} has ${b.length}: expected the same length`);
  }
}

function entries(n: number): string {
  return n === 1 ? '1 entry' : `${n} entries`;
}

function checkScores(scores: readonly number[]): void {
  scores.forEach((s, i) => {
    if (typeof s !== 'number' || !Number.isFinite(s)) {
      throw new ConfigError(`scores[${i}] is ${show(s)}: expected a finite number`);
    }
  });
}

function checkConfusion(confusion: readonly (readonly number[])[]): void {
  const k = confusion.length;
  confusion.forEach((row, i) => {
    if (row.length !== k) {
      throw new ConfigError(`confusion row ${i} has ${entries(row.length)}: expected ${k}, a square matrix`);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Multi-class metrics

/**
 * Index of the largest value; ties go to the LOWEST index (so a tie between normal and a pneumonia class predicts
 * normal).
 *
 * @example argmax([0.4, 0.4, 0.2]) // 0
 */
export function argmax(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if ((values[i] as number) > (values[best] as number)) best = i;
  return best;
}

/**
 * Counts of (true, predicted) pairs: `m[t][p]`, rows true class, columns predicted class.
 *
 * @example confusionMatrix([0, 1, 2, 2], [0, 2, 2, 1]) // [[1,0,0],[0,0,1],[0,1,1]]
 */
export function confusionMatrix(trueIdx: readonly number[], predIdx: readonly number[], k: number = CLASSES.length): number[][] {
  if (!Number.isInteger(k) || k < 1) throw new ConfigError(`k is ${show(k)}: expected an integer of at least 1`);
  checkSameLength('trueIdx', trueIdx, 'predIdx', predIdx);
  checkIndices('trueIdx', trueIdx, k);
  checkIndices('predIdx', predIdx, k);
  const m = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  trueIdx.forEach((t, i) => {
    (m[t] as number[])[predIdx[i] as number]! += 1;
  });
  return m;
}

/** Per-class ratios with NaN where undefined: the bootstrap skips those. */
function rawPerClass(confusion: readonly (readonly number[])[]): Array<{ precision: number; recall: number; f1: number; support: number }> {
  const k = confusion.length;
  const colSums = new Array<number>(k).fill(0);
  for (const row of confusion) row.forEach((v, j) => (colSums[j]! += v));
  return confusion.map((row, c) => {
    const tp = row[c] as number;
    const support = row.reduce((s, v) => s + v, 0);
    const predicted = colSums[c] as number;
    const fn = support - tp;
    const fp = predicted - tp;
    return {
      precision: predicted > 0 ? tp / predicted : NaN,
      recall: support > 0 ? tp / support : NaN,
      // 2TP / (2TP + FP + FN): equals 2PR / (P + R) when both are defined, 0 when TP = 0.
      f1: 2 * tp + fp + fn > 0 ? (2 * tp) / (2 * tp + fp + fn) : NaN,
      support,
    };
  });
}

/**
 * Precision, recall, F1 and support of every class of a confusion matrix (rows true, columns predicted). A ratio whose
 * denominator is 0 is reported as 0, not NaN: precision of a class never predicted, recall of a class with no images,
 * F1 of a class neither present nor predicted (F1 is 2TP / (2TP + FP + FN), hence 0 whenever TP is 0).
 *
 * @example perClassMetrics([[1,0,0],[0,0,1],[0,1,1]])[2] // { precision: 0.5, recall: 0.5, f1: 0.5, support: 2 }
 */
export function perClassMetrics(confusion: number[][]): ClassMetrics[] {
  checkConfusion(confusion);
  const zero = (x: number): number => (Number.isNaN(x) ? 0 : x);
  return rawPerClass(confusion).map((m) => ({
    precision: zero(m.precision),
    recall: zero(m.recall),
    f1: zero(m.f1),
    support: m.support,
  }));
}

/**
 * Share of correct predictions: trace / total. NaN for an empty matrix.
 *
 * @example accuracy([[1,0,0],[0,0,1],[0,1,1]]) // 0.5
 */
export function accuracy(confusion: number[][]): number {
  checkConfusion(confusion);
  let total = 0;
  let correct = 0;
  confusion.forEach((row, i) => {
    for (const v of row) total += v;
    correct += row[i] as number;
  });
  return total > 0 ? correct / total : NaN;
}

/**
 * Mean recall over the classes that have at least one true image (classes without images are left out, as in
 * scikit-learn). NaN for an empty matrix.
 *
 * @example balancedAccuracy([[1,0,0],[0,0,1],[0,1,1]]) // (1 + 0 + 0.5) / 3
 */
export function balancedAccuracy(confusion: number[][]): number {
  checkConfusion(confusion);
  return mean(rawPerClass(confusion).map((m) => m.recall));
}

/**
 * Mean F1 over the classes that are present or predicted at least once (a class absent from both is left out, as
 * scikit-learn's default labels do); a present class with TP = 0 counts with F1 0. NaN for an empty matrix.
 *
 * @example macroF1([[1,0,0],[0,0,1],[0,1,1]]) // (1 + 0 + 0.5) / 3
 */
export function macroF1(confusion: number[][]): number {
  checkConfusion(confusion);
  return mean(rawPerClass(confusion).map((m) => m.f1));
}

/** Mean of the non-NaN values; NaN when there are none. */
function mean(values: readonly number[]): number {
  let sum = 0;
  let n = 0;
  for (const v of values) {
    if (!Number.isNaN(v)) {
      sum += v;
      n++;
    }
  }
  return n > 0 ? sum / n : NaN;
}

// ---------------------------------------------------------------------------------------------------------------
// ROC

/** Items sorted once by ascending score and cut into groups of tied scores, so AUC under any weights is O(n). */
interface Ranking {
  /** Item ids (caller's indices) by ascending score. */
  readonly order: Int32Array;
  /** Whether order[t] is positive. */
  readonly positive: Uint8Array;
  /** Start of each tie group in order, then order.length. */
  readonly groups: Int32Array;
}

function rank(scores: readonly number[], positives: readonly boolean[], ids?: readonly number[]): Ranking {
  const local = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => (scores[a] as number) - (scores[b] as number));
  const order = new Int32Array(local.length);
  const positive = new Uint8Array(local.length);
  const starts: number[] = [];
  local.forEach((j, t) => {
    order[t] = ids ? (ids[j] as number) : j;
    positive[t] = positives[j] ? 1 : 0;
    if (t === 0 || scores[j] !== scores[local[t - 1] as number]) starts.push(t);
  });
  starts.push(local.length);
  return { order, positive, groups: Int32Array.from(starts) };
}

/**
 * Mann-Whitney U / (P N) with each item weighted (by `weights[id]`, 1 when absent): the chance that a random positive
 * scores above a random negative, ties counting 1/2. NaN when either side weighs nothing.
 */
function rankedAuc(r: Ranking, weights?: Float64Array): number {
  let u = 0;
  let negBelow = 0;
  let posTotal = 0;
  const { order, positive, groups } = r;
  for (let g = 0; g + 1 < groups.length; g++) {
    let pos = 0;
    let neg = 0;
    for (let t = groups[g] as number; t < (groups[g + 1] as number); t++) {
      const w = weights ? (weights[order[t] as number] as number) : 1;
      if (positive[t]) pos += w;
      else neg += w;
    }
    u += pos * (negBelow + neg / 2);
    negBelow += neg;
    posTotal += pos;
  }
  return posTotal > 0 && negBelow > 0 ? u / (posTotal * negBelow) : NaN;
}

/**
 * The bacteria-versus-virus score of one prediction: the virus probability's share of the two pneumonia
 * probabilities (0.5 when both are 0). Ranked among true pneumonia images, it gives the bacteria-versus-virus AUC.
 *
 * @example virusShare([0.2, 0.2, 0.6]) // 0.75
 */
export function virusShare(probs: readonly number[]): number {
  const pb = probs[1] as number;
  const pv = probs[2] as number;
  return pb + pv > 0 ? pv / (pb + pv) : 0.5;
}

/**
 * Area under the ROC curve: the Mann-Whitney U statistic over (positives x negatives), a tied positive/negative pair
 * counting 1/2 (exact; one sort, ties grouped, which is the average-rank formula). NaN when only one class is present
 * (or the input is empty).
 *
 * @example rocAuc([0.1, 0.4, 0.35, 0.8], [false, false, true, true]) // 0.75
 */
export function rocAuc(scores: readonly number[], positives: readonly boolean[]): number {
  checkSameLength('scores', scores, 'positives', positives);
  checkScores(scores);
  return rankedAuc(rank(scores, positives));
}

/**
 * ROC curve points for plots. Point i is (fpr, tpr) when predicting positive for `score >= thresholds[i]`;
 * thresholds are the distinct scores in descending order, preceded by Infinity for the starting point (0, 0); the last
 * point, at the lowest score, is (1, 1). With no negatives every fpr is NaN, with no positives every tpr is NaN.
 *
 * @example rocCurve([0.1, 0.8], [false, true]) // { fpr: [0, 0, 1], tpr: [0, 1, 1], thresholds: [Infinity, 0.8, 0.1] }
 */
export function rocCurve(
  scores: readonly number[],
  positives: readonly boolean[],
): { fpr: number[]; tpr: number[]; thresholds: number[] } {
  checkSameLength('scores', scores, 'positives', positives);
  checkScores(scores);
  const r = rank(scores, positives);
  const posTotal = positives.filter(Boolean).length;
  const negTotal = positives.length - posTotal;
  const fpr = [0 / negTotal];
  const tpr = [0 / posTotal];
  const thresholds = [Infinity];
  let tp = 0;
  let fp = 0;
  for (let g = r.groups.length - 2; g >= 0; g--) {
    const start = r.groups[g] as number;
    for (let t = start; t < (r.groups[g + 1] as number); t++) {
      if (r.positive[t]) tp++;
      else fp++;
    }
    fpr.push(fp / negTotal);
    tpr.push(tp / posTotal);
    thresholds.push(scores[r.order[start] as number] as number);
  }
  return { fpr, tpr, thresholds };
}

// ---------------------------------------------------------------------------------------------------------------
// Binary views

/** Accuracy, sensitivity and specificity from counts; NaN where a denominator is 0. */
function fromBinaryCounts(tn: number, fp: number, fn: number, tp: number): Omit<BinaryMetrics, 'auc' | 'n'> {
  const n = tn + fp + fn + tp;
  return {
    accuracy: n > 0 ? (tp + tn) / n : NaN,
    sensitivity: tp + fn > 0 ? tp / (tp + fn) : NaN,
    specificity: tn + fp > 0 ? tn / (tn + fp) : NaN,
  };
}

/**
 * A binary decision at a threshold: positive when `score > threshold` (strictly, so that 0.5 on p(virus) /
 * (p(bacteria) + p(virus)) means p(virus) > p(bacteria)). Ratios are NaN when undefined: sensitivity without
 * positives, specificity without negatives, AUC with one class, accuracy of nothing.
 *
 * @example binaryMetrics([0.2, 0.7, 0.6], [false, true, false]) // accuracy 2/3, sensitivity 1, specificity 0.5, auc 1
 */
export function binaryMetrics(scores: readonly number[], positives: readonly boolean[], threshold = 0.5): BinaryMetrics {
  checkSameLength('scores', scores, 'positives', positives);
  checkScores(scores);
  const c = [0, 0, 0, 0]; // tn, fp, fn, tp
  scores.forEach((s, i) => {
    c[(positives[i] ? 2 : 0) + (s > threshold ? 1 : 0)]! += 1;
  });
  return { ...fromBinaryCounts(c[0]!, c[1]!, c[2]!, c[3]!), auc: rocAuc(scores, positives), n: scores.length };
}

// ---------------------------------------------------------------------------------------------------------------
// Evaluation with a patient bootstrap

const K = CLASSES.length;
/**
 * The share of bootstrap resamples that must define a figure for it to get an interval: below it (a class with one or
 * two patients, absent from many resamples), the skipped resamples would leave an interval that is too narrow.
 */
export const MIN_DEFINED_SHARE = 0.95;
/** Equal-width bins of the top probability for the expected calibration error and the reliability diagram. */
export const CALIBRATION_BINS = 10;
/**
 * Per-patient sum vector: K*K confusion cells (row-major), then bacteria-vs-virus TN, FP, FN, TP, then per
 * calibration bin the images, their summed top probability and their right answers, then the summed Brier score and
 * log loss.
 */
const BVV = K * K;
const CAL = BVV + 4;
const BRIER = CAL + 3 * CALIBRATION_BINS;
const CELLS = BRIER + 2;

/** Every metric of the report, in a fixed order, computed from counts and per-image weights. */
const METRIC_COUNT = 3 + 3 * K + K + 4 + 4 + 3;

interface Prepared {
  /** Ranking per AUC: one-vs-rest per class, then normal vs pneumonia, then bacteria vs virus. */
  readonly rankings: Ranking[];
  /** Per class, whether the data hold any true image of it: a resample without one has no balanced accuracy or macro-F1. */
  readonly present: readonly boolean[];
}

function computeAll(counts: Float64Array, weights: Float64Array | undefined, prep: Prepared, out: Float64Array, col: number, stride: number): void {
  const confusion = Array.from({ length: K }, (_, t) => Array.from({ length: K }, (_, p) => counts[t * K + p] as number));
  let j = 0;
  const put = (v: number): void => {
    out[(j++) * stride + col] = v;
  };
  put(accuracy(confusion));
  const allClasses = prep.present.every((here, t) => !here || confusion[t]!.some((v) => v > 0));
  put(allClasses ? balancedAccuracy(confusion) : NaN);
  put(allClasses ? macroF1(confusion) : NaN);
  for (const m of rawPerClass(confusion)) {
    put(m.precision);
    put(m.recall);
    put(m.f1);
  }
  for (let c = 0; c < K; c++) put(rankedAuc(prep.rankings[c] as Ranking, weights));
  // Normal (0) vs pneumonia (any other class), from the confusion matrix.
  let tn = 0;
  let fp = 0;
  let fn = 0;
  let tp = 0;
  for (let t = 0; t < K; t++) {
    for (let p = 0; p < K; p++) {
      const v = counts[t * K + p] as number;
      if (t === 0 && p === 0) tn += v;
      else if (t === 0) fp += v;
      else if (p === 0) fn += v;
      else tp += v;
    }
  }
  const nvp = fromBinaryCounts(tn, fp, fn, tp);
  put(nvp.accuracy);
  put(nvp.sensitivity);
  put(nvp.specificity);
  put(rankedAuc(prep.rankings[K] as Ranking, weights));
  const bvv = fromBinaryCounts(counts[BVV]!, counts[BVV + 1]!, counts[BVV + 2]!, counts[BVV + 3]!);
  put(bvv.accuracy);
  put(bvv.sensitivity);
  put(bvv.specificity);
  put(rankedAuc(prep.rankings[K + 1] as Ranking, weights));
  let images = 0;
  let gap = 0;
  for (let b = 0; b < CALIBRATION_BINS; b++) {
    const m = counts[CAL + 3 * b]!;
    images += m;
    gap += Math.abs(counts[CAL + 3 * b + 2]! - counts[CAL + 3 * b + 1]!);
  }
  put(images > 0 ? gap / images : NaN);
  put(images > 0 ? counts[BRIER]! / images : NaN);
  put(images > 0 ? counts[BRIER + 1]! / images : NaN);
}

/** The calibration bin of a top probability. */
function calibrationBin(confidence: number): number {
  return Math.min(CALIBRATION_BINS - 1, Math.max(0, Math.floor(confidence * CALIBRATION_BINS)));
}

/** Percentile of sorted values, linear interpolation between order statistics (numpy's default). */
function quantileSorted(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const a = sorted[lo] as number;
  const b = sorted[Math.min(lo + 1, sorted.length - 1)] as number;
  return a + (h - lo) * (b - a);
}

/** Checks predictions as evaluatePredictions takes them: ConfigError naming the first bad one. */
export function validatePredictions(preds: readonly Prediction[]): void {
  if (!Array.isArray(preds) || preds.length === 0) {
    throw new ConfigError('no predictions to evaluate: expected at least one');
  }
  preds.forEach((p, i) => {
    const where = p.file === undefined ? `predictions[${i}]` : `predictions[${i}] (file ${quote(p.file)})`;
    if (!Number.isInteger(p.trueIndex) || p.trueIndex < 0 || p.trueIndex >= K) {
      throw new ConfigError(`${where} has trueIndex ${show(p.trueIndex)}: expected an integer from 0 to ${K - 1}`);
    }
    const probs: readonly number[] = p.probs;
    if (!Array.isArray(probs) || probs.length !== K) {
      const got = Array.isArray(probs) ? `${probs.length} probabilities` : `probs ${show(probs)}`;
      throw new ConfigError(`${where} has ${got}: expected ${K}, one per class (${CLASSES.join(', ')})`);
    }
    probs.forEach((v: number, c: number) => {
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw new ConfigError(`${where} has probability ${show(v)} for ${CLASSES[c]}: expected a finite number`);
      }
    });
    if (typeof p.patientId !== 'string') {
      throw new ConfigError(`${where} has patientId ${show(p.patientId)}: expected a string`);
    }
  });
}

function validateOptions(bootstrap: number, seed: number, confidence: number): void {
  if (!Number.isInteger(bootstrap) || bootstrap < 0 || bootstrap > MAX_BOOTSTRAP_RESAMPLES) {
    throw new ConfigError(`bootstrap ${show(bootstrap)} is not valid: expected an integer from 0 to ${MAX_BOOTSTRAP_RESAMPLES}`);
  }
  // The generator takes the seed modulo 2^32: a fraction or a larger number would repeat another seed's resamples.
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) {
    throw new ConfigError(`seed ${show(seed)} is not valid: expected a whole number from 0 to 4294967295`);
  }
  if (typeof confidence !== 'number' || !(confidence > 0 && confidence < 1)) {
    throw new ConfigError(`confidence ${show(confidence)} is not valid: expected a number between 0 and 1 (exclusive)`);
  }
}

/**
 * Evaluates 3-class predictions: confusion matrix, accuracy, balanced accuracy, macro F1, per-class precision /
 * recall / F1, one-vs-rest AUCs, two binary views and calibration (see {@link EvaluationReport}), each with a
 * percentile bootstrap interval. The bootstrap resamples PATIENTS: images are grouped by patientId, patients are
 * drawn with replacement (as many as there are) and all images of a drawn patient are taken, as many times as it is
 * drawn. Resamples where a metric is undefined (an AUC with one class, the precision of a class never predicted) are
 * skipped for that metric, and a metric that fewer than {@link MIN_DEFINED_SHARE} of the resamples define gets no
 * interval (NaN bounds). Balanced accuracy and macro-F1 are undefined in a resample that lacks one of the classes of
 * the data: averaged over fewer classes they would be another figure.
 * Predicted class: argmax of probs, ties to the lowest index. Point estimates of per-class ratios are 0 when
 * undefined (as {@link perClassMetrics}); every other undefined value is NaN. Deterministic for a seed and
 * independent of the order of the predictions (images without a patientId: when they have a file).
 *
 * @example
 * const report = evaluatePredictions(preds, { bootstrap: 1000, seed: 42 })
 * report.accuracy // { value: 0.91, low: 0.88, high: 0.93 }
 */
export function evaluatePredictions(preds: readonly Prediction[], options: EvaluatePredictionsOptions = {}): EvaluationReport {
  const resamples = options.bootstrap ?? DEFAULT_BOOTSTRAP_RESAMPLES;
  const seed = options.seed ?? DEFAULTS.seed;
  const confidence = options.confidence ?? DEFAULT_CONFIDENCE;
  validateOptions(resamples, seed, confidence);
  validatePredictions(preds);
  const n = preds.length;

  // Patients, sorted by id so that the draws do not depend on the order of the predictions.
  const byId = new Map<string, number[]>();
  preds.forEach((p, i) => {
    // An image without a patient is one of its own, keyed by its file where it has one (as calibrate keys it).
    const id = p.patientId === '' ? `\u0000image:${p.file ?? i}` : p.patientId;
    const list = byId.get(id);
    if (list) list.push(i);
    else byId.set(id, [i]);
  });
  const ids = [...byId.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const patientCount = ids.length;
  const patientOf = new Int32Array(n);
  const patientCounts = new Float64Array(patientCount * CELLS);
  const total = new Float64Array(CELLS);

  // Scores for the AUCs and the per-image counts.
  const classScores = Array.from({ length: K }, () => new Array<number>(n));
  const pneumoniaScore = new Array<number>(n);
  const bvvScores: number[] = [];
  const bvvPositive: boolean[] = [];
  const bvvIds: number[] = [];
  ids.forEach((id, pi) => {
    for (const i of byId.get(id) as number[]) {
      patientOf[i] = pi;
      const { trueIndex: t, probs } = preds[i] as Prediction;
      const pred = argmax(probs);
      patientCounts[pi * CELLS + t * K + pred]! += 1;
      for (let c = 0; c < K; c++) (classScores[c] as number[])[i] = probs[c] as number;
      pneumoniaScore[i] = 1 - (probs[0] as number);
      if (t !== 0) {
        const pb = probs[1] as number;
        const pv = probs[2] as number;
        const virus = t === 2;
        bvvScores.push(virusShare(probs));
        bvvPositive.push(virus);
        bvvIds.push(i);
        patientCounts[pi * CELLS + BVV + (virus ? 2 : 0) + (pv > pb ? 1 : 0)]! += 1;
      }
      const top = probs[pred] as number;
      const bin = pi * CELLS + CAL + 3 * calibrationBin(top);
      patientCounts[bin]! += 1;
      patientCounts[bin + 1]! += top;
      patientCounts[bin + 2]! += pred === t ? 1 : 0;
      patientCounts[pi * CELLS + BRIER]! += probs.reduce((sum, p, c) => sum + (p - (c === t ? 1 : 0)) ** 2, 0);
      patientCounts[pi * CELLS + BRIER + 1]! += -Math.log(Math.max(probs[t] as number, 1e-15));
    }
  });
  for (let pi = 0; pi < patientCount; pi++) for (let j = 0; j < CELLS; j++) total[j]! += patientCounts[pi * CELLS + j]!;

  const trueIdx = preds.map((p) => p.trueIndex);
  const prep: Prepared = {
    rankings: [
      ...classScores.map((s, c) => rank(s, trueIdx.map((t) => t === c))),
      rank(pneumoniaScore, trueIdx.map((t) => t !== 0)),
      rank(bvvScores, bvvPositive, bvvIds),
    ],
    present: CLASSES.map((_, c) => trueIdx.includes(c)),
  };

  const point = new Float64Array(METRIC_COUNT);
  computeAll(total, undefined, prep, point, 0, 1);

  // The bootstrap: samples[metric * resamples + b].
  const samples = new Float64Array(METRIC_COUNT * resamples);
  const rng = createRng(seed);
  const multiplicity = new Float64Array(patientCount);
  const weights = new Float64Array(n);
  const counts = new Float64Array(CELLS);
  for (let b = 0; b < resamples; b++) {
    multiplicity.fill(0);
    for (let d = 0; d < patientCount; d++) multiplicity[Math.floor(rng() * patientCount)]! += 1;
    counts.fill(0);
    for (let pi = 0; pi < patientCount; pi++) {
      const m = multiplicity[pi] as number;
      if (m === 0) continue;
      for (let j = 0; j < CELLS; j++) counts[j]! += m * patientCounts[pi * CELLS + j]!;
    }
    for (let i = 0; i < n; i++) weights[i] = multiplicity[patientOf[i] as number] as number;
    computeAll(counts, weights, prep, samples, b, resamples);
  }

  const alpha = 1 - confidence;
  const interval = (j: number, zeroWhenUndefined = false): Interval => {
    const defined = samples.subarray(j * resamples, (j + 1) * resamples).filter((v) => !Number.isNaN(v)).sort();
    const value = point[j] as number;
    const enough = defined.length >= MIN_DEFINED_SHARE * resamples;
    return {
      value: zeroWhenUndefined && Number.isNaN(value) ? 0 : value,
      low: enough ? quantileSorted(defined, alpha / 2) : NaN,
      high: enough ? quantileSorted(defined, 1 - alpha / 2) : NaN,
    };
  };

  const perClass = {} as Record<Label, ClassReport>;
  const auc = {} as Record<Label, Interval>;
  CLASSES.forEach((label, c) => {
    perClass[label] = {
      precision: interval(3 + 3 * c, true),
      recall: interval(4 + 3 * c, true),
      f1: interval(5 + 3 * c, true),
      support: trueIdx.filter((t) => t === c).length,
    };
    auc[label] = interval(3 + 3 * K + c);
  });
  const binaryAt = (j: number, count: number): BinaryReport => ({
    accuracy: interval(j),
    sensitivity: interval(j + 1),
    specificity: interval(j + 2),
    auc: interval(j + 3),
    n: count,
  });
  const confusion = Array.from({ length: K }, (_, t) => Array.from({ length: K }, (_, p) => total[t * K + p] as number));
  const cal = 3 + 4 * K + 8;
  const bins = Array.from({ length: CALIBRATION_BINS }, (_, b): CalibrationBin => {
    const count = total[CAL + 3 * b]!;
    return {
      low: b / CALIBRATION_BINS,
      high: (b + 1) / CALIBRATION_BINS,
      n: count,
      confidence: count > 0 ? total[CAL + 3 * b + 1]! / count : NaN,
      accuracy: count > 0 ? total[CAL + 3 * b + 2]! / count : NaN,
    };
  });
  return {
    n,
    accuracy: interval(0),
    balancedAccuracy: interval(1),
    macroF1: interval(2),
    perClass,
    confusion,
    auc,
    binary: {
      normalVsPneumonia: binaryAt(3 + 4 * K, n),
      bacteriaVsVirus: binaryAt(3 + 4 * K + 4, bvvIds.length),
    },
    calibration: { ece: interval(cal), brier: interval(cal + 1), logLoss: interval(cal + 2), bins },
    bootstrap: { resamples, seed, confidence, unit: 'patient', minDefinedShare: MIN_DEFINED_SHARE },
  };
}
