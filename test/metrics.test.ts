import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CLASSES } from '../lib/config.js';
import { ConfigError } from '../lib/errors.js';
import {
  accuracy,
  argmax,
  balancedAccuracy,
  binaryMetrics,
  confusionMatrix,
  evaluatePredictions,
  macroF1,
  perClassMetrics,
  rocAuc,
  rocCurve,
  type EvaluationReport,
  type Interval,
  type Prediction,
} from '../lib/metrics.js';
import { createRng, type Rng } from '../lib/random.js';

const F = false;
const T = true;

function close(actual: number, expected: number, what = ''): void {
  assert.ok(Math.abs(actual - expected) < 1e-12, `${what} ${actual} is not ${expected}`);
}

function configError(message: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.message, message);
    return true;
  };
}

/** AUC by brute force over every (positive, negative) pair, ties counting 1/2. */
function pairwiseAuc(scores: readonly number[], positives: readonly boolean[]): number {
  let u = 0;
  let pairs = 0;
  scores.forEach((p, i) => {
    if (!positives[i]) return;
    scores.forEach((q, j) => {
      if (positives[j]) return;
      pairs++;
      u += p > q ? 1 : p === q ? 0.5 : 0;
    });
  });
  return u / pairs;
}

// --- multi-class ----------------------------------------------------------------------------------------------

test('confusion matrix and per-class metrics of a hand-computed case', () => {
  const trueIdx = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2];
  const predIdx = [0, 0, 1, 1, 1, 2, 0, 2, 1, 2];
  const m = confusionMatrix(trueIdx, predIdx);
  assert.deepEqual(m, [
    [2, 1, 0],
    [1, 2, 1],
    [0, 1, 2],
  ]);
  const per = perClassMetrics(m);
  assert.deepEqual(per.map((c) => c.support), [3, 4, 3]);
  close(per[0]!.precision, 2 / 3);
  close(per[0]!.recall, 2 / 3);
  close(per[0]!.f1, 2 / 3);
  assert.equal(per[1]!.precision, 0.5);
  assert.equal(per[1]!.recall, 0.5);
  assert.equal(per[1]!.f1, 0.5);
  close(per[2]!.precision, 2 / 3);
  close(per[2]!.recall, 2 / 3);
  close(per[2]!.f1, 2 / 3);
  assert.equal(accuracy(m), 0.6);
  close(balancedAccuracy(m), 11 / 18);
  close(macroF1(m), 11 / 18);
  assert.deepEqual(confusionMatrix([1, 0], [1, 1], 2), [
    [0, 1],
    [0, 1],
  ]);
});

test('undefined per-class ratios are 0, and absent classes leave balanced accuracy and macro F1', () => {
  // bacteria is never predicted; virus is neither present nor predicted.
  const m = [
    [2, 0, 0],
    [1, 0, 0],
    [0, 0, 0],
  ];
  assert.deepEqual(perClassMetrics(m), [
    { precision: 2 / 3, recall: 1, f1: 0.8, support: 2 },
    { precision: 0, recall: 0, f1: 0, support: 1 },
    { precision: 0, recall: 0, f1: 0, support: 0 },
  ]);
  close(accuracy(m), 2 / 3);
  assert.equal(balancedAccuracy(m), 0.5); // (1 + 0) / 2: virus has no images
  close(macroF1(m), 0.4); // (0.8 + 0) / 2: virus is neither present nor predicted
  const empty = [
    [0, 0],
    [0, 0],
  ];
  assert.ok(Number.isNaN(accuracy(empty)));
  assert.ok(Number.isNaN(balancedAccuracy(empty)));
  assert.ok(Number.isNaN(macroF1(empty)));
});

test('argmax breaks ties towards the lowest index', () => {
  assert.equal(argmax([0.2, 0.5, 0.3]), 1);
  assert.equal(argmax([0.4, 0.4, 0.2]), 0);
  assert.equal(argmax([0.1, 0.45, 0.45]), 1);
  assert.equal(argmax([1 / 3, 1 / 3, 1 / 3]), 0);
});

// --- ROC ------------------------------------------------------------------------------------------------------

test('rocAuc: perfect, reversed, all tied, and hand cases with ties', () => {
  assert.equal(rocAuc([0.1, 0.2, 0.8, 0.9], [F, F, T, T]), 1);
  assert.equal(rocAuc([0.1, 0.2, 0.8, 0.9], [T, T, F, F]), 0);
  assert.equal(rocAuc([0.5, 0.5, 0.5, 0.5], [T, F, T, F]), 0.5);
  assert.equal(rocAuc([0.1, 0.4, 0.35, 0.8], [F, F, T, T]), 0.75);
  // The positive at 0.5 beats the negative at 0.2 and ties the one at 0.5: (1.5 + 2) / 4.
  assert.equal(rocAuc([0.2, 0.5, 0.5, 0.9], [F, T, F, T]), 0.875);
  // Three tied at 0.3 (one positive, two negatives): 0.5 + 0.5 + 2 = 3 of 4 pairs.
  assert.equal(rocAuc([0.3, 0.3, 0.3, 0.7], [T, F, F, T]), 0.75);
});

test('rocAuc is NaN with one class and matches the pairwise count on random tied data', () => {
  assert.ok(Number.isNaN(rocAuc([0.1, 0.9], [T, T])));
  assert.ok(Number.isNaN(rocAuc([0.1, 0.9], [F, F])));
  assert.ok(Number.isNaN(rocAuc([], [])));
  const rng = createRng(3);
  for (let round = 0; round < 5; round++) {
    const scores = Array.from({ length: 200 }, () => Math.round(rng() * 20) / 20); // many ties
    const positives = scores.map((s) => rng() < 0.3 + 0.4 * s);
    close(rocAuc(scores, positives), pairwiseAuc(scores, positives), `round ${round}`);
  }
});

test('rocCurve: distinct thresholds descending from (0,0) to (1,1), with ties in one step', () => {
  assert.deepEqual(rocCurve([0.1, 0.4, 0.35, 0.8], [F, F, T, T]), {
    fpr: [0, 0, 0.5, 0.5, 1],
    tpr: [0, 0.5, 0.5, 1, 1],
    thresholds: [Infinity, 0.8, 0.4, 0.35, 0.1],
  });
  assert.deepEqual(rocCurve([0.5, 0.5, 0.2], [T, F, F]), {
    fpr: [0, 0.5, 1],
    tpr: [0, 1, 1],
    thresholds: [Infinity, 0.5, 0.2],
  });
  // The trapezoid area under the curve is the AUC.
  const rng = createRng(5);
  const scores = Array.from({ length: 300 }, () => Math.round(rng() * 30) / 30);
  const positives = scores.map((s) => rng() < s);
  const { fpr, tpr } = rocCurve(scores, positives);
  let area = 0;
  for (let i = 1; i < fpr.length; i++) area += ((fpr[i]! - fpr[i - 1]!) * (tpr[i]! + tpr[i - 1]!)) / 2;
  close(area, rocAuc(scores, positives));
  assert.deepEqual([fpr[0], tpr[0], fpr.at(-1), tpr.at(-1)], [0, 0, 1, 1]);
});

// --- binary ---------------------------------------------------------------------------------------------------

test('binaryMetrics at a threshold (strictly above is positive)', () => {
  const scores = [0.2, 0.7, 0.6, 0.5, 0.9];
  const positives = [F, T, F, T, T];
  const m = binaryMetrics(scores, positives); // 0.5 is not above 0.5: TP 2, FN 1, FP 1, TN 1
  assert.equal(m.accuracy, 0.6);
  close(m.sensitivity, 2 / 3);
  assert.equal(m.specificity, 0.5);
  close(m.auc, 5 / 6);
  assert.equal(m.n, 5);
  const low = binaryMetrics(scores, positives, 0.4);
  assert.deepEqual([low.accuracy, low.sensitivity, low.specificity], [0.8, 1, 0.5]);
  const allPositive = binaryMetrics([0.2, 0.8], [T, T]);
  assert.deepEqual([allPositive.accuracy, allPositive.sensitivity], [0.5, 0.5]);
  assert.ok(Number.isNaN(allPositive.specificity));
  assert.ok(Number.isNaN(allPositive.auc));
});

// --- evaluatePredictions: point estimates ---------------------------------------------------------------------

/** Eight images, one patient each; see the comments for what each contributes to the binary views. */
const HAND: Prediction[] = [
  { trueIndex: 0, probs: [0.6, 0.3, 0.1], patientId: 'p1' }, // normal, predicted normal
  { trueIndex: 0, probs: [0.4, 0.3, 0.3], patientId: 'p2' }, // 1 - p(normal) = 0.6 yet argmax is normal: negative
  { trueIndex: 0, probs: [0.2, 0.5, 0.3], patientId: 'p3' }, // predicted bacteria: false positive pneumonia
  { trueIndex: 1, probs: [0.1, 0.7, 0.2], patientId: 'p4' }, // bacteria, predicted bacteria
  { trueIndex: 1, probs: [0.5, 0.2, 0.3], patientId: 'p5' }, // argmax normal, but p(virus) > p(bacteria): virus
  { trueIndex: 2, probs: [0.2, 0.2, 0.6], patientId: 'p6' }, // virus, predicted virus
  { trueIndex: 2, probs: [0.3, 0.4, 0.3], patientId: 'p7' }, // virus, predicted bacteria
  { trueIndex: 2, probs: [0.1, 0.45, 0.45], patientId: 'p8' }, // bacteria/virus tie: bacteria (lowest index)
];

test('evaluatePredictions: point estimates of a hand-computed case', () => {
  const r = evaluatePredictions(HAND, { bootstrap: 50 });
  assert.equal(r.n, 8);
  assert.deepEqual(r.confusion, [
    [2, 1, 0],
    [1, 1, 0],
    [0, 2, 1],
  ]);
  assert.equal(r.accuracy.value, 0.5);
  close(r.balancedAccuracy.value, 0.5); // (2/3 + 1/2 + 1/3) / 3
  close(r.macroF1.value, 0.5); // (2/3 + 1/3 + 1/2) / 3
  close(r.perClass.normal.precision.value, 2 / 3);
  close(r.perClass.normal.recall.value, 2 / 3);
  close(r.perClass.normal.f1.value, 2 / 3);
  assert.equal(r.perClass.bacteria.precision.value, 0.25);
  assert.equal(r.perClass.bacteria.recall.value, 0.5);
  close(r.perClass.bacteria.f1.value, 1 / 3);
  assert.equal(r.perClass.virus.precision.value, 1);
  close(r.perClass.virus.recall.value, 1 / 3);
  assert.equal(r.perClass.virus.f1.value, 0.5);
  assert.deepEqual(CLASSES.map((c) => r.perClass[c].support), [3, 2, 3]);
  // One-vs-rest AUCs, counted by hand (ties at 0.2 for normal and bacteria, at 0.3 for virus).
  close(r.auc.normal.value, 23 / 30);
  close(r.auc.bacteria.value, 13 / 24);
  close(r.auc.virus.value, 0.9);

  const nvp = r.binary.normalVsPneumonia; // TN 2, FP 1, FN 1, TP 4
  assert.equal(nvp.n, 8);
  assert.equal(nvp.accuracy.value, 0.75);
  assert.equal(nvp.sensitivity.value, 0.8);
  close(nvp.specificity.value, 2 / 3);
  close(nvp.auc.value, 23 / 30);

  const bvv = r.binary.bacteriaVsVirus; // true pneumonia only: TN 1, FP 1, TP 1, FN 2
  assert.equal(bvv.n, 5);
  assert.equal(bvv.accuracy.value, 0.4);
  close(bvv.sensitivity.value, 1 / 3);
  assert.equal(bvv.specificity.value, 0.5);
  close(bvv.auc.value, 2 / 3);
  assert.deepEqual(r.bootstrap, { resamples: 50, seed: 42, confidence: 0.95, unit: 'patient', minDefinedShare: 0.95 });
});

test('evaluatePredictions: calibration of the hand-computed case (ECE, Brier score, log loss, reliability bins)', () => {
  const r = evaluatePredictions(HAND, { bootstrap: 50 });
  const c = r.calibration;
  // Top probabilities by bin: 0.4-0.5 holds p2 (0.4, right), p7 (0.4, wrong), p8 (0.45, wrong); 0.5-0.6 p3 and p5
  // (0.5, both wrong); 0.6-0.7 p1 and p6 (0.6, both right); 0.7-0.8 p4 (0.7, right).
  assert.deepEqual(c.bins.map((b) => b.n), [0, 0, 0, 0, 3, 2, 2, 1, 0, 0]);
  const b4 = c.bins[4];
  assert.ok(b4);
  assert.deepEqual([b4.low, b4.high], [0.4, 0.5]);
  close(b4.confidence, 1.25 / 3);
  close(b4.accuracy, 1 / 3);
  assert.deepEqual([c.bins[5]?.accuracy, c.bins[6]?.accuracy, c.bins[7]?.accuracy], [0, 1, 1]);
  assert.ok(Number.isNaN(c.bins[0]?.confidence ?? 0) && Number.isNaN(c.bins[9]?.accuracy ?? 0), 'empty bins');
  // ECE: (|1 - 1.25| + |0 - 1.0| + |2 - 1.2| + |1 - 0.7|) / 8 images.
  close(c.ece.value, 2.35 / 8);
  // Brier: Σ_k (p_k - y_k)² per image: 0.26, 0.54, 0.98, 0.14, 0.98, 0.24, 0.74, 0.515.
  close(c.brier.value, 4.395 / 8);
  close(c.logLoss.value, -[0.6, 0.4, 0.2, 0.7, 0.2, 0.6, 0.3, 0.45].reduce((sum, p) => sum + Math.log(p), 0) / 8);
  for (const m of [c.ece, c.brier, c.logLoss]) assert.ok(m.low <= m.value && m.value <= m.high, JSON.stringify(m));
  // A confident and right model is perfectly calibrated; probability 0 for the true class is clipped, not infinite.
  const sure = evaluatePredictions([{ trueIndex: 1, probs: [0, 1, 0], patientId: 'a' }, { trueIndex: 0, probs: [0, 1, 0], patientId: 'b' }], { bootstrap: 0 });
  assert.equal(sure.calibration.ece.value, 0.5);
  assert.equal(sure.calibration.brier.value, 1);
  close(sure.calibration.logLoss.value, -Math.log(1e-15) / 2);
  assert.equal(evaluatePredictions([{ trueIndex: 1, probs: [0, 1, 0], patientId: 'a' }], { bootstrap: 0 }).calibration.ece.value, 0);
});

test('evaluatePredictions: the report has the documented JSON shape', () => {
  const r = evaluatePredictions(HAND, { bootstrap: 20 });
  const json = JSON.parse(JSON.stringify(r)) as EvaluationReport;
  assert.deepEqual(Object.keys(json), [
    'n', 'accuracy', 'balancedAccuracy', 'macroF1', 'perClass', 'confusion', 'auc', 'binary', 'calibration', 'bootstrap',
  ]);
  assert.deepEqual(Object.keys(json.calibration), ['ece', 'brier', 'logLoss', 'bins']);
  assert.deepEqual(Object.keys(json.calibration.bins[0] ?? {}), ['low', 'high', 'n', 'confidence', 'accuracy']);
  assert.equal(json.calibration.bins[0]?.confidence, null, 'an empty bin prints null');
  assert.deepEqual(Object.keys(json.perClass), ['normal', 'bacteria', 'virus']);
  assert.deepEqual(Object.keys(json.perClass.virus), ['precision', 'recall', 'f1', 'support']);
  assert.deepEqual(Object.keys(json.perClass.virus.f1), ['value', 'low', 'high']);
  assert.deepEqual(Object.keys(json.auc), ['normal', 'bacteria', 'virus']);
  assert.deepEqual(Object.keys(json.binary), ['normalVsPneumonia', 'bacteriaVsVirus']);
  assert.deepEqual(Object.keys(json.binary.bacteriaVsVirus), ['accuracy', 'sensitivity', 'specificity', 'auc', 'n']);
});

test('evaluatePredictions: undefined values are NaN (0 for per-class ratios), and bootstrap 0 leaves NaN bounds', () => {
  const allNormal: Prediction[] = [
    { trueIndex: 0, probs: [0.9, 0.05, 0.05], patientId: 'a' },
    { trueIndex: 0, probs: [0.3, 0.6, 0.1], patientId: 'b' },
  ];
  const r = evaluatePredictions(allNormal, { bootstrap: 30 });
  assert.equal(r.binary.bacteriaVsVirus.n, 0);
  assert.ok(Number.isNaN(r.binary.bacteriaVsVirus.accuracy.value));
  assert.ok(Number.isNaN(r.binary.bacteriaVsVirus.auc.low));
  assert.ok(Number.isNaN(r.auc.normal.value));
  assert.ok(Number.isNaN(r.binary.normalVsPneumonia.sensitivity.value));
  assert.equal(r.binary.normalVsPneumonia.specificity.value, 0.5);
  assert.deepEqual(r.perClass.virus.precision.value, 0); // never predicted
  assert.ok(Number.isNaN(r.perClass.virus.precision.low)); // ... in any resample
  assert.equal(JSON.parse(JSON.stringify(r)).auc.normal.value, null);
  const none = evaluatePredictions(HAND, { bootstrap: 0 });
  assert.equal(none.accuracy.value, 0.5);
  assert.ok(Number.isNaN(none.accuracy.low) && Number.isNaN(none.accuracy.high));
});

// --- evaluatePredictions: the bootstrap -----------------------------------------------------------------------

/** A synthetic classifier that is right about `skill` of the time, on patients with 1 to 3 images. */
function synthetic(rng: Rng, patients: number, skill = 0.8): Prediction[] {
  const out: Prediction[] = [];
  for (let p = 0; p < patients; p++) {
    const images = 1 + Math.floor(rng() * 3);
    const t = Math.floor(rng() * 3);
    for (let i = 0; i < images; i++) {
      const guess = rng() < skill ? t : (t + 1 + Math.floor(rng() * 2)) % 3;
      const raw = [rng(), rng(), rng()];
      raw[guess]! += 1.5;
      const sum = raw.reduce((a, b) => a + b, 0);
      out.push({ trueIndex: t, probs: raw.map((v) => v / sum), patientId: `patient-${p}`, file: `p${p}-${i}.jpeg` });
    }
  }
  return out;
}

function intervalsOf(r: EvaluationReport): Array<[string, Interval]> {
  const list: Array<[string, Interval]> = [
    ['accuracy', r.accuracy],
    ['balancedAccuracy', r.balancedAccuracy],
    ['macroF1', r.macroF1],
  ];
  for (const c of CLASSES) {
    list.push([`${c} precision`, r.perClass[c].precision], [`${c} recall`, r.perClass[c].recall]);
    list.push([`${c} f1`, r.perClass[c].f1], [`${c} auc`, r.auc[c]]);
  }
  for (const [view, b] of Object.entries(r.binary)) {
    list.push([`${view} accuracy`, b.accuracy], [`${view} sensitivity`, b.sensitivity]);
    list.push([`${view} specificity`, b.specificity], [`${view} auc`, b.auc]);
  }
  return list;
}

test('bootstrap: deterministic per seed, independent of input order, intervals contain the estimate', () => {
  const preds = synthetic(createRng(11), 300);
  const a = evaluatePredictions(preds, { seed: 7 }); // default 1000 resamples
  assert.deepEqual(evaluatePredictions(preds, { seed: 7 }), a);
  assert.deepEqual(evaluatePredictions([...preds].reverse(), { seed: 7 }), a);
  // Images without a patient (patientId ''), each a patient of its own: keyed by file, so in any order too.
  const alone = preds.slice(0, 40).map((p, i) => ({ ...p, patientId: '', file: `f${i}.jpeg` }));
  assert.deepEqual(evaluatePredictions([...alone].reverse(), { seed: 7, bootstrap: 200 }), evaluatePredictions(alone, { seed: 7, bootstrap: 200 }));
  const b = evaluatePredictions(preds, { seed: 8 });
  assert.notDeepEqual(b.accuracy, a.accuracy);
  assert.equal(b.accuracy.value, a.accuracy.value);
  assert.equal(a.bootstrap.resamples, 1000);
  for (const [name, iv] of intervalsOf(a)) {
    assert.ok(iv.low <= iv.value && iv.value <= iv.high, `${name}: ${JSON.stringify(iv)}`);
    assert.ok(iv.low < iv.high, `${name} has an empty interval: ${JSON.stringify(iv)}`);
  }
  // A wider confidence gives a wider interval.
  const wide = evaluatePredictions(preds, { seed: 7, confidence: 0.99 });
  assert.ok(wide.accuracy.low <= a.accuracy.low && wide.accuracy.high >= a.accuracy.high);
});

test('bootstrap: intervals widen with fewer patients', () => {
  const many = evaluatePredictions(synthetic(createRng(21), 400), { bootstrap: 400 });
  const few = evaluatePredictions(synthetic(createRng(21), 40), { bootstrap: 400 });
  const width = (iv: Interval): number => iv.high - iv.low;
  assert.ok(width(few.accuracy) > 2 * width(many.accuracy), `${JSON.stringify(few.accuracy)} vs ${JSON.stringify(many.accuracy)}`);
  assert.ok(width(few.macroF1) > width(many.macroF1));
  assert.ok(width(few.binary.normalVsPneumonia.auc) > width(many.binary.normalVsPneumonia.auc));
});

test('bootstrap: resamples patients, keeping all their images together', () => {
  // One patient with ten misclassified images, ten patients with one correct image each: accuracy 0.5.
  const wrong: Prediction[] = Array.from({ length: 10 }, (_, i) => ({
    trueIndex: 1,
    probs: [0.7, 0.2, 0.1],
    patientId: 'many',
    file: `many-${i}.jpeg`,
  }));
  const right: Prediction[] = Array.from({ length: 10 }, (_, i) => ({
    trueIndex: 1,
    probs: [0.1, 0.8, 0.1],
    patientId: `single-${i}`,
  }));
  const byPatient = evaluatePredictions([...wrong, ...right], { bootstrap: 500 });
  assert.equal(byPatient.accuracy.value, 0.5);
  // The ten-image patient is left out of about (10/11)^11 = 35 % of the resamples, which then score 1.
  assert.equal(byPatient.accuracy.high, 1);
  // Drawn per image, a perfect resample would need 20 correct draws out of 20 (about 1 in a million).
  const perImage = [...wrong, ...right].map((p, i) => ({ ...p, patientId: `image-${i}` }));
  const byImage = evaluatePredictions(perImage, { bootstrap: 500 });
  assert.equal(byImage.accuracy.value, 0.5);
  assert.ok(byImage.accuracy.high < 0.8, JSON.stringify(byImage.accuracy));
  assert.ok(byPatient.accuracy.low < byImage.accuracy.low);
  // An empty patient id makes the image a patient of its own.
  assert.deepEqual(
    evaluatePredictions(perImage.map((p) => ({ ...p, patientId: '' })), { bootstrap: 500 }).accuracy.value,
    byImage.accuracy.value,
  );
});

test('bootstrap: a figure that fewer than 95 % of the resamples define gets no interval', () => {
  // A single virus patient: about a third of the resamples lack virus. The others would all give a virus AUC of 1:
  // an interval [1, 1] that says nothing of how little one patient shows. So every virus figure has none, and so
  // have balanced accuracy and macro-F1 (a resample without virus would average over two classes: another figure).
  const preds = synthetic(createRng(4), 30).filter((p) => p.trueIndex !== 2);
  preds.push({ trueIndex: 2, probs: [0, 0, 1], patientId: 'only-virus' }); // scored above everyone
  const r = evaluatePredictions(preds, { bootstrap: 300 });
  assert.equal(r.auc.virus.value, 1);
  const bounds = (i: { low: number; high: number }): number[] => [i.low, i.high];
  for (const i of [r.auc.virus, r.perClass.virus.recall, r.binary.bacteriaVsVirus.sensitivity, r.balancedAccuracy, r.macroF1]) {
    assert.deepEqual(bounds(i), [NaN, NaN]);
    assert.ok(Number.isFinite(i.value));
  }
  // Figures every resample defines keep theirs.
  for (const i of [r.accuracy, r.perClass.bacteria.recall, r.auc.normal, r.binary.normalVsPneumonia.accuracy]) {
    assert.ok(Number.isFinite(i.low) && i.low <= i.high, JSON.stringify(i));
  }
  // With virus patients enough, every figure has an interval.
  const many = evaluatePredictions(synthetic(createRng(5), 60), { bootstrap: 300 });
  for (const i of [many.auc.virus, many.perClass.virus.recall, many.balancedAccuracy, many.macroF1]) assert.ok(Number.isFinite(i.low) && Number.isFinite(i.high));
});

// --- validation -----------------------------------------------------------------------------------------------

test('input validation: exact messages', () => {
  assert.throws(() => confusionMatrix([0, 1], [0]), configError('trueIdx has 2 entries but predIdx has 1: expected the same length'));
  assert.throws(() => confusionMatrix([0, 3], [0, 1]), configError('trueIdx[1] is 3: expected an integer from 0 to 2'));
  assert.throws(() => confusionMatrix([0], [1.5]), configError('predIdx[0] is 1.5: expected an integer from 0 to 2'));
  assert.throws(() => confusionMatrix([0], [0], 0), configError('k is 0: expected an integer of at least 1'));
  assert.throws(
    () => perClassMetrics([[1, 0], [0]]),
    configError('confusion row 1 has 1 entry: expected 2, a square matrix'),
  );
  assert.throws(() => rocAuc([0.1], [T, F]), configError('scores has 1 entry but positives has 2: expected the same length'));
  assert.throws(() => rocCurve([0.1, NaN], [T, F]), configError('scores[1] is NaN: expected a finite number'));
  assert.throws(
    () => binaryMetrics([0.1, 0.2, 0.3], [T, F]),
    configError('scores has 3 entries but positives has 2: expected the same length'),
  );

  const ok: Prediction = { trueIndex: 0, probs: [0.5, 0.3, 0.2], patientId: 'p' };
  assert.throws(() => evaluatePredictions([]), configError('no predictions to evaluate: expected at least one'));
  assert.throws(
    () => evaluatePredictions([ok, { trueIndex: 1, probs: [0.5, 0.5], patientId: 'q', file: 'b.jpeg' }]),
    configError('predictions[1] (file "b.jpeg") has 2 probabilities: expected 3, one per class (normal, bacteria, virus)'),
  );
  assert.throws(
    () => evaluatePredictions([{ ...ok, trueIndex: 3 }]),
    configError('predictions[0] has trueIndex 3: expected an integer from 0 to 2'),
  );
  assert.throws(
    () => evaluatePredictions([{ ...ok, trueIndex: -1, file: 'x.jpeg' }]),
    configError('predictions[0] (file "x.jpeg") has trueIndex -1: expected an integer from 0 to 2'),
  );
  assert.throws(
    () => evaluatePredictions([{ ...ok, probs: [0.5, NaN, 0.5] }]),
    configError('predictions[0] has probability NaN for bacteria: expected a finite number'),
  );
  assert.throws(
    () => evaluatePredictions([ok], { bootstrap: -1 }),
    configError('bootstrap -1 is not valid: expected an integer from 0 to 100000'),
  );
  assert.throws(
    () => evaluatePredictions([ok], { confidence: 1 }),
    configError('confidence 1 is not valid: expected a number between 0 and 1 (exclusive)'),
  );
  assert.throws(() => evaluatePredictions([ok], { seed: NaN }), configError('seed NaN is not valid: expected a whole number from 0 to 4294967295'));
  // Seeds the generator would fold onto others (42.7 and 2^32 + 42 onto 42) are refused.
  for (const seed of [42.7, 2 ** 32 + 42, -1]) {
    assert.throws(() => evaluatePredictions([ok], { seed }), configError(`seed ${seed} is not valid: expected a whole number from 0 to 4294967295`));
  }
});
