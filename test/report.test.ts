// HTML reports and notebook display: plotly inlined once, nothing fetched, escaping, the run report, and one real
// browser drawing every figure offline (skipped without Debian's chromium).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, test } from 'node:test';
import { drawnFigures, launchOffline, noChromium, openWatched } from './helpers/browser.js';
import { CLASSES, resolveConfig } from '../lib/config.js';
import { toCsv } from '../lib/csv.js';
import { figureHtml, forgetPlotly, liveChart, loadPlotly, plotlyIsLoaded, showFigure, showTable, toTable } from '../lib/display.js';
import { ConfigError } from '../lib/errors.js';
import type { EvaluateResult } from '../lib/evaluate.js';
import { readManifest } from '../lib/manifest.js';
import { evaluatePredictions, type Prediction } from '../lib/metrics.js';
import {
  confusionMatrixFigure,
  metricBarsFigure,
  reliabilityFigure,
  rocCurvesFromPredictions,
  rocFigure,
  sampleGridFigure,
  trainingCurvesFigure,
  type Figure,
} from '../lib/plots.js';
import { relabel } from '../lib/relabel.js';
import { comparisonTable, escapeScriptText, metricsTable, plotlyBundle, readModelEvaluation, renderHtmlReport, renderTableHtml, scriptJson, writeRunReport } from '../lib/report.js';
import type { EpochRecord, ModelCard } from '../lib/train.js';
import { datasetFiles, writeTree } from './helpers/fixtures.js';

let tmp: string;
let labeled: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-report-'));
  labeled = join(tmp, 'labeled');
  await writeTree(join(tmp, 'src'), await datasetFiles({ perClass: { train: 2, test: 2 } }));
  await relabel({ from: join(tmp, 'src'), out: labeled });
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const HISTORY: EpochRecord[] = [1, 2, 3].map((epoch) => ({
  epoch,
  learningRate: 1e-3 / epoch,
  loss: 1.1 / epoch,
  accuracy: 0.4 + epoch * 0.1,
  valLoss: 1.2 / epoch,
  valAccuracy: 0.3 + epoch * 0.1,
  valMacroF1: 0.25 + epoch * 0.1,
  valBalancedAccuracy: 0.3 + epoch * 0.1,
  seconds: 2.5,
  imagesPerSecond: 40,
  best: epoch !== 3,
}));

/** Predictions for every test image of the fixture: right for normal, half wrong for the rest. */
async function fixturePredictions(): Promise<{ rows: Record<string, string | number>[]; preds: Prediction[] }> {
  const test = (await readManifest(labeled)).filter((r) => r.split === 'test');
  const rows = test.map((r, i) => {
    const t = CLASSES.indexOf(r.label);
    const guess = t === 0 || i % 2 === 0 ? t : 3 - t;
    const probs = [0.1, 0.1, 0.1];
    probs[guess] = 0.8;
    return { file: r.file, patientId: r.patientId, trueLabel: r.label, predictedLabel: CLASSES[guess] as string, normal: probs[0]!, bacteria: probs[1]!, virus: probs[2]! };
  });
  const preds = rows.map((r) => ({ trueIndex: CLASSES.indexOf(r.trueLabel), probs: [r.normal, r.bacteria, r.virus], patientId: r.patientId, file: r.file }));
  return { rows, preds };
}

function someFigures(): Figure[] {
  const preds: Prediction[] = Array.from({ length: 30 }, (_, i) => {
    const t = i % 3;
    const probs = [0.2, 0.2, 0.2];
    probs[i % 5 === 0 ? (t + 1) % 3 : t] = 0.6;
    return { trueIndex: t, probs, patientId: `p${i >> 1}` };
  });
  const report = evaluatePredictions(preds, { bootstrap: 20 });
  const rows = preds.map((p) => ({ trueLabel: CLASSES[p.trueIndex]!, normal: p.probs[0]!, bacteria: p.probs[1]!, virus: p.probs[2]! }));
  const px = new Uint8Array(64 * 64).map((_, i) => (i * 7) % 256);
  return [
    trainingCurvesFigure(HISTORY),
    confusionMatrixFigure(report.confusion),
    rocFigure(rocCurvesFromPredictions(rows)),
    metricBarsFigure(report),
    reliabilityFigure(report.calibration),
    sampleGridFigure([{ pixels: px, size: 64, title: 'normal' }, { pixels: px.slice().reverse(), size: 64, title: 'virus' }]),
  ];
}

/** The document without the contents of its script elements (the plotly bundle holds URL strings in its code). */
function withoutScriptBodies(html: string): string {
  return html.replace(/(<script\b[^>]*>)[\s\S]*?(<\/script>)/gi, '$1$2');
}

function count(haystack: string, needle: string): number {
  let n = 0;
  for (let i = haystack.indexOf(needle); i !== -1; i = haystack.indexOf(needle, i + needle.length)) n++;
  return n;
}

test('plotlyBundle reads the installed minified plotly.js once, as text safe inside <script>', () => {
  const require = createRequire(import.meta.url);
  const pkg = JSON.parse(require('node:fs').readFileSync(require.resolve('plotly.js-dist/package.json'), 'utf8')) as { version: string };
  const b = plotlyBundle();
  assert.equal(b.version, pkg.version);
  assert.match(b.path, /plotly\.js-dist-min[/\\]plotly\.min\.js$/);
  assert.ok(b.text.length > 1_000_000 && b.text.length < 6_000_000, 'the minified bundle, about 4.8 MB');
  assert.ok(!/<\/script/i.test(b.text));
  assert.equal(plotlyBundle(), b, 'read once');
  assert.equal(escapeScriptText('a = "</script><!--"; b = "</SCRIPT>"'), 'a = "<\\/script><\\!--"; b = "<\\/SCRIPT>"');
  assert.equal(scriptJson({ s: '</script>\u2028\u2029&' }), '{"s":"\\u003c/script\\u003e\\u2028\\u2029\\u0026"}');
  assert.deepEqual(JSON.parse(scriptJson({ s: '</script>\u2028\u2029&' })), { s: '</script>\u2028\u2029&' });
});

test('renderHtmlReport: one self-contained document, plotly inlined once, nothing to fetch, everything escaped', () => {
  const figures = someFigures();
  const evil = 'x </script><script>alert(1)</script> & <b>';
  const hostile: Figure = { data: [{ type: 'bar', name: evil, x: ['a\u2028b'], y: [1] }], layout: { title: { text: evil } } };
  const html = renderHtmlReport({
    title: `Run ${evil}`,
    subtitle: 'sub <i>title</i>',
    generatedAt: '2025-01-01T00:00:00.000Z',
    sections: [
      { heading: 'Curves', text: 'first paragraph\nsame paragraph\n\nsecond <paragraph>', figure: figures[0] as Figure },
      { heading: 'Table only', table: { columns: ['k', 'v'], rows: [['a </script>', 1234567], ['b', 0.123456], ['c', null], ['d', 1e-5]] } },
      { heading: 'Many', figures: figures.slice(1) },
      { heading: `Evil ${evil}`, figure: hostile },
    ],
  });
  const bundle = plotlyBundle().text;
  assert.equal(count(html, bundle.slice(0, 400)), 1, 'the bundle is inlined exactly once');
  assert.equal(count(html, bundle.slice(-400)), 1);
  const head = html.slice(0, html.indexOf('</head>'));
  assert.ok(head.includes(bundle.slice(1000, 1400)), 'the bundle is in the head');

  // Well-formed enough: one html/head/body, balanced scripts, one div and one JSON per figure.
  for (const tag of ['<html', '<head>', '<body>', '</html>', '</head>', '</body>']) assert.equal(count(html, tag), 1, tag);
  assert.ok(html.startsWith('<!DOCTYPE html>\n<html lang="en">'));
  const figureCount = figures.length + 1;
  assert.equal(count(html, '<div class="plotly-figure"'), figureCount);
  assert.equal(count(html, '<script type="application/json"'), figureCount);
  assert.equal(count(html, '<script'), figureCount + 2);
  assert.equal(count(html, '</script>'), figureCount + 2, 'no </script> other than the closing tags');

  // The embedded figures are exact.
  const specs = [...html.matchAll(/<script type="application\/json" id="(figure-\d+)-data">([^<]*)<\/script>/g)];
  assert.deepEqual(specs.map((m) => m[1]), Array.from({ length: figureCount }, (_, i) => `figure-${i + 1}`));
  assert.deepEqual(JSON.parse(specs[0]![2]!), { data: figures[0]!.data, layout: figures[0]!.layout });
  assert.deepEqual(JSON.parse(specs.at(-1)![2]!), JSON.parse(JSON.stringify(hostile)));
  assert.ok(!html.includes('\u2028'));

  // Text is escaped everywhere outside the scripts.
  const markup = withoutScriptBodies(html);
  assert.ok(!markup.includes('<script>alert(1)'));
  assert.ok(!markup.includes('<b>') && !markup.includes('<i>'));
  assert.ok(markup.includes('<title>Run x &lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;</title>'));
  assert.ok(markup.includes('<p>first paragraph<br>\nsame paragraph</p>\n<p>second &lt;paragraph&gt;</p>'));
  assert.ok(markup.includes('<td>a &lt;/script&gt;</td><td class="num">1,234,567</td>'));
  assert.ok(markup.includes('<td class="num">0.1235</td>'));
  assert.ok(markup.includes('<td class="num">1.00e-5</td>'), 'small numbers are not rounded to 0');
  assert.ok(markup.includes('<td>—</td>'));

  // Nothing is fetched: no src/href/url() to the network, no external stylesheet, and a policy that forbids requests.
  assert.doesNotMatch(markup, /\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:[a-z]+:)?\/\//i);
  assert.doesNotMatch(markup, /<link\b|@import|url\(\s*["']?(?:https?:)?\/\//i);
  assert.doesNotMatch(markup, /<(?:img|iframe|object|embed|audio|video|source)\b/i);
  assert.match(markup, /<meta http-equiv="Content-Security-Policy" content="default-src 'none';/);
  const hrefs = [...markup.matchAll(/\bhref="([^"]*)"/g)].map((m) => m[1]);
  assert.ok(hrefs.length === 4 && hrefs.every((h) => h?.startsWith('#section-')), 'only in-page links (the table of contents)');
});

test('writeRunReport: the report of a run folder, with data, curves, metrics, ROC and the most confident mistakes', async () => {
  const runDir = join(tmp, 'run');
  await mkdir(join(runDir, 'model'), { recursive: true });
  await writeFile(join(runDir, 'history.json'), JSON.stringify(HISTORY));
  const card = {
    format: 'pneumotype-model',
    version: 1,
    classes: [...CLASSES],
    imageSize: 32,
    model: { name: 'tiny', imageSize: 32, summary: { name: 'tiny', imageSize: 32, parameters: 24939, trainableParameters: 24699, flops: 31_000_000, layers: 12 } },
    // The card is the best epoch's (2): the run went on to epoch 3.
    training: { config: resolveConfig('smoke'), epoch: 2, epochs: 3, seconds: 5, backend: 'cpu', augment: false, initFrom: null },
    data: { labeledDir: labeled, manifestSha256: 'x', trainImages: 10, valImages: 2 },
    validation: { accuracy: 0.5, macroF1: 0.45, balancedAccuracy: 0.5, loss: 0.6 },
    createdAt: '2025-01-01T00:00:00.000Z',
  } as unknown as ModelCard;
  await writeFile(join(runDir, 'model', 'pneumotype.json'), JSON.stringify(card));

  // Without an evaluation: configuration, data and training only, and a note saying how to get the rest.
  const first = await writeRunReport({ runDir, generatedAt: 'then' });
  assert.equal(first.out, join(runDir, 'report.html'));
  assert.deepEqual(first.sections, ['Overview', 'Data', 'Training', 'Left out']);
  assert.equal(first.figures, 2);
  assert.match(first.notes[0] ?? '', /^no evaluation: run `pneumotype evaluate --model .*model --split val --out .*evaluation\.json --predictions .*predictions\.csv` \(or --split test with --data naming the test images\) and make the report again/);

  // With evaluation.json and predictions.csv in the run folder (the defaults).
  const { rows, preds } = await fixturePredictions();
  const evaluation: EvaluateResult = { split: 'test', model: join(runDir, 'model'), data: labeled, ...evaluatePredictions(preds, { bootstrap: 30 }), failed: [] };
  await writeFile(join(runDir, 'evaluation.json'), JSON.stringify(evaluation));
  await writeFile(join(runDir, 'predictions.csv'), toCsv(['file', 'patientId', 'trueLabel', 'predictedLabel', 'normal', 'bacteria', 'virus'], rows));
  // A folder where the report has to go is refused before anything is read.
  await mkdir(join(tmp, 'out', 'a-folder.html'), { recursive: true });
  await assert.rejects(writeRunReport({ runDir, out: join(tmp, 'out', 'a-folder.html'), gallery: 3 }), {
    name: 'OutputError',
    message: `"${join(tmp, 'out', 'a-folder.html')}" is a folder: expected the path of a file to write`,
  });
  await rm(join(tmp, 'out', 'a-folder.html'), { recursive: true });
  const r = await writeRunReport({ runDir, out: join(tmp, 'out', 'report.html'), gallery: 3 });
  assert.deepEqual(r.sections, ['Overview', 'Data', 'Training', 'Evaluation', 'ROC curves', 'Most confident mistakes']);
  assert.equal(r.figures, 8);
  assert.deepEqual(r.notes, []);
  const html = await readFile(r.out, 'utf8');
  assert.equal(Buffer.byteLength(html), r.bytes);
  assert.equal(count(html, '<div class="plotly-figure"'), 8);
  assert.ok(html.includes('<td>calibration: expected calibration error</td>'), 'calibration in the metrics table');
  assert.ok(html.includes('Reliability: ECE '), 'and its reliability diagram');
  assert.ok(html.includes('<td>learningRate</td><td class="num">0.001</td>'));
  assert.ok(html.includes('<td>training</td><td>3 of 3 epochs in 8 s (best: epoch 2)</td>'), 'the whole run, not only up to its best epoch');
  assert.ok(!html.includes('<td>augment</td>'), 'augmentation is shown once, as the run used it');
  assert.equal(count(html, '<td>model</td>'), 1, 'the model named once');
  assert.ok(!html.includes('<td>imageSize</td>'), 'the image size shown once, as "image size"');
  assert.ok(html.includes('Test metrics with 95 % intervals'));
  assert.ok(html.includes('<td>normal vs pneumonia (pneumonia positive): sensitivity</td>'));
  assert.ok(html.includes('<td class="num">0.932</td>'), 'the published figure is in the metrics table');
  assert.deepEqual((await readdir(join(tmp, 'out'))).sort(), ['report.html'], 'written atomically, no temporary left');
  const gallery = [...html.matchAll(/<script type="application\/json" id="figure-8-data">([^<]*)<\/script>/g)][0]?.[1];
  const galleryFigure = JSON.parse(gallery ?? 'null') as Figure;
  assert.equal(galleryFigure.data.length, 2, 'the two mistakes of the fixture');

  // An evaluation whose images folder is not where it says (made elsewhere, a relative path): a folder given wins.
  const moved = { ...evaluation, data: 'data/labeled-made-elsewhere' };
  const lost = await writeRunReport({ runDir, evaluation: moved, gallery: 3, out: join(tmp, 'out', 'f.html') });
  assert.ok(!lost.sections.includes('Most confident mistakes') && lost.notes.some((n) => n.startsWith('gallery: ')));
  const found = await writeRunReport({ runDir, evaluation: moved, labeledDir: labeled, gallery: 3, out: join(tmp, 'out', 'g.html') });
  assert.ok(found.sections.includes('Most confident mistakes'), found.notes.join('\n'));
  // A zip evaluated: its data is the archive, its images are where it was extracted (imagesDir), and the report
  // says how many images could not be read.
  const zipped = { ...evaluation, data: join(tmp, 'ChestXRay2017.zip'), imagesDir: labeled, failed: [{ file: 'test/virus/x.jpeg', reason: 'truncated' }] };
  const fromZip = await writeRunReport({ runDir, evaluation: zipped, gallery: 3, out: join(tmp, 'out', 'h.html') });
  assert.ok(fromZip.sections.includes('Most confident mistakes'), fromZip.notes.join('\n'));
  assert.ok((await readFile(fromZip.out, 'utf8')).includes(`${evaluation.n} test images. 1 more could not be used and are left out of every figure (listed in the evaluation&#39;s &quot;failed&quot;).`));
  // An evaluation that lacks what the report shows is named, with the field, instead of a TypeError.
  for (const [partial, what] of [
    [{ n: 5, confusion: [[1, 0, 0], [0, 1, 0], [0, 0, 1]] }, '"accuracy" (an object with a numeric value)'],
    [{ ...evaluation, confusion: [[1, 0], [0, 1]] }, '3x3 confusion matrix'],
    [{ ...evaluation, binary: { normalVsPneumonia: evaluation.binary.normalVsPneumonia } }, '"binary.bacteriaVsVirus.accuracy" (an object with a numeric value)'],
  ] as const) {
    await assert.rejects(writeRunReport({ runDir, evaluation: partial as unknown as EvaluateResult, gallery: 0, out: join(tmp, 'out', 'x.html') }), {
      name: 'ConfigError',
      message: `the evaluation "<object>" has no ${what}: expected the JSON of \`pneumotype evaluate\``,
    });
  }

  // An evaluation passed as a path, and a run folder that is not one.
  const again = await writeRunReport({ runDir, evaluation: join(runDir, 'evaluation.json'), gallery: 0, out: join(tmp, 'out', 'b.html') });
  assert.ok(!again.sections.includes('Most confident mistakes'));
  // An evaluation with metrics per group (evaluate --groups): a table of them after the evaluation.
  const byGroup = {
    'full-res': { n: 5, accuracy: 0.8, balancedAccuracy: 0.75, macroF1: 0.7, recall: { normal: 1, bacteria: 0.5, virus: 1 }, support: { normal: 2, bacteria: 2, virus: 1 }, bacteriaVsVirusAuc: 0.5 },
    copies: { n: 2, accuracy: 0.5, balancedAccuracy: 0.5, macroF1: 0.3333, recall: { normal: 0, bacteria: 0.5, virus: 0 }, support: { normal: 0, bacteria: 2, virus: 0 }, bacteriaVsVirusAuc: null },
  };
  const grouped = await writeRunReport({ runDir, evaluation: { ...evaluation, byGroup }, gallery: 0, out: join(tmp, 'out', 'e.html') });
  assert.deepEqual(grouped.sections, ['Overview', 'Data', 'Training', 'Evaluation', 'Metrics per group', 'ROC curves']);
  const groupedHtml = await readFile(grouped.out, 'utf8');
  assert.ok(groupedHtml.includes('<th scope="col">bacteria vs virus AUC</th>'));
  assert.ok(groupedHtml.includes('<tr><td>full-res</td><td class="num">5</td><td>2 / 2 / 1</td><td class="num">0.800</td><td class="num">0.750</td><td class="num">1.000</td><td class="num">0.500</td><td class="num">1.000</td><td class="num">0.500</td></tr>'));
  assert.ok(groupedHtml.includes('<tr><td>copies</td><td class="num">2</td><td>0 / 2 / 0</td><td class="num">0.500</td><td class="num">0.500</td><td>—</td><td class="num">0.500</td><td>—</td><td>—</td></tr>'), 'no recall without images of a class, no AUC without both pneumonia classes');
  assert.ok(!groupedHtml.includes('<th scope="col">macro-F1</th>'), 'no macro-F1 per group: a class a group lacks would count as 0');
  // The copy-pipeline caveat stands in for the per-group table where there is none.
  const caveat = 'Caveat: copies of this dataset circulate that were made by different pipelines whose traces go with the label';
  assert.ok(!groupedHtml.includes(caveat) && html.includes(caveat));
  // Not a medical device: under the title and in the footer of every run report.
  const notice = 'Research and teaching software, not a medical device: not clinically validated, not for diagnosis or treatment.';
  assert.equal(count(html, notice), 2);
  assert.ok(html.includes(`<p class="notice" role="note">${notice}</p>`));
  // The published figures are named with where they were measured.
  assert.ok(html.includes('measured on the official test split (624 images): shown for orientation') && html.includes('Kermany et al. 2018 (their test split, 624 images)'));
  // An evaluation.json from before calibration was measured: the report leaves calibration out.
  const { calibration: _, ...older } = evaluation;
  await writeFile(join(tmp, 'older-evaluation.json'), JSON.stringify(older));
  const old = await writeRunReport({ runDir, evaluation: join(tmp, 'older-evaluation.json'), gallery: 0, out: join(tmp, 'out', 'c.html') });
  assert.equal(old.figures, 6);
  const oldHtml = await readFile(old.out, 'utf8');
  assert.ok(!oldHtml.includes('calibration: expected calibration error') && !oldHtml.includes('Reliability'));
  assert.ok(oldHtml.includes('<td>calibration</td><td>none</td>'), 'an uncalibrated model says so in the settings');
  // A model calibrated on the validation images, evaluated on them: the report says its figures are optimistic.
  const figures = { ece: 0.02, brier: 0.3, logLoss: 0.5 };
  // With an augmentation, shown for reading (steps that are off left out).
  const augment = { rotateDegrees: 7, jpegQuality: [40, 95], flip: false, noise: 0, localContrast: null };
  await writeFile(join(runDir, 'model', 'pneumotype.json'), JSON.stringify({ ...card, training: { ...card.training, augment }, calibration: { temperature: 1.5, split: 'val', images: 12, before: { ...figures, ece: 0.09 }, after: figures, crossFitted: { ...figures, ece: 0.031 } } }));
  await writeFile(join(tmp, 'val-evaluation.json'), JSON.stringify({ ...evaluation, split: 'val' }));
  const calibrated = await writeRunReport({ runDir, evaluation: join(tmp, 'val-evaluation.json'), gallery: 0, out: join(tmp, 'out', 'd.html') });
  const calibratedHtml = await readFile(calibrated.out, 'utf8');
  assert.ok(calibratedHtml.includes('<td>calibration</td><td>temperature 1.500, fitted on 12 val images</td>'));
  assert.ok(calibratedHtml.includes('<td>augmentation</td><td>rotateDegrees 7, jpegQuality 40-95</td>'));
  // A validation evaluation says what that split is, and that the published figures are not of it.
  assert.ok(calibratedHtml.includes('The validation split: ') && calibratedHtml.includes('carved from the official train split, so from the same sources'));
  assert.ok(calibratedHtml.includes('measured on the official test split (624 images), not on these val images'));
  assert.ok(calibratedHtml.includes("The temperature of this model was fitted on these val images, so their calibration figures may be optimistic: cross-fitted by patient (fitted on half the patients, measured on the other), the expected calibration error is 0.031 (0.090 before calibration)."));
  // An evaluation that carries its caveats (evaluate writes them): shown as they are, the epoch's choice included.
  const caveats = ['the validation split chose this model\'s epoch (2 of 2, the best validation macro-F1), so its scores are optimistic', 'the temperature (1.500) was fitted on these 12 images'];
  await writeFile(join(tmp, 'val-caveats.json'), JSON.stringify({ ...evaluation, split: 'val', caveats }));
  const withCaveats = await readFile((await writeRunReport({ runDir, evaluation: join(tmp, 'val-caveats.json'), gallery: 0, out: join(tmp, 'out', 'caveats.html') })).out, 'utf8');
  assert.ok(withCaveats.includes('Optimistic figures: The validation split chose this model&#39;s epoch (2 of 2, the best validation macro-F1), so its scores are optimistic. The temperature (1.500) was fitted on these 12 images.'));
  assert.ok(!withCaveats.includes('The temperature of this model was fitted on these val images'));
  // An evaluation of other weights (another model, or this one before a calibration changed them) is refused.
  await writeFile(join(runDir, 'model', 'model.json'), JSON.stringify({ modelTopology: {}, weightsManifest: [{ paths: ['weights.bin'], weights: [{ name: 'w', shape: [1], dtype: 'float32' }] }] }));
  await writeFile(join(runDir, 'model', 'weights.bin'), Buffer.from([1, 2, 3, 4]));
  const own = createHash('sha256').update(Buffer.from([1, 2, 3, 4])).digest('hex');
  const other = createHash('sha256').update('other weights').digest('hex');
  await writeFile(join(tmp, 'other-model.json'), JSON.stringify({ ...evaluation, weightsSha256: other }));
  await assert.rejects(writeRunReport({ runDir, evaluation: join(tmp, 'other-model.json'), out: join(tmp, 'out', 'other-model.html') }), {
    name: 'ConfigError',
    message: `the evaluation "${join(tmp, 'other-model.json')}" is of other weights than the model in "${join(runDir, 'model')}" (SHA-256 ${other.slice(0, 12)}… against ${own.slice(0, 12)}…): evaluate this model again, or report the run or model folder that was evaluated`,
  });
  assert.ok(!existsSync(join(tmp, 'out', 'other-model.html')));
  await writeFile(join(tmp, 'same-model.json'), JSON.stringify({ ...evaluation, weightsSha256: own }));
  await writeRunReport({ runDir, evaluation: join(tmp, 'same-model.json'), gallery: 0, out: join(tmp, 'out', 'same-model.html') });
  await rm(join(runDir, 'model', 'model.json'));
  await rm(join(runDir, 'model', 'weights.bin'));
  await assert.rejects(writeRunReport({ runDir: join(tmp, 'nothing') }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.message, `no training history at ${JSON.stringify(join(tmp, 'nothing', 'history.json'))} and no model card: expected the folder of a \`pneumotype train\` run (history.json, model/) or a model folder (pneumotype.json, model.json)`);
    return true;
  });
  // A model folder (models/default: a card, no history): the card's best epoch, no training curves, a note why.
  const modelDir = join(tmp, 'model-only');
  await mkdir(modelDir, { recursive: true });
  await writeFile(join(modelDir, 'pneumotype.json'), JSON.stringify(card));
  const modelOnly = await writeRunReport({ runDir: modelDir, evaluation, gallery: 0, out: join(tmp, 'out', 'm.html') });
  assert.deepEqual(modelOnly.sections, ['Overview', 'Data', 'Evaluation', 'Left out']);
  assert.deepEqual(modelOnly.notes, [`no training history at ${JSON.stringify(join(modelDir, 'history.json'))}: the training curves are left out (the model card records its best epoch only)`]);
  const modelOnlyHtml = await readFile(modelOnly.out, 'utf8');
  assert.ok(modelOnlyHtml.includes('Best epoch 2: validation accuracy 0.500, macro-F1 0.450, balanced accuracy 0.500.'), 'the card\'s best epoch');
  assert.ok(modelOnlyHtml.includes('<td>training</td><td>best epoch 2 of 3, reached in 5 s (no history.json: later epochs are not recorded)</td>'));
  // Without --out, a model folder's report goes to the working directory, not into the (committed) model folder;
  // a trailing slash names the same folder.
  const cwd = process.cwd();
  process.chdir(tmp);
  try {
    const here = await writeRunReport({ runDir: `${modelDir}/`, gallery: 0 });
    assert.equal(here.out, join(tmp, 'model-only-report.html'));
    // The run folder as the reader should see it: relative to where the report was made, not this machine's path.
    assert.ok((await readFile(here.out, 'utf8')).includes('Run folder: model-only<br>'));
    assert.ok(here.notes.some((n) => n.includes('--out evaluation.json')), here.notes.join('\n'));
  } finally {
    process.chdir(cwd);
  }
  const unevaluated = await writeRunReport({ runDir: modelDir, gallery: 0, out: join(tmp, 'out', 'n.html') });
  assert.ok(unevaluated.notes.includes(`no evaluation: run \`pneumotype evaluate --model ${modelDir} --split val --out evaluation.json --predictions predictions.csv\` (or --split test with --data naming the test images), then \`pneumotype report --run ${modelDir} --eval evaluation.json --predictions predictions.csv\``), unevaluated.notes.join('\n'));
  await writeFile(join(tmp, 'bad.json'), '{');
  await assert.rejects(writeRunReport({ runDir, evaluation: join(tmp, 'bad.json') }), (err: unknown) =>
    err instanceof ConfigError && err.message.startsWith(`evaluation ${JSON.stringify(join(tmp, 'bad.json'))} is not valid JSON: `));
});

// models/default ships its validation evaluation and predictions: its whole report comes from the folder alone, and
// a missing image folder is one note, not one per image of the gallery.
test('the shipped model\'s report is drawn from its folder alone, with one note for the absent images', async () => {
  const shipped = join(process.cwd(), 'models', 'default');
  const cwd = process.cwd();
  const elsewhere = await mkdtemp(join(tmp, 'elsewhere-'));
  process.chdir(elsewhere); // where data/labeled is not
  try {
    const r = await writeRunReport({ runDir: shipped, out: join(elsewhere, 'default.html') });
    assert.deepEqual(r.sections, ['Overview', 'Training', 'Evaluation', 'Metrics per group', 'ROC curves', 'Left out']);
    assert.deepEqual(r.notes, [
      `no dataset summary at ${JSON.stringify(join(elsewhere, 'data', 'labeled', 'summary.json'))}: the data section is left out`,
      `gallery: the evaluated images are not at ${JSON.stringify(join(elsewhere, 'data', 'labeled'))}: the gallery of mistakes is left out (name their folder with --data)`,
    ]);
  } finally {
    process.chdir(cwd);
  }
  // From notebooks/ (where Jupyter runs a kernel, and notebooks name folders absolutely): the folder relative to the
  // project, not this machine's path.
  process.chdir(join(cwd, 'notebooks'));
  try {
    const fromNotebook = await writeRunReport({ runDir: shipped, gallery: 0, out: join(elsewhere, 'nb.html') });
    assert.ok((await readFile(fromNotebook.out, 'utf8')).includes('Run folder: models/default<br>'));
  } finally {
    process.chdir(cwd);
  }
  // Its evaluation, read for a program (or a notebook's comparison table), checked against its weights.
  const evaluation = await readModelEvaluation();
  assert.equal(evaluation?.n, 523);
  assert.equal(evaluation?.accuracy.value.toFixed(3), '0.801');
  assert.equal(await readModelEvaluation(elsewhere), undefined, 'a folder without evaluation.json');
  const copy = join(elsewhere, 'copy');
  await cp(shipped, copy, { recursive: true });
  const changed = Buffer.from(await readFile(join(copy, 'weights.bin')));
  changed[0] = (changed[0] ?? 0) ^ 1;
  await writeFile(join(copy, 'weights.bin'), changed);
  await assert.rejects(readModelEvaluation(copy), {
    name: 'ConfigError',
    message: new RegExp(`^the evaluation ${JSON.stringify(join(copy, 'evaluation.json')).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is of other weights than the model in `),
  });
  // A run folder keeps its evaluation beside model/: checked against that model.
  const runLike = join(elsewhere, 'run-like');
  await cp(copy, join(runLike, 'model'), { recursive: true });
  await writeFile(join(runLike, 'evaluation.json'), await readFile(join(shipped, 'evaluation.json')));
  await assert.rejects(readModelEvaluation(runLike), {
    name: 'ConfigError',
    message: new RegExp(` is of other weights than the model in ${JSON.stringify(join(runLike, 'model')).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} `),
  });
  const table = comparisonTable({ 'this run': evaluation, missing: undefined, 'models/default': evaluation });
  assert.deepEqual(table.columns, ['metric', 'this run', 'models/default']);
  assert.deepEqual(table.rows.map((r) => r[0]), [
    'images (split)', 'accuracy (3 classes)', 'balanced accuracy', 'macro-F1', 'normal: recall', 'bacteria: recall', 'virus: recall',
    'normal vs pneumonia: AUC', 'bacteria vs virus: AUC', 'calibration: expected calibration error',
  ]);
  assert.deepEqual(table.rows[0], ['images (split)', '523 (val)', '523 (val)']);
  assert.deepEqual(table.rows[1], ['accuracy (3 classes)', '0.801 [0.757, 0.842]', '0.801 [0.757, 0.842]']);
  // Another evaluation of the same model (a test split's, given with --eval) does not take the folder's validation
  // predictions for its ROC curves and gallery: left out and said, or refused when the CSV was named.
  const other = { ...evaluation!, split: 'test', n: 624, confusion: [[200, 20, 14], [5, 210, 27], [4, 40, 104]] };
  const shippedRows = '523 rows, confusion matrix [[133,0,2],[3,200,50],[6,43,86]]; the evaluation: 624 images, [[200,20,14],[5,210,27],[4,40,104]]';
  const mixed = await writeRunReport({ runDir: shipped, evaluation: other, out: join(elsewhere, 'mixed.html') });
  assert.ok(!mixed.sections.includes('ROC curves'), mixed.sections.join(', '));
  assert.ok(mixed.notes.includes(`${JSON.stringify(join(shipped, 'predictions.csv'))} is not of the evaluation given (${shippedRows}): ` +
    'the ROC curves and the gallery of mistakes are left out (give the CSV that evaluate wrote with it: --predictions)'), mixed.notes.join('\n'));
  await assert.rejects(writeRunReport({ runDir: shipped, evaluation: other, predictionsCsv: join(shipped, 'predictions.csv'), out: join(elsewhere, 'm2.html') }), {
    name: 'ConfigError',
    message: `the predictions ${JSON.stringify(join(shipped, 'predictions.csv'))} are not of the evaluation given (${shippedRows}): give the CSV that evaluate wrote with it (--predictions)`,
  });
});

/** A stand-in for tslab's display: records what was written. */
function recorder(): { html: (s: string) => void; out: string[] } {
  const out: string[] = [];
  return { out, html: (s: string) => out.push(s) };
}

test('display: plotly inlined with the first figure only, tables escaped, live charts redrawn', () => {
  forgetPlotly();
  const bundleStart = plotlyBundle().text.slice(0, 400);
  const d = recorder();
  const [a, b] = someFigures();
  showFigure(d, a as Figure);
  showFigure(d, b as Figure);
  assert.equal(d.out.length, 2);
  assert.equal(count(d.out[0]!, bundleStart), 1);
  assert.equal(count(d.out[1]!, bundleStart), 0);
  assert.ok(plotlyIsLoaded());
  for (const html of d.out) {
    assert.equal(count(html, '<div class="plotly-figure"'), 1);
    assert.match(html, /window\.Plotly\.newPlot\(div, spec\.data, spec\.layout, \{"responsive":true,"displaylogo":false/);
  }
  loadPlotly(d);
  assert.equal(d.out.length, 2, 'already loaded: nothing written');
  loadPlotly(d, { force: true });
  assert.equal(count(d.out[2]!, bundleStart), 1);

  // A live chart made after plotly was loaded redraws without it; made before, it carries it on every redraw.
  const live = recorder();
  const chart = liveChart(live, trainingCurvesFigure([]));
  chart.update(trainingCurvesFigure(HISTORY));
  assert.equal(live.out.length, 2);
  assert.ok(live.out.every((h) => !h.includes(bundleStart)));
  assert.ok(live.out[1]!.includes('"validation macro-F1"'));
  forgetPlotly();
  const owner = recorder();
  liveChart(owner, a as Figure).update(b as Figure);
  assert.ok(owner.out.length === 2 && owner.out.every((h) => count(h, bundleStart) === 1));

  const t = recorder();
  showTable(t, [{ epoch: 1, note: '<b>x</b>' }, { epoch: 2, extra: { a: 1 } }]);
  assert.equal(
    t.out[0],
    '<div style="overflow-x:auto"><table>\n<thead><tr><th scope="col">epoch</th><th scope="col">note</th><th scope="col">extra</th></tr></thead>\n' +
      '<tbody>\n<tr><td class="num">1</td><td>&lt;b&gt;x&lt;/b&gt;</td><td>—</td></tr>\n<tr><td class="num">2</td><td>—</td><td>{&quot;a&quot;:1}</td></tr>\n</tbody>\n</table></div>',
  );
  assert.deepEqual(toTable({ columns: ['a'], rows: [[1]] }), { columns: ['a'], rows: [[1]] });
  assert.throws(
    () => figureHtml(a as Figure, { id: 'x"><script>', includeBundle: false }),
    (err: unknown) => err instanceof ConfigError && err.message === 'figure id "x\\"><script>" is not valid: expected a letter, then letters, digits, "-" or "_"',
  );
});

test('a real browser draws every figure offline, with no request and no console error', { timeout: 180_000 }, async (t) => {
  const missing = noChromium();
  if (missing) {
    t.skip(missing);
    return;
  }
  const dir = join(tmp, 'browser');
  await mkdir(dir, { recursive: true });

  // The report, and a page that renders notebook outputs the way JupyterLab does: HTML set on a detached element,
  // its scripts recreated so that they run, the element attached later; a live chart's redraw replaces its output.
  const figures = someFigures();
  await writeFile(join(dir, 'report.html'), renderHtmlReport({ title: 'Browser check', sections: figures.map((f, i) => ({ heading: `Figure ${i + 1}`, figure: f })) }));
  forgetPlotly();
  const outputs = recorder();
  showFigure(outputs, figures[0] as Figure);
  const live = recorder();
  const chart = liveChart(live, trainingCurvesFigure(HISTORY.slice(0, 1)));
  chart.update(trainingCurvesFigure(HISTORY));
  showFigure(outputs, figures[1] as Figure);
  const notebook = `<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><div id="cells"></div><script>
const outputs = ${scriptJson([outputs.out[0], live.out[0], outputs.out[1]])};
const redraw = ${scriptJson(live.out[1])};
function render(html) {
  const host = document.createElement('div');
  host.innerHTML = html;
  for (const old of host.querySelectorAll('script')) {
    const s = document.createElement('script');
    for (const a of old.attributes) s.setAttribute(a.name, a.value);
    s.textContent = old.textContent;
    old.replaceWith(s);
  }
  return host;
}
const hosts = outputs.map(render);
setTimeout(() => {
  for (const h of hosts) document.getElementById('cells').appendChild(h);
  setTimeout(() => hosts[1].replaceWith(render(redraw)), 50);
}, 50);
</script></body></html>`;
  await writeFile(join(dir, 'notebook.html'), notebook);

  const context = await launchOffline(dir, { width: 1100, height: 900 });
  try {
    for (const [file, expected] of [['report.html', figures.length], ['notebook.html', 3]] as const) {
      const url = pathToFileURL(join(dir, file)).href;
      const { page, requests, problems } = await openWatched(context, url);
      // Every figure drawn; in the notebook, the live chart (the second output) redrawn with the whole history.
      const drawn = await drawnFigures(page, expected, `${file !== 'notebook.html'} || divs[1]?.data?.[0]?.x?.length === 3`);
      assert.equal(drawn.length, expected, file);
      assert.ok(drawn.every((n) => n >= 1), `${file}: every figure has its svg.main-svg`);
      const shot = join(dir, `${file}.png`);
      await page.screenshot({ path: shot, fullPage: file === 'notebook.html' });
      const png = await readFile(shot);
      assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]);
      if (process.env.PNEUMOTYPE_SCREENSHOT_DIR) await writeFile(join(process.env.PNEUMOTYPE_SCREENSHOT_DIR, `${file}.png`), png);
      assert.deepEqual(problems, [], `${file}: console errors`);
      assert.deepEqual(requests, [url], `${file}: the only request is the file itself`);
      await page.close();
    }
  } finally {
    await context.close();
  }
});

test('the metrics table gives no recall or F1 for a class without images, instead of a score of 0', () => {
  const preds: Prediction[] = [
    { file: 'a', patientId: 'p1', trueIndex: 0, probs: [0.8, 0.1, 0.1] },
    { file: 'b', patientId: 'p2', trueIndex: 1, probs: [0.1, 0.8, 0.1] },
    { file: 'c', patientId: 'p3', trueIndex: 1, probs: [0.1, 0.2, 0.7] },
  ];
  const table = metricsTable(evaluatePredictions(preds, { bootstrap: 20, seed: 1 }));
  const row = (name: string): readonly unknown[] | undefined => table.rows.find((r) => r[0] === name);
  assert.deepEqual(row('virus: recall'), ['virus: recall', 'n/a (no images)', 'n/a', null]);
  assert.deepEqual(row('virus: F1'), ['virus: F1', 'n/a (no images)', 'n/a', null]);
  assert.equal(row('bacteria: recall')?.[1], '0.500');
});

test('renderTableHtml right-aligns numbers, and numbers formatted as text only in columns of nothing else', () => {
  const html = renderTableHtml({
    columns: ['group', 'accuracy', 'learning rate', 'note'],
    rows: [
      ['2017', '0.816', '1.00e-3', 1349],
      ['full-res', '1.000', '1.00e-4', 'n/a'],
      ['copies', null, '5.00e-4', null],
    ],
  });
  const cells = [...html.matchAll(/<td( class="num")?>([^<]*)<\/td>/g)].map((m) => `${m[1] ? 'R' : 'L'} ${m[2]}`);
  assert.deepEqual(cells, [
    'L 2017', 'R 0.816', 'R 1.00e-3', 'R 1,349',
    'L full-res', 'R 1.000', 'R 1.00e-4', 'L n/a',
    'L copies', 'L —', 'R 5.00e-4', 'L —',
  ]);
});
