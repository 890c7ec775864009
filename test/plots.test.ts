// Figure builders on tiny inputs: plain JSON, the expected traces, axis titles and values, class colours.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CLASSES, type Label } from '../lib/config.js';
import { ConfigError } from '../lib/errors.js';
import type { ManifestRow } from '../lib/manifest.js';
import { evaluatePredictions, type Prediction } from '../lib/metrics.js';
import {
  cacheSamples,
  CLASS_COLORS,
  classCounts,
  classDistributionFigure,
  confusionMatrixFigure,
  downsampleGray,
  imageSizeFigure,
  intensityHistogramFigure,
  metricBarsFigure,
  misclassifiedGalleryFigure,
  mostConfidentMistakes,
  parsePredictionsCsv,
  PUBLISHED,
  reliabilityFigure,
  rocCurvesFromPredictions,
  rocFigure,
  sampleGridFigure,
  trainingCurvesFigure,
  type Figure,
  type PredictionRow,
  type Trace,
} from '../lib/plots.js';
import type { RelabelSummary } from '../lib/relabel.js';
import type { EpochRecord } from '../lib/train.js';

/** The figure survives a JSON round trip unchanged: no NaN, no undefined, no functions, no typed arrays. */
function assertPlainJson(figure: Figure): void {
  assert.deepEqual(JSON.parse(JSON.stringify(figure)), figure);
  const walk = (v: unknown, path: string): void => {
    if (typeof v === 'function') assert.fail(`function at ${path}`);
    if (typeof v === 'number') assert.ok(Number.isFinite(v), `non-finite number at ${path}`);
    if (ArrayBuffer.isView(v)) assert.fail(`typed array at ${path}`);
    if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, `${path}.${k}`);
  };
  walk(figure, 'figure');
}

function title(obj: unknown): string | undefined {
  return (obj as { title?: { text?: string } } | undefined)?.title?.text;
}

function layoutAxis(figure: Figure, key: string): Record<string, unknown> {
  const ax = figure.layout[key];
  assert.ok(ax && typeof ax === 'object', `layout.${key} is missing`);
  return ax as Record<string, unknown>;
}

const counts = (n: number, b: number, v: number): Record<Label | 'total', number> => ({ normal: n, bacteria: b, virus: v, total: n + b + v });

const SUMMARY = {
  version: 1,
  counts: { train: counts(1349, 2538, 1345), test: counts(234, 242, 148) },
  patients: { train: counts(1000, 1200, 1100), test: counts(200, 180, 120) },
} as unknown as RelabelSummary;

function history(n: number): EpochRecord[] {
  return Array.from({ length: n }, (_, i) => ({
    epoch: i + 1,
    learningRate: 1e-3 / (i + 1),
    loss: 1 / (i + 1),
    accuracy: 0.5 + i * 0.1,
    valLoss: 1.2 / (i + 1),
    valAccuracy: 0.4 + i * 0.1,
    valMacroF1: 0.35 + i * 0.1,
    valBalancedAccuracy: 0.4 + i * 0.1,
    seconds: 3,
    imagesPerSecond: 100,
    best: i === 1,
  }));
}

function predRows(): PredictionRow[] {
  const p = (trueLabel: Label, normal: number, bacteria: number, virus: number, file: string): PredictionRow => {
    const probs = { normal, bacteria, virus };
    const predictedLabel = CLASSES.reduce((a, c) => (probs[c] > probs[a] ? c : a), 'normal' as Label);
    return { file, patientId: file, trueLabel, predictedLabel, normal, bacteria, virus };
  };
  return [
    p('normal', 0.8, 0.1, 0.1, 'test/normal/a.jpeg'),
    p('normal', 0.6, 0.3, 0.1, 'test/normal/b.jpeg'),
    p('normal', 0.2, 0.7, 0.1, 'test/normal/c.jpeg'),
    p('bacteria', 0.1, 0.7, 0.2, 'test/bacteria/d.jpeg'),
    p('bacteria', 0.3, 0.4, 0.3, 'test/bacteria/e.jpeg'),
    p('bacteria', 0.05, 0.05, 0.9, 'test/bacteria/f.jpeg'),
    p('virus', 0.1, 0.2, 0.7, 'test/virus/g.jpeg'),
    p('virus', 0.2, 0.5, 0.3, 'test/virus/h.jpeg'),
  ];
}

test('PUBLISHED holds Kermany et al. 2018 with its citation', () => {
  assert.deepEqual(PUBLISHED.normalVsPneumonia, { accuracy: 0.928, sensitivity: 0.932, specificity: 0.901, auc: 0.968 });
  assert.deepEqual(PUBLISHED.bacteriaVsVirus, { accuracy: 0.907, sensitivity: 0.886, specificity: 0.909, auc: 0.94 });
  assert.match(PUBLISHED.citation, /Kermany.*Cell.*2018.*doi:10\.1016\/j\.cell\.2018\.02\.010/);
});

test('classDistributionFigure: grouped bars per class for images and patients, from summary.json or manifest rows', () => {
  const fig = classDistributionFigure(SUMMARY);
  assertPlainJson(fig);
  assert.equal(fig.data.length, 6);
  assert.ok(fig.data.every((t) => t.type === 'bar'));
  assert.equal(fig.layout.barmode, 'group');
  const images = fig.data.slice(0, 3);
  const patients = fig.data.slice(3);
  assert.deepEqual(images.map((t) => t.name), [...CLASSES]);
  assert.deepEqual(images.map((t) => (t.marker as { color: string }).color), CLASSES.map((c) => CLASS_COLORS[c]));
  assert.deepEqual(images[1]?.x, ['train', 'test']);
  assert.deepEqual(images[1]?.y, [2538, 242]);
  assert.deepEqual(patients[2]?.y, [1100, 120]);
  assert.ok(patients.every((t) => t.yaxis === 'y2' && t.showlegend === false));
  assert.equal(title(layoutAxis(fig, 'yaxis')), 'images');
  assert.equal(title(layoutAxis(fig, 'yaxis2')), 'patients');
  assert.equal(title(layoutAxis(fig, 'xaxis')), 'split');

  const row = (split: 'train' | 'test' | 'val', label: Label, file: string, patientId: string): ManifestRow => ({
    split, label, file, patientId, bytes: 1, sha256: 'x', width: 100 + file.length, height: 80, channels: 1,
  });
  const rows = [
    row('train', 'virus', 'a', 'p1'),
    row('train', 'virus', 'b', 'p1'),
    row('train', 'normal', 'c', 'p2'),
    row('val', 'bacteria', 'd', 'p3'),
    row('test', 'bacteria', 'e', ''),
    row('test', 'bacteria', 'f', ''),
  ];
  const c = classCounts(rows);
  assert.deepEqual(c.splits, ['train', 'val', 'test']);
  assert.deepEqual(c.images.train, counts(1, 0, 2));
  assert.deepEqual(c.patients.train, counts(1, 0, 1));
  assert.deepEqual(c.patients.test, counts(0, 2, 0), 'an empty patient id counts the image as its own patient');
  const fromRows = classDistributionFigure(rows);
  assertPlainJson(fromRows);
  assert.deepEqual(fromRows.data[2]?.y, [2, 0, 0]);

  const sizes = imageSizeFigure(rows);
  assertPlainJson(sizes);
  assert.equal(sizes.data.length, 3);
  assert.deepEqual(sizes.data[1]?.x, [101, 101, 101]);
  assert.equal(title(layoutAxis(sizes, 'xaxis')), 'width (px)');
  // Every image of one size: said in words over the lone dot; images of several sizes: the dots say it.
  assert.equal((sizes.layout.annotations as { text: string }[] | undefined)?.[0]?.text, `all ${rows.length} images are 101 x 80 px`);
  assert.equal(imageSizeFigure([...rows, { ...(rows[0] as ManifestRow), width: 300 }]).layout.annotations, undefined);
});

test('downsampleGray box-averages to the target size and leaves small images alone', () => {
  const px = Uint8Array.from([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150]);
  const small = downsampleGray(px, 4, 2);
  assert.equal(small.size, 2);
  assert.deepEqual([...small.pixels], [25, 45, 105, 125]);
  assert.equal(downsampleGray(px, 4, 96).pixels, px);
});

test('sampleGridFigure: one gray heatmap per image, downsampled to 96 px, rows top to bottom, titled', () => {
  const size = 200;
  const big = new Uint8Array(size * size);
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) big[y * size + x] = y < size / 2 ? 0 : 255;
  const samples = [
    { pixels: big, size, title: 'normal · IM-0001.jpeg' },
    { pixels: Uint8Array.from([1, 2, 3, 4]), size: 2, title: 'virus <b>' },
    { pixels: new Uint8Array(9), size: 3, title: 'bacteria' },
  ];
  const fig = sampleGridFigure(samples, { columns: 2 });
  assertPlainJson(fig);
  assert.equal(fig.data.length, 3);
  assert.ok(fig.data.every((t) => t.type === 'heatmap' && t.showscale === false && t.zmin === 0 && t.zmax === 255));
  const z0 = fig.data[0]?.z as number[][];
  assert.equal(z0.length, 96);
  assert.ok(z0.every((r) => r.length === 96));
  assert.equal(z0[0]?.[0], 0, 'first row is the top of the image');
  assert.equal(z0[95]?.[0], 255);
  assert.deepEqual(fig.data[1]?.z, [[1, 2], [3, 4]]);
  assert.deepEqual(fig.data.map((t) => [t.xaxis, t.yaxis]), [['x', 'y'], ['x2', 'y2'], ['x3', 'y3']]);
  assert.equal(layoutAxis(fig, 'yaxis2').autorange, 'reversed');
  assert.equal(layoutAxis(fig, 'yaxis3').scaleanchor, 'x3');
  const notes = (fig.layout.annotations as { text: string }[]).map((a) => a.text);
  assert.deepEqual(notes, ['normal · IM-0001.jpeg', 'virus &lt;b&gt;', 'bacteria']);
  assert.ok(JSON.stringify(fig).length < 60_000, 'the JSON stays small');
  // A long title is cut in the middle on its tile (the file name's end kept), and whole in the hover text.
  const long = `bacteria → virus (91%) · ${'x'.repeat(150)}_bacteria_12.jpeg`;
  const cut = sampleGridFigure([{ pixels: new Uint8Array(4), size: 2, title: long }]);
  const tile = (cut.layout.annotations as { text: string }[])[0]?.text ?? '';
  assert.equal(tile.length, 48);
  assert.ok(tile.startsWith('bacteria → virus (91%)') && tile.endsWith('_bacteria_12.jpeg') && tile.includes('…'), tile);
  assert.ok(String(cut.data[0]?.hovertemplate).includes(long));

  const empty = sampleGridFigure([]);
  assertPlainJson(empty);
  assert.equal(empty.data.length, 0);

  assert.throws(
    () => sampleGridFigure([{ pixels: new Uint8Array(5), size: 2, title: 'bad' }]),
    (err: unknown) => err instanceof ConfigError && err.message === 'sample 0 ("bad") has 5 bytes for size 2: expected size x size bytes',
  );
});

test('cacheSamples picks the same images of each class for a seed, titled with the file', () => {
  const images = CLASSES.flatMap((label) =>
    Array.from({ length: 5 }, (_, i) => ({ file: `train/${label}/${label}${i}.jpeg`, label, subset: i < 4 ? 'train' : 'val' })),
  );
  const cache = {
    imageSize: 2,
    index: { images },
    readImage: (i: number) => Uint8Array.from([i, i, i, i]),
  };
  const a = cacheSamples(cache, { perClass: 2, subset: 'train', seed: 7 });
  const b = cacheSamples(cache, { perClass: 2, subset: 'train', seed: 7 });
  assert.deepEqual(a, b);
  assert.equal(a.length, 6);
  assert.deepEqual(a.map((s) => s.title.split('\n')[0]), ['normal', 'normal', 'bacteria', 'bacteria', 'virus', 'virus']);
  for (const s of a) {
    const i = s.pixels[0] as number;
    assert.equal(images[i]?.subset, 'train');
    assert.equal(s.title, `${images[i]?.label}\n${images[i]?.file.split('/').at(-1)}`);
  }
  assert.equal(cacheSamples(cache, { perClass: 9 }).length, 15);
});

test('intensityHistogramFigure: one normalised line per class present', () => {
  const fig = intensityHistogramFigure({ normal: [Uint8Array.from([0, 0, 255, 255])], virus: [Uint8Array.from([128]), Uint8Array.from([128, 0])] }, { bins: 4 });
  assertPlainJson(fig);
  assert.equal(fig.data.length, 2);
  assert.deepEqual(fig.data.map((t) => (t.line as { color: string }).color), [CLASS_COLORS.normal, CLASS_COLORS.virus]);
  assert.deepEqual(fig.data[0]?.y, [0.5, 0, 0, 0.5]);
  const virus = fig.data[1]?.y as number[];
  assert.equal(virus.reduce((a, b) => a + b, 0), 1);
  assert.deepEqual(virus, [1 / 3, 0, 2 / 3, 0]);
  assert.match(String(fig.data[1]?.name), /^virus \(2 images, mean 85\.3\)$/);
  assert.equal(title(layoutAxis(fig, 'xaxis')), 'pixel intensity (0 black, 255 white)');
  assert.equal(title(layoutAxis(fig, 'yaxis')), 'share of pixels');
  assert.throws(() => intensityHistogramFigure({}, { bins: 0 }), { name: 'ConfigError', message: 'bins 0 is not valid: expected an integer from 1 to 256' });
});

test('trainingCurvesFigure: loss and accuracy, train and validation, learning rate, best epoch', () => {
  const h = history(3);
  const fig = trainingCurvesFigure(h);
  assertPlainJson(fig);
  // One legend entry per style (train solid, validation dashed) for both panels; the hover names each series in full.
  assert.deepEqual(fig.data.map((t) => [t.name, t.showlegend ?? true, t.legendgroup]), [
    ['train', true, 'train'], ['validation', true, 'val'], ['train', false, 'train'], ['validation', false, 'val'],
    ['validation macro-F1', true, 'f1'], ['learning rate', true, 'lr'],
  ]);
  assert.deepEqual(fig.data.map((t) => String(t.hovertemplate).split(',')[0]), [
    'train loss', 'validation loss', 'train accuracy', 'validation accuracy', 'validation macro-F1', 'learning rate',
  ]);
  assert.ok(fig.data.every((t) => t.type === 'scatter'));
  assert.deepEqual(fig.data[0]?.x, [1, 2, 3]);
  assert.deepEqual(fig.data[1]?.y, h.map((r) => r.valLoss));
  assert.deepEqual(fig.data[3]?.y, h.map((r) => r.valAccuracy));
  assert.deepEqual(fig.data.map((t) => t.yaxis), ['y', 'y', 'y2', 'y2', 'y2', 'y3']);
  assert.equal(title(layoutAxis(fig, 'yaxis')), 'loss');
  assert.equal(title(layoutAxis(fig, 'yaxis2')), 'accuracy / macro-F1');
  assert.equal(title(layoutAxis(fig, 'yaxis3')), 'learning rate');
  assert.equal(title(layoutAxis(fig, 'xaxis')), 'epoch');
  assert.equal(layoutAxis(fig, 'yaxis3').overlaying, 'y');
  const shapes = fig.layout.shapes as { x0: number }[];
  assert.deepEqual(shapes.map((s) => s.x0), [2, 2], 'the best epoch is marked on both panels');
  // Both panels show the same epochs, fixed, so that the best-epoch label cannot stretch one of them.
  assert.deepEqual(layoutAxis(fig, 'xaxis').range, [0.5, 3.5]);
  assert.deepEqual(layoutAxis(fig, 'xaxis2').range, [0.5, 3.5]);
  const one = trainingCurvesFigure(history(1));
  assert.equal(one.data.at(-1)?.mode, 'markers', 'one epoch: the learning rate is a point, not an empty line');

  const noLr = trainingCurvesFigure([{ ...h[0]!, loss: NaN }], { learningRate: false });
  assertPlainJson(noLr);
  assert.equal(noLr.data.length, 5);
  assert.deepEqual(noLr.data[0]?.y, [null], 'NaN becomes a gap');
  assert.equal(noLr.layout.yaxis3, undefined);
  assertPlainJson(trainingCurvesFigure([]));
});

test('confusionMatrixFigure: z is the matrix, rows true, columns predicted, counts and row shares annotated', () => {
  const m = [
    [5, 1, 0],
    [2, 6, 2],
    [0, 0, 0],
  ];
  const fig = confusionMatrixFigure(m);
  assertPlainJson(fig);
  assert.equal(fig.data.length, 1);
  const hm = fig.data[0] as Trace;
  assert.equal(hm.type, 'heatmap');
  assert.deepEqual(hm.z, m);
  assert.deepEqual(hm.x, [...CLASSES]);
  assert.deepEqual(hm.y, [...CLASSES]);
  assert.equal(title(layoutAxis(fig, 'xaxis')), 'predicted class');
  assert.equal(title(layoutAxis(fig, 'yaxis')), 'true class');
  assert.equal(layoutAxis(fig, 'yaxis').autorange, 'reversed', 'the first class is the top row');
  const notes = fig.layout.annotations as { text: string; x: string; y: string }[];
  assert.equal(notes.length, 9);
  const cell = (y: string, x: string) => notes.find((a) => a.x === x && a.y === y)?.text;
  assert.equal(cell('normal', 'normal'), '<b>5</b><br>83.3 %');
  assert.equal(cell('bacteria', 'virus'), '<b>2</b><br>20.0 %');
  assert.equal(cell('virus', 'virus'), '<b>0</b><br>n/a');
  assert.throws(
    () => confusionMatrixFigure([[1, 2], [3, 4]]),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.message === 'confusion matrix [[1,2],[3,4]] is not 3 x 3: expected one row and one column per class (normal, bacteria, virus)',
  );
});

test('rocCurvesFromPredictions and rocFigure: curves from (0,0) to (1,1), AUCs, the chance diagonal', () => {
  const rows = predRows();
  const curves = rocCurvesFromPredictions(rows);
  assert.deepEqual(curves.map((c) => [c.name, c.kind]), [
    ['normal vs rest', 'one-vs-rest'],
    ['bacteria vs rest', 'one-vs-rest'],
    ['virus vs rest', 'one-vs-rest'],
    ['pneumonia (positive) vs normal', 'binary'],
    ['virus (positive) vs bacteria', 'binary'],
  ]);
  for (const c of curves) {
    assert.equal(c.fpr[0], 0);
    assert.equal(c.tpr[0], 0);
    assert.equal(c.fpr.at(-1), 1);
    assert.equal(c.tpr.at(-1), 1);
    assert.ok(c.auc >= 0 && c.auc <= 1);
  }
  // The same AUCs as the evaluation report computes from the same probabilities.
  const preds: Prediction[] = rows.map((r) => ({ trueIndex: CLASSES.indexOf(r.trueLabel), probs: [r.normal, r.bacteria, r.virus], patientId: r.file }));
  const report = evaluatePredictions(preds, { bootstrap: 0 });
  assert.equal(curves[0]?.auc, report.auc.normal.value);
  assert.equal(curves[2]?.auc, report.auc.virus.value);
  assert.equal(curves[3]?.auc, report.binary.normalVsPneumonia.auc.value);
  assert.equal(curves[4]?.auc, report.binary.bacteriaVsVirus.auc.value);

  const fig = rocFigure(curves);
  assertPlainJson(fig);
  assert.equal(fig.data.length, 6);
  assert.deepEqual([fig.data[0]?.x, fig.data[0]?.y], [[0, 1], [0, 1]], 'the chance diagonal');
  assert.ok(fig.data.every((t) => t.type === 'scatter'));
  assert.match(String(fig.data[1]?.name), /^normal vs rest \(AUC \d\.\d{3}\)$/);
  assert.equal((fig.data[3]?.line as { color: string }).color, CLASS_COLORS.virus);
  assert.equal(title(layoutAxis(fig, 'xaxis')), 'false positive rate (1 - specificity)');
  assert.equal(title(layoutAxis(fig, 'yaxis')), 'true positive rate (sensitivity)');

  // A class without positives has no curve.
  assert.deepEqual(rocCurvesFromPredictions(rows.filter((r) => r.trueLabel !== 'virus')).map((c) => c.name), [
    'normal vs rest', 'bacteria vs rest', 'pneumonia (positive) vs normal',
  ]);
  assert.throws(() => rocFigure([{ name: 'x', fpr: [0, 1], tpr: [0], auc: 0.5 }]), { name: 'ConfigError', message: 'ROC curve "x" has 2 fpr but 1 tpr values: expected as many' });
});

test('parsePredictionsCsv reads evaluateModel\'s CSV and names the bad row', () => {
  const text = 'file,patientId,trueLabel,predictedLabel,normal,bacteria,virus\ntest/virus/a.jpeg,p1,virus,bacteria,0.1,0.5,0.4\n';
  assert.deepEqual(parsePredictionsCsv(text), [
    { file: 'test/virus/a.jpeg', patientId: 'p1', trueLabel: 'virus', predictedLabel: 'bacteria', normal: 0.1, bacteria: 0.5, virus: 0.4 },
  ]);
  assert.throws(
    () => parsePredictionsCsv(text.replace(',virus,bacteria', ',covid,bacteria'), 'p.csv'),
    (err: unknown) => err instanceof ConfigError && err.message === 'row 2 of "p.csv": trueLabel "covid" is not one of normal, bacteria, virus',
  );
  assert.throws(
    () => parsePredictionsCsv(text.replace('0.4', 'x'), 'p.csv'),
    (err: unknown) => err instanceof ConfigError && err.message === 'row 2 of "p.csv": virus "x" is not a probability from 0 to 1',
  );
  // Rows are numbered by their line in the file, blank lines included (the file as an editor shows it).
  assert.throws(
    () => parsePredictionsCsv(text.replace('\ntest/', '\n\ntest/').replace('0.4', 'x'), 'p.csv'),
    (err: unknown) => err instanceof ConfigError && err.message === 'row 3 of "p.csv": virus "x" is not a probability from 0 to 1',
  );
  // Another file given by mistake, or a header alone: refused, not read as no predictions (the charts would vanish).
  assert.throws(
    () => parsePredictionsCsv('{"n": 624, "accuracy": 0.8}\n', 'evaluation.json'),
    (err: unknown) => err instanceof ConfigError && err.message === '"evaluation.json" is not a predictions CSV: it lacks the columns file, trueLabel, predictedLabel, normal, bacteria, virus (evaluate --predictions writes one)',
  );
  assert.throws(
    () => parsePredictionsCsv(text.split('\n')[0] ?? '', 'p.csv'),
    (err: unknown) => err instanceof ConfigError && err.message === '"p.csv" holds no predictions (a header and no rows)',
  );
});

test('metricBarsFigure: the intervals as error bars, beside the published figures of the binary views', () => {
  const rows = predRows();
  const preds: Prediction[] = rows.map((r) => ({ trueIndex: CLASSES.indexOf(r.trueLabel), probs: [r.normal, r.bacteria, r.virus], patientId: r.file }));
  const report = evaluatePredictions(preds, { bootstrap: 50, seed: 1 });
  const fig = metricBarsFigure(report);
  assertPlainJson(fig);
  assert.deepEqual(fig.data.map((t) => [t.name, t.yaxis]), [
    ['this model (95 % interval)', 'y'],
    ['this model (95 % interval)', 'y2'],
    ['Kermany et al. 2018 (their test split, 624 images)', 'y2'],
    ['this model (95 % interval)', 'y3'],
    ['Kermany et al. 2018 (their test split, 624 images)', 'y3'],
  ]);
  assert.ok(fig.data.every((t) => t.type === 'bar' && t.orientation === 'h'));
  const ours = fig.data[0] as Trace;
  assert.deepEqual(ours.y, ['accuracy', 'balanced accuracy', 'macro-F1']);
  assert.deepEqual(ours.x, [report.accuracy.value, report.balancedAccuracy.value, report.macroF1.value]);
  const err = ours.error_x as { array: (number | null)[]; arrayminus: (number | null)[] };
  assert.ok(Math.abs((err.array[0] as number) - (report.accuracy.high - report.accuracy.value)) < 1e-4);
  assert.ok(Math.abs((err.arrayminus[0] as number) - (report.accuracy.value - report.accuracy.low)) < 1e-4);
  assert.deepEqual(fig.data[2]?.x, [0.928, 0.932, 0.901, 0.968]);
  assert.deepEqual(fig.data[4]?.x, [0.907, 0.886, 0.909, 0.94]);
  assert.deepEqual(fig.data.map((t) => t.showlegend), [true, false, true, false, false]);
  assert.equal(title(layoutAxis(fig, 'xaxis3')), 'score');

  // Without a bootstrap the intervals are NaN: no error bars, still plain JSON.
  const bare = metricBarsFigure(evaluatePredictions(preds, { bootstrap: 0 }), { published: false });
  assertPlainJson(bare);
  assert.equal(bare.data.length, 3);
  assert.deepEqual((bare.data[0]?.error_x as { array: unknown[] }).array, [null, null, null]);
});

test('reliabilityFigure: accuracy per bin of the top probability against the diagonal, ECE and Brier in the title', () => {
  const preds: Prediction[] = [
    { trueIndex: 0, probs: [0.95, 0.03, 0.02], patientId: 'a' },
    { trueIndex: 1, probs: [0.9, 0.05, 0.05], patientId: 'b' },
    { trueIndex: 2, probs: [0.2, 0.25, 0.55], patientId: 'c' },
  ];
  const report = evaluatePredictions(preds, { bootstrap: 30, seed: 1 });
  const fig = reliabilityFigure(report.calibration);
  assertPlainJson(fig);
  assert.deepEqual(fig.data.map((t) => [t.type, t.name]), [
    ['scatter', 'perfectly calibrated'],
    ['bar', 'accuracy in the bin'],
    ['scatter', 'mean top probability'],
  ]);
  // Only the bins that hold images: 0.5-0.6 (one right) and 0.9-1.0 (one right, one wrong).
  const bars = fig.data[1] as Trace;
  assert.deepEqual((bars.x as number[]).map((x) => Math.round(x * 100) / 100), [0.55, 0.95]);
  assert.deepEqual(bars.y, [1, 0.5]);
  assert.deepEqual(bars.text, ['n = 1', 'n = 2'], 'each bin says how many images it holds');
  assert.deepEqual((fig.data[2]?.y as number[]).map((y) => Math.round(y * 1000) / 1000), [0.55, 0.925]);
  const c = report.calibration;
  assert.equal(title(fig.layout), `Reliability: ECE ${c.ece.value.toFixed(3)} [${c.ece.low.toFixed(3)}, ${c.ece.high.toFixed(3)}], Brier ${c.brier.value.toFixed(3)} [${c.brier.low.toFixed(3)}, ${c.brier.high.toFixed(3)}]`);
  // Without a bootstrap: no intervals in the title.
  assert.equal(title(reliabilityFigure(evaluatePredictions(preds, { bootstrap: 0 }).calibration).layout), `Reliability: ECE ${c.ece.value.toFixed(3)}, Brier ${c.brier.value.toFixed(3)}`);

  // A NaN saved to evaluation.json comes back as null: n/a in the title, no TypeError.
  const saved = JSON.parse(JSON.stringify({ ...c, ece: { value: Number.NaN, low: Number.NaN, high: Number.NaN } })) as typeof c;
  const fromJson = reliabilityFigure(saved);
  assertPlainJson(fromJson);
  assert.equal(title(fromJson.layout), `Reliability: ECE n/a, Brier ${c.brier.value.toFixed(3)} [${c.brier.low.toFixed(3)}, ${c.brier.high.toFixed(3)}]`);
});

test('mostConfidentMistakes and misclassifiedGalleryFigure', () => {
  const wrong = mostConfidentMistakes(predRows(), { limit: 2 });
  assert.deepEqual(wrong.map((r) => r.file), ['test/bacteria/f.jpeg', 'test/normal/c.jpeg']);
  const fig = misclassifiedGalleryFigure(
    wrong.map((r) => ({ pixels: new Uint8Array(4), size: 2, file: r.file, trueLabel: r.trueLabel, predictedLabel: r.predictedLabel, confidence: r[r.predictedLabel] })),
  );
  assertPlainJson(fig);
  assert.equal(fig.data.length, 2);
  assert.deepEqual((fig.layout.annotations as { text: string }[]).map((a) => a.text), [
    'bacteria → virus (90 %)<br>f.jpeg',
    'normal → bacteria (70 %)<br>c.jpeg',
  ]);
  // Three to a row, a long file name is shortened on its own line: the confidence stays whole.
  const long = misclassifiedGalleryFigure(
    [0.93, 0.92, 0.91].map((confidence) => ({ pixels: new Uint8Array(4), size: 2, file: `test/virus/person1234_virus_${'9'.repeat(30)}.jpeg`, trueLabel: 'virus' as const, predictedLabel: 'bacteria' as const, confidence })),
    { columns: 3 },
  );
  const [first, second] = ((long.layout.annotations as { text: string }[])[0]?.text ?? '').split('<br>');
  assert.equal(first, 'virus → bacteria (93 %)');
  assert.ok(second?.includes('…') && second.endsWith('.jpeg') && second.length === 33, second);
  assert.ok(String(long.data[0]?.hovertemplate).startsWith(`virus → bacteria (93 %)<br>person1234_virus_${'9'.repeat(30)}.jpeg<br>`));
});
