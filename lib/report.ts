// Self-contained HTML reports: plotly.js inlined once, figures as embedded JSON, no request to anywhere.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, isAbsolute, join, normalize, relative, resolve, sep } from 'node:path';
import { readModelArtifacts, weightsDigest } from './checkpoint.js';
import { CLASSES } from './config.js';
import { ConfigError, messageOf, quote } from './errors.js';
import { checkOutputFile, exists, projectRoot, writeFileAtomic } from './fsx.js';
import { decodeGray } from './images.js';
import { DEFAULT_MODEL_DIR, type EvaluateResult, type GroupMetrics } from './evaluate.js';
import { calibrationOf, confusionMatrix, type EvaluationReport, type Interval } from './metrics.js';
import {
  classCounts,
  classDistributionFigure,
  confusionMatrixFigure,
  metricBarsFigure,
  misclassifiedGalleryFigure,
  mostConfidentMistakes,
  parsePredictionsCsv,
  PUBLISHED,
  reliabilityFigure,
  rocCurvesFromPredictions,
  rocFigure,
  trainingCurvesFigure,
  type Figure,
  type MisclassifiedSample,
  type PredictionRow,
} from './plots.js';
import type { RelabelSummary } from './relabel.js';
import { historyIsOfCard, type EpochRecord, type ModelCard } from './train.js';
import { maskUserInfo } from './fetch.js';

/** A table of a report or a notebook: a header row and rows of cells (null shows as an em dash). */
export interface Table {
  readonly columns: readonly string[];
  readonly rows: readonly (readonly (string | number | null)[])[];
}

/** One section of a report, shown in this order: text (plain, escaped; blank lines separate paragraphs), figures, table. */
export interface ReportSection {
  readonly heading: string;
  readonly text?: string;
  readonly table?: Table;
  readonly figure?: Figure;
  /** More figures after the first, drawn one below the other. */
  readonly figures?: readonly Figure[];
}

export interface HtmlReportOptions {
  readonly title: string;
  readonly subtitle?: string;
  /** A line that must not be missed (shown under the subtitle, set apart, and again in the footer). */
  readonly notice?: string;
  readonly sections: readonly ReportSection[];
  /** Shown in the footer (default: now, ISO 8601). */
  readonly generatedAt?: string;
}

// ---------------------------------------------------------------------------------------------------------------
// The plotly.js bundle

/** Where plotly.js may be found, best first: the minified bundle (plotly.js-dist 4 ships none of its own). */
const BUNDLE_CANDIDATES = ['plotly.js-dist-min/plotly.min.js', 'plotly.js-dist/plotly.min.js', 'plotly.js-dist/plotly.js'];
let bundleCache: { path: string; text: string; version: string } | undefined;

/**
 * Makes script text safe inside an HTML `<script>` element: no `</script` and no `<!--` can end or confuse it (both
 * are only ever valid inside JS strings, regexes and comments, where the escaped forms mean the same).
 *
 * @example escapeScriptText('s = "</script>"') // 's = "<\\/script>"'
 */
export function escapeScriptText(code: string): string {
  return code.replace(/<\/(script)/gi, '<\\/$1').replace(/<!--/g, '<\\!--');
}

/**
 * The plotly.js bundle installed with pneumotype (`plotly.js-dist-min`'s minified one, 4.8 MB, else `plotly.js-dist`'s,
 * 10 MB), read once, ready to inline in a `<script>` element. It is only ever read as text: plotly.js runs in browsers
 * and notebooks, never in Node.
 *
 * @example const { version, text } = plotlyBundle() // version "4.1.1"
 */
export function plotlyBundle(): { path: string; text: string; version: string } {
  if (bundleCache) return bundleCache;
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const id of BUNDLE_CANDIDATES) {
    let path: string;
    try {
      path = require.resolve(id);
    } catch {
      tried.push(id);
      continue;
    }
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read the plotly.js bundle ${quote(path)}: ${messageOf(err)}`, { path, cause: err });
    }
    if (!text.includes('Plotly')) {
      throw new ConfigError(`${quote(path)} is not a plotly.js bundle: expected the plotly.js-dist package's file`, { path });
    }
    const version = /plotly\.js v(\d+\.\d+\.\d+\S*)/.exec(text.slice(0, 2000))?.[1] ?? 'unknown';
    bundleCache = { path, text: escapeScriptText(text), version };
    return bundleCache;
  }
  throw new ConfigError(`plotly.js is not installed (looked for ${tried.map((t) => quote(t)).join(', ')}): run \`npm install\` (plotly.js-dist-min is a dependency)`);
}

// ---------------------------------------------------------------------------------------------------------------
// HTML pieces

/**
 * Escapes text for HTML content and attribute values.
 *
 * @example escapeHtml('<b> & "x"') // '&lt;b&gt; &amp; &quot;x&quot;'
 */
export function escapeHtml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

/**
 * JSON that can sit inside a `<script>` element: `<`, `>` and `&` written as \u escapes (so no `</script>` or
 * `<!--`), and U+2028/U+2029 escaped too. NaN and Infinity become null, as in JSON.stringify.
 *
 * @example scriptJson({ title: '</script>' }) // '{"title":"\\u003c/script\\u003e"}'
 */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replaceAll('<', '\\u003c')
    .replaceAll('>', '\\u003e')
    .replaceAll('&', '\\u0026')
    .replaceAll('\u2028', '\\u2028')
    .replaceAll('\u2029', '\\u2029');
}

/** A number already formatted as text (`'0.801'`, `'1,349'`, `'1.00e-3'`). */
const NUMBER_TEXT = /^-?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?([eE][-+]?\d+)?$/;

/**
 * Which columns are numeric: every cell a number, a number formatted as text or empty (null). Their formatted numbers
 * are right-aligned, so that digits line up; a column that mixes in other text (group names, say, one of which may
 * be all digits) keeps its text left-aligned. Numbers themselves are right-aligned in any column.
 */
function numericColumns(table: Table): boolean[] {
  return table.columns.map((_, c) => table.rows.every((row) => {
    const v = row[c] ?? null;
    return v === null || typeof v === 'number' || NUMBER_TEXT.test(v);
  }));
}

function formatCell(v: string | number | null): string {
  if (v === null) return '—';
  if (typeof v === 'string') return escapeHtml(v);
  if (!Number.isFinite(v)) return 'n/a';
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  if (Math.abs(v) < 1e-3) return v.toExponential(2);
  return v.toLocaleString('en-US', { maximumFractionDigits: 4 });
}

/**
 * An HTML `<table>` of a {@link Table}, every cell escaped; numbers (and, in columns of nothing else, numbers formatted
 * as text) right-aligned, integers with thousands separators,
 * others to 4 decimals (below 0.001 in exponent notation).
 *
 * @example renderTableHtml({ columns: ['class', 'images'], rows: [['normal', 1349]] })
 */
export function renderTableHtml(table: Table): string {
  const head = table.columns.map((c) => `<th scope="col">${escapeHtml(c)}</th>`).join('');
  const numeric = numericColumns(table);
  const body = table.rows
    .map((row) => `<tr>${row.map((v, c) => `<td${typeof v === 'number' || (numeric[c] === true && v !== null) ? ' class="num"' : ''}>${formatCell(v)}</td>`).join('')}</tr>`)
    .join('\n');
  return `<table>\n<thead><tr>${head}</tr></thead>\n<tbody>\n${body}\n</tbody>\n</table>`;
}

/**
 * Plain text as paragraphs: blank lines separate paragraphs, single newlines become line breaks; all escaped.
 *
 * @example renderTextHtml('a\nb\n\nc') // '<p>a<br>\nb</p>\n<p>c</p>'
 */
export function renderTextHtml(text: string): string {
  return text
    .split(/\r?\n\s*\r?\n/)
    .map((p) => p.trim())
    .filter((p) => p !== '')
    .map((p) => `<p>${escapeHtml(p).replace(/\r?\n/g, '<br>\n')}</p>`)
    .join('\n');
}

/** The plotly config of every drawn figure: interactive, resizing with the page, no plotly logo, no cloud links. */
export const PLOT_CONFIG = { responsive: true, displaylogo: false, showLink: false, showSendToCloud: false } as const;

/** The figure's title text, for the div's accessible label. */
function figureTitle(figure: Figure): string {
  const t = figure.layout.title;
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof (t as { text?: unknown }).text === 'string') return (t as { text: string }).text;
  return 'figure';
}

/** The height a figure's div reserves before plotly draws it (its layout.height, else 450). */
function figureHeight(figure: Figure): number {
  const h = figure.layout.height;
  return typeof h === 'number' && h > 0 ? h : 450;
}

/**
 * A figure's placeholder div (class `plotly-figure`, labelled with the figure's title) and its JSON in a
 * `<script type="application/json" id="ID-data">`, for {@link renderHtmlReport} and the notebook helpers.
 *
 * @example const { div, json } = figureElements(rocFigure(curves), 'figure-1')
 */
export function figureElements(figure: Figure, id: string): { div: string; json: string } {
  const label = escapeHtml(figureTitle(figure).replace(/<[^>]*>/g, ''));
  return {
    div: `<div class="plotly-figure" id="${escapeHtml(id)}" role="img" aria-label="${label}" style="min-height:${figureHeight(figure)}px"></div>`,
    json: `<script type="application/json" id="${escapeHtml(id)}-data">${scriptJson({ data: figure.data, layout: figure.layout })}</script>`,
  };
}

const CSS = `
:root { color-scheme: light; --fg: #1a1a1a; --muted: #5f6368; --line: #dadce0; --accent: #0072B2; --bg-alt: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 8px; padding-bottom: 10px; }
h1 { font-size: 1.75rem; margin: 0.2em 0 0.1em; }
.subtitle { color: var(--muted); margin: 0; }
.notice { margin: 8px 0 0; padding: 6px 10px; border-left: 4px solid #D55E00; background: #fff4ec; }
nav ol { columns: 2; padding-left: 1.4em; margin: 0.6em 0 0; }
nav a, a { color: var(--accent); }
section { margin-top: 28px; }
h2 { font-size: 1.3rem; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin: 0 0 10px; }
p { max-width: 80ch; }
table { border-collapse: collapse; margin: 10px 0 16px; font-size: 0.92rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--bg-alt); font-weight: 600; }
tbody tr:nth-child(even) td { background: #fbfbfc; }
td.num { text-align: right; }
.table-wrap { overflow-x: auto; }
.plotly-figure { width: 100%; margin: 8px 0 20px; }
.plot-error { color: #b00020; border: 1px solid #b00020; padding: 8px; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.85rem; border-top: 1px solid var(--line); padding-top: 8px; }
@media print { .plotly-figure { break-inside: avoid; } nav { display: none; } }
`;

/** Draws every `.plotly-figure` from its JSON once the page has loaded plotly.js. */
const DRAW_SCRIPT = `
(function () {
  var config = ${scriptJson(PLOT_CONFIG)};
  var divs = document.querySelectorAll('div.plotly-figure');
  for (var i = 0; i < divs.length; i++) {
    var div = divs[i];
    var spec = JSON.parse(document.getElementById(div.id + '-data').textContent);
    if (!window.Plotly) {
      div.className += ' plot-error';
      div.textContent = 'This figure needs plotly.js, which did not load.';
      continue;
    }
    window.Plotly.newPlot(div, spec.data, spec.layout, config);
  }
})();
`;

/**
 * Renders ONE self-contained HTML document: plotly.js inlined once in the head, each section's text, table and
 * figures (embedded as JSON and drawn with `Plotly.newPlot` when the page loads). It loads nothing from anywhere —
 * no CDN, no fonts, no images — and a Content-Security-Policy forbids the page any request, so it opens offline,
 * from a file, a mail attachment or an S3 bucket alike.
 *
 * @example
 * const html = renderHtmlReport({ title: 'Run cpu-1', sections: [{ heading: 'Training', figure: trainingCurvesFigure(history) }] })
 * await writeFile('runs/cpu-1/report.html', html) // node:fs/promises; writeRunReport writes its report atomically
 */
export function renderHtmlReport(options: HtmlReportOptions): string {
  const bundle = plotlyBundle();
  const generatedAt = options.generatedAt ?? new Date().toISOString();
  let figureCount = 0;
  const blocks: string[] = [];
  const toc: string[] = [];
  options.sections.forEach((section, s) => {
    const anchor = `section-${s + 1}`;
    toc.push(`<li><a href="#${anchor}">${escapeHtml(section.heading)}</a></li>`);
    const parts = [`<section id="${anchor}">`, `<h2>${escapeHtml(section.heading)}</h2>`];
    if (section.text !== undefined) parts.push(renderTextHtml(section.text));
    for (const figure of [...(section.figure ? [section.figure] : []), ...(section.figures ?? [])]) {
      const el = figureElements(figure, `figure-${++figureCount}`);
      parts.push(el.div, el.json);
    }
    if (section.table) parts.push(`<div class="table-wrap">${renderTableHtml(section.table)}</div>`);
    parts.push('</section>');
    blocks.push(parts.join('\n'));
  });
  const csp = "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:";
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    `<meta http-equiv="Content-Security-Policy" content="${csp}">`,
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<meta name="generator" content="pneumotype (plotly.js ${escapeHtml(bundle.version)})">`,
    `<title>${escapeHtml(options.title)}</title>`,
    `<style>${CSS}</style>`,
    `<script>${bundle.text}\n</script>`,
    '</head>',
    '<body>',
    '<main>',
    '<header>',
    `<h1>${escapeHtml(options.title)}</h1>`,
    ...(options.subtitle !== undefined ? [`<p class="subtitle">${escapeHtml(options.subtitle)}</p>`] : []),
    ...(options.notice !== undefined ? [`<p class="notice" role="note">${escapeHtml(options.notice)}</p>`] : []),
    ...(options.sections.length > 3 ? [`<nav aria-label="contents"><ol>${toc.join('')}</ol></nav>`] : []),
    '</header>',
    '<noscript><p class="plot-error">The figures of this report are drawn by JavaScript, which is turned off.</p></noscript>',
    ...blocks,
    `<footer>${options.notice !== undefined ? `${escapeHtml(options.notice)}<br>` : ''}Made by pneumotype on ${escapeHtml(generatedAt)} · ` +
      `figures drawn with plotly.js ${escapeHtml(bundle.version)}, inlined: this file needs no network.</footer>`,
    '</main>',
    `<script>${DRAW_SCRIPT}</script>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// The report of a training run

export interface RunReportOptions {
  /** The run folder of `pneumotype train`: history.json and model/pneumotype.json. */
  readonly runDir: string;
  /** An evaluation result, or the JSON file evaluateModel's `out` wrote. Default: RUN/evaluation.json when present. */
  readonly evaluation?: EvaluateResult | EvaluationReport | string;
  /** The per-image CSV of evaluateModel's `predictions` option. Default: RUN/predictions.csv when present. */
  readonly predictionsCsv?: string;
  /**
   * The labelled folder (summary.json, images of the gallery). Default: the model card's data.labeledDir, and for the
   * gallery the folder the evaluation read (its `data`).
   */
  readonly labeledDir?: string;
  /** Where the report goes. Default RUN/report.html; for a model folder, NAME-report.html in the working directory. */
  readonly out?: string;
  readonly title?: string;
  /** Misclassified test images shown, most confident first (default 12; 0: none). Needs the images on disk. */
  readonly gallery?: number;
  /** Shown in the footer (default: now). */
  readonly generatedAt?: string;
}

export interface RunReportResult {
  readonly out: string;
  readonly bytes: number;
  readonly figures: number;
  readonly sections: readonly string[];
  /** What could not be included and why (a missing evaluation, an image that did not decode, ...). */
  readonly notes: readonly string[];
}

async function readJson<T>(path: string, what: string): Promise<T> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${what} ${quote(path)}: ${messageOf(err)}`, { path, cause: err });
  }
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new ConfigError(`${what} ${quote(path)} is not valid JSON: ${messageOf(err)}`, { path, cause: err });
  }
}

/** A figure to `digits` decimals, as reports and notebook tables show them: n/a for a value that is no number. */
export function fmt(v: number | undefined | null, digits = 3): string {
  return v === undefined || v === null || !Number.isFinite(v) ? 'n/a' : v.toFixed(digits);
}

function intervalCells(i: Interval): [string, string] {
  return [fmt(i.value), Number.isFinite(i.low) && Number.isFinite(i.high) ? `${fmt(i.low)} – ${fmt(i.high)}` : 'n/a'];
}

/**
 * Throws a ConfigError naming `source` and the first field that the report reads and an evaluation lacks: the JSON of
 * `pneumotype evaluate` (or {@link evaluateModel}'s result) is expected.
 */
function checkEvaluation(evaluation: unknown, source: string): asserts evaluation is EvaluationReport {
  const fail = (what: string): never => {
    throw new ConfigError(`the evaluation ${quote(source)} has no ${what}: expected the JSON of \`pneumotype evaluate\``, { path: source });
  };
  if (typeof evaluation !== 'object' || evaluation === null) fail('fields (it is not an object)');
  const at = (path: string): unknown => path.split('.').reduce<unknown>((o, k) => (typeof o === 'object' && o !== null ? (o as Record<string, unknown>)[k] : undefined), evaluation);
  const confusion = at('confusion');
  if (!Array.isArray(confusion) || confusion.length !== CLASSES.length || !confusion.every((r) => Array.isArray(r) && r.length === CLASSES.length && r.every((v) => typeof v === 'number'))) {
    fail(`${CLASSES.length}x${CLASSES.length} confusion matrix`);
  }
  if (typeof at('n') !== 'number') fail('"n"');
  const intervals = [
    'accuracy', 'balancedAccuracy', 'macroF1',
    ...CLASSES.flatMap((c) => [`perClass.${c}.precision`, `perClass.${c}.recall`, `perClass.${c}.f1`, `auc.${c}`]),
    ...['normalVsPneumonia', 'bacteriaVsVirus'].flatMap((b) => ['accuracy', 'sensitivity', 'specificity', 'auc'].map((m) => `binary.${b}.${m}`)),
  ];
  for (const path of intervals) {
    const v = at(`${path}.value`);
    if (typeof v !== 'number' && v !== null) fail(`"${path}" (an object with a numeric value)`);
  }
}

/**
 * Refuses an evaluation of other weights than the model in `modelDir` (another model's, or one made before a
 * calibration changed the weights): it is no figure of this model. An evaluation without `weightsSha256`, or a folder
 * without model.json, passes.
 */
async function checkEvaluatedWeights(evaluation: EvaluationReport, modelDir: string, source: string | undefined): Promise<void> {
  const evaluatedWeights = (evaluation as Partial<EvaluateResult>).weightsSha256;
  if (typeof evaluatedWeights !== 'string' || !(await exists(join(modelDir, 'model.json')))) return;
  const own = weightsDigest(await readModelArtifacts(modelDir));
  if (own === evaluatedWeights) return;
  throw new ConfigError(
    `the evaluation ${source !== undefined ? quote(source) : 'given'} is of other weights than the model in ${quote(modelDir)} (SHA-256 ${evaluatedWeights.slice(0, 12)}… against ` +
      `${own.slice(0, 12)}…): evaluate this model again, or report the run or model folder that was evaluated`,
    { path: source ?? modelDir },
  );
}

/** How prediction rows differ from an evaluation (their count, or the confusion matrix they give), or undefined. */
function predictionsMismatch(rows: readonly PredictionRow[], evaluation: EvaluationReport): string | undefined {
  // parsePredictionsCsv has checked every label against CLASSES.
  const confusion = confusionMatrix(rows.map((r) => CLASSES.indexOf(r.trueLabel)), rows.map((r) => CLASSES.indexOf(r.predictedLabel)));
  if (rows.length === evaluation.n && JSON.stringify(confusion) === JSON.stringify(evaluation.confusion)) return undefined;
  return `${rows.length} rows, confusion matrix ${JSON.stringify(confusion)}; the evaluation: ${evaluation.n} images, ${JSON.stringify(evaluation.confusion)}`;
}

/**
 * The evaluation saved in a model folder (models/default ships its validation evaluation; see scripts/ship-model.ts)
 * or a run folder (`pneumotype run` writes one beside model/) as `evaluation.json`, checked as the report checks one,
 * and refused when it is of other weights than the folder's model. Undefined when the folder has none.
 *
 * @example const shipped = await readModelEvaluation() // models/default's: shipped?.accuracy.value is 0.801
 */
export async function readModelEvaluation(modelDir: string = DEFAULT_MODEL_DIR): Promise<EvaluationReport | undefined> {
  const path = join(modelDir, 'evaluation.json');
  if (!(await exists(path))) return undefined;
  const evaluation = await readJson<unknown>(path, 'evaluation');
  checkEvaluation(evaluation, path);
  // A run folder (runs/NAME) keeps its evaluation beside its model/ folder, a model folder beside model.json.
  const model = (await exists(join(modelDir, 'model.json'))) ? modelDir : join(modelDir, 'model');
  await checkEvaluatedWeights(evaluation, model, path);
  return evaluation;
}

/**
 * The headline figures of several evaluations side by side, each with its 95 % interval: one column per evaluation
 * (an undefined one is left out). Different images unless said otherwise: the table names each one's split and size.
 *
 * @example showTable(tslab.display, comparisonTable({ 'this run': evaluation, 'models/default': await readModelEvaluation() }))
 */
export function comparisonTable(evaluations: Readonly<Record<string, EvaluationReport | undefined>>): Table {
  const present = Object.entries(evaluations).filter((e): e is [string, EvaluationReport] => e[1] !== undefined);
  const cell = (i: Interval | undefined): string => {
    if (i === undefined || i.value === null || !Number.isFinite(i.value)) return 'n/a';
    return Number.isFinite(i.low) && Number.isFinite(i.high) ? `${fmt(i.value)} [${fmt(i.low)}, ${fmt(i.high)}]` : fmt(i.value);
  };
  const row = (name: string, of: (r: EvaluationReport) => string | number): (string | number)[] => [name, ...present.map(([, r]) => of(r))];
  return {
    columns: ['metric', ...present.map(([name]) => name)],
    rows: [
      row('images (split)', (r) => `${r.n} (${'split' in r && typeof r.split === 'string' ? r.split : 'test'})`),
      row('accuracy (3 classes)', (r) => cell(r.accuracy)),
      row('balanced accuracy', (r) => cell(r.balancedAccuracy)),
      row('macro-F1', (r) => cell(r.macroF1)),
      ...CLASSES.map((k) => row(`${k}: recall`, (r) => (r.perClass[k].support === 0 ? 'n/a (no images)' : cell(r.perClass[k].recall)))),
      row('normal vs pneumonia: AUC', (r) => cell(r.binary.normalVsPneumonia.auc)),
      row('bacteria vs virus: AUC', (r) => cell(r.binary.bacteriaVsVirus.auc)),
      row('calibration: expected calibration error', (r) => cell(calibrationOf(r)?.ece)),
    ],
  };
}

/**
 * The metrics table of an evaluation: every interval, and the published figure where there is one.
 *
 * @example showTable(tslab.display, metricsTable(await evaluateModel({ data: 'data/labeled' })))
 */
export function metricsTable(report: EvaluationReport): Table {
  const rows: (string | number | null)[][] = [];
  const add = (name: string, i: Interval, published?: number): void => {
    rows.push([name, ...intervalCells(i), published === undefined ? null : fmt(published)]);
  };
  add('accuracy (3 classes)', report.accuracy);
  add('balanced accuracy', report.balancedAccuracy);
  add('macro-F1', report.macroF1);
  for (const label of CLASSES) {
    const c = report.perClass[label];
    add(`${label}: precision`, c.precision);
    // A class without images has no recall (the JSON's 0 is a convention, see perClassMetrics): not a score of 0.
    if (c.support === 0) rows.push([`${label}: recall`, 'n/a (no images)', 'n/a', null], [`${label}: F1`, 'n/a (no images)', 'n/a', null]);
    else {
      add(`${label}: recall`, c.recall);
      add(`${label}: F1`, c.f1);
    }
    add(`${label}: one-vs-rest AUC`, report.auc[label]);
  }
  const nvp = report.binary.normalVsPneumonia;
  const bvv = report.binary.bacteriaVsVirus;
  for (const [name, b, pub] of [
    // Which class is positive, for sensitivity and specificity: pneumonia, and virus among true pneumonia images.
    ['normal vs pneumonia (pneumonia positive)', nvp, PUBLISHED.normalVsPneumonia],
    ['bacteria vs virus (virus positive)', bvv, PUBLISHED.bacteriaVsVirus],
  ] as const) {
    add(`${name}: accuracy`, b.accuracy, pub.accuracy);
    add(`${name}: sensitivity`, b.sensitivity, pub.sensitivity);
    add(`${name}: specificity`, b.specificity, pub.specificity);
    add(`${name}: AUC`, b.auc, pub.auc);
  }
  const cal = calibrationOf(report);
  if (cal) {
    add('calibration: expected calibration error', cal.ece);
    add('calibration: Brier score', cal.brier);
    add('calibration: log loss', cal.logLoss);
  }
  return { columns: ['metric', 'value', '95 % interval', PUBLISHED.label], rows };
}

/**
 * Images and patients per split and class, as a table.
 *
 * @example showTable(tslab.display, countsTable(summary))
 */
export function countsTable(summary: RelabelSummary): Table {
  const { splits, images, patients } = classCounts(summary);
  return {
    columns: ['split', ...CLASSES.map((c) => `${c} images`), 'total images', ...CLASSES.map((c) => `${c} patients`)],
    rows: splits.map((s) => [
      s,
      ...CLASSES.map((c) => images[s]?.[c] ?? 0),
      images[s]?.total ?? 0,
      ...CLASSES.map((c) => patients[s]?.[c] ?? 0),
    ]),
  };
}

/**
 * Point metrics per group of images (evaluate's `byGroup`), a row per group: a gap between groups that differ only in
 * how their files were made means the model learned the pipeline, not the lungs. A recall is empty where the group
 * has no image of that class, the bacteria-versus-virus AUC where it lacks either; the images of each class are
 * shown, since a recall over one image says little. No macro-F1: a class a group lacks would count in it as 0. The
 * figures are text to three decimals (`'0.816'`), as in the metrics table.
 *
 * @example if (evaluation.byGroup) showTable(tslab.display, groupsTable(evaluation.byGroup))
 */
export function groupsTable(byGroup: Readonly<Record<string, GroupMetrics>>): Table {
  // Three decimals, as the metrics table shows them (1 as 1.000, not 1; n/a for a value that is no number).
  const round = (v: number): string => fmt(v, 3);
  return {
    columns: ['group', 'images', `images ${CLASSES.join(' / ')}`, 'accuracy', 'balanced accuracy', ...CLASSES.map((c) => `${c} recall`), 'bacteria vs virus AUC'],
    rows: Object.entries(byGroup).map(([group, m]) => [
      group,
      m.n,
      CLASSES.map((c) => m.support[c]).join(' / '),
      round(m.accuracy),
      round(m.balancedAccuracy),
      ...CLASSES.map((c) => (m.support[c] > 0 ? round(m.recall[c] ?? NaN) : null)),
      // Evaluations saved before this field have none.
      typeof m.bacteriaVsVirusAuc === 'number' ? round(m.bacteriaVsVirusAuc) : null,
    ]),
  };
}

/**
 * Said where an evaluation has no per-group figures: in the shared data how a file was copied goes with its label, and
 * the overall figures cannot tell the lungs from the pipeline.
 */
const SHORTCUT_CAVEAT =
  'Caveat: copies of this dataset circulate that were made by different pipelines whose traces go with the label (the ' +
  'project\'s shared 224 px images come from three: most bacterial images from one, most normal and viral images from ' +
  'another), and a network can learn the pipeline instead of the lungs. Where the images are such copies, these overall ' +
  'figures cannot tell the two apart: `pneumotype evaluate --groups CSV:derived_from` breaks them down by pipeline ' +
  '(docs/experiments.md of the repository shows it for every run).';

/**
 * What the leakage audit of a labelled folder with one split compared (nothing across splits), undefined where it
 * has two or more. The train split alone (the shared data) is where validation is carved, by patient id.
 *
 * @example oneSplitNote(['train']) // 'one split only (train): nothing to compare across splits; validation is carved from it by patient id'
 */
export function oneSplitNote(splits: readonly string[]): string | undefined {
  if (splits.length >= 2) return undefined;
  const [only] = splits;
  if (only === undefined) return 'no split: nothing to compare';
  return `one split only (${only}): nothing to compare across splits${only === 'train' ? '; validation is carved from it by patient id' : ''}`;
}

/** The evaluation's per-group figures, undefined where it has none. */
function byGroupOf(evaluation: EvaluationReport | undefined): Readonly<Record<string, GroupMetrics>> | undefined {
  const byGroup = (evaluation as Partial<EvaluateResult> | undefined)?.byGroup;
  return byGroup && Object.keys(byGroup).length > 0 ? byGroup : undefined;
}

/** What the evaluated split is, for a reader: the validation split is carved from train and chose the model. */
function splitText(split: string, card: ModelCard | undefined): string {
  if (split !== 'val') return '';
  const c = card?.training.config as Partial<Record<string, unknown>> | undefined;
  const carved = typeof c?.valFraction === 'number' && typeof c.seed === 'number'
    ? `${Math.round(c.valFraction * 100)} % of the patients of each class (seed ${c.seed})`
    : 'a share of the patients of each class';
  return `The validation split: ${carved}, carved from the official train split, so from the same sources and copy ` +
    'pipelines as the training images, and no child on both sides. The official test split was not used.\n\n';
}

/** Every run report says it, at the top and at the bottom: readers may be clinicians in training. */
export const NOT_A_DEVICE = 'Research and teaching software, not a medical device: not clinically validated, not for diagnosis or treatment.';

/** The settings of the configuration that shape a training run (paths, download and archive limits are left out). */
const TRAINING_SETTINGS = [
  'model', 'modelWidth', 'modelDepth', 'imageSize', 'epochs', 'batchSize', 'optimizer', 'learningRate', 'minLearningRate', 'warmupEpochs',
  'schedule', 'plateauPatience', 'weightDecay', 'labelSmoothing', 'classWeights', 'patience', 'dropout', 'mixup',
  'valFraction', 'seed',
] as const;

/** "Validation" or "Test" (or the split's own name), to title what was measured on it. */
function splitTitle(split: string): string {
  return split === 'val' ? 'Validation' : `${split.charAt(0).toUpperCase()}${split.slice(1)}`;
}

/** Epochs run and training time of the whole run (the card records them up to its best epoch only). */
function runLength(card: ModelCard, history: readonly EpochRecord[] | undefined): string {
  if (history === undefined) {
    return `best epoch ${card.training.epoch} of ${card.training.epochs}, reached in ${Math.round(card.training.seconds)} s (no history.json: later epochs are not recorded)`;
  }
  const seconds = history.length > 0 ? history.reduce((sum, r) => sum + r.seconds, 0) : card.training.seconds;
  // A history of a rerun (models/default ships the replay's) times other epochs than the card: say whose each is.
  const otherRun = history.length > 0 && !historyIsOfCard(history, card.training);
  const cardTime = otherRun ? `; the model card records ${Math.round(card.training.seconds)} s to the best epoch, for the run that made these weights` : '';
  return `${Math.max(history.length, card.training.epoch)} of ${card.training.epochs} epochs in ${Math.round(seconds)} s${otherRun ? ' by history.json' : ''} ` +
    `(best: epoch ${card.training.epoch}${cardTime})`;
}

/** The augmentation a run used, for reading: `rotateDegrees 7, zoom 0.1, jpegQuality 40-95, …`. */
function augmentationText(augment: object): string {
  const entries = Object.entries(augment).filter(([, v]) => v !== undefined && v !== null && v !== false && v !== 0); // null: a step off
  if (entries.length === 0) return 'none';
  return entries.map(([k, v]) => (v === true ? k : `${k} ${Array.isArray(v) ? v.join('-') : typeof v === 'object' ? JSON.stringify(v) : String(v)}`)).join(', ');
}

function configTable(card: ModelCard, history: readonly EpochRecord[] | undefined): Table {
  const rows: (string | number | null)[][] = [
    ['model', card.model.summary.name],
    ['parameters', card.model.summary.parameters],
    ['GFLOPs per image', Number.isFinite(card.model.summary.flops) ? Number((card.model.summary.flops / 1e9).toFixed(3)) : 'unknown'],
    ['image size', card.imageSize],
    ['backend', card.training.backend],
    ['training', runLength(card, history)],
    ['started from', card.training.initFrom === null ? 'scratch' : `${maskUserInfo(card.training.initFrom)}${card.training.freeze ? ' (pretrained layers frozen)' : card.training.unfreeze ? ' (every pretrained layer trained)' : ''}${card.training.initRange ? `, pixels mapped onto [${card.training.initRange.join(', ')}]` : ''}${card.training.featureLayer !== undefined ? `, head on its layer ${card.training.featureLayer}` : ''}`],
    ['augmentation', card.training.augment === false ? 'none' : augmentationText(card.training.augment)],
    ['train / validation images', `${card.data.trainImages} / ${card.data.valImages}`],
    ['calibration', card.calibration ? `temperature ${card.calibration.temperature.toFixed(3)}, fitted on ${card.calibration.images} ${card.calibration.split} images` : 'none'],
  ];
  const config = card.training.config as unknown as Record<string, unknown>;
  // The model and the image size are in the rows above already (each shown again when the configuration differs; a
  // transfer run's configured model is the preset's, not the one it trained, and is left out).
  const shown: Partial<Record<string, unknown>> = { model: card.model.summary.name, imageSize: card.imageSize };
  for (const k of TRAINING_SETTINGS) {
    const v = config[k];
    // '' is "the architecture's default" (modelDepth): nothing to show.
    if (v !== undefined && v !== null && v !== '' && v !== shown[k] && !(k === 'model' && card.training.initFrom !== null)) rows.push([k, typeof v === 'number' || typeof v === 'string' ? v : JSON.stringify(v)]);
  }
  return { columns: ['setting', 'value'], rows };
}

/**
 * A training run's history (history.json) as a table, a row per epoch, figures rounded for reading.
 *
 * @example showTable(tslab.display, historyTable(run.history))
 */
export function historyTable(history: readonly EpochRecord[]): Table {
  return {
    columns: ['epoch', 'learning rate', 'loss', 'accuracy', 'val loss', 'val accuracy', 'val macro-F1', 'seconds', 'best so far'],
    rows: history.map((r) => [
      r.epoch,
      r.learningRate.toExponential(2),
      fmt(r.loss, 4),
      fmt(r.accuracy),
      fmt(r.valLoss, 4),
      fmt(r.valAccuracy),
      fmt(r.valMacroF1),
      Math.round(r.seconds),
      r.best ? 'yes' : '',
    ]),
  };
}

/**
 * A folder as the report's reader should see it, not as this machine's absolute path: relative to the project folder
 * (a notebook runs in notebooks/ and names its folders absolutely), else to the working directory, when inside
 * either; else as given.
 */
function shownPath(path: string): string {
  const cwd = process.cwd();
  for (const base of [projectRoot(cwd), cwd]) {
    if (base === undefined) continue;
    const inside = relative(base, resolve(path));
    if (inside === '') return '.';
    if (!/^\.\.([\\/]|$)/.test(inside) && !isAbsolute(inside)) return inside.split(sep).join('/');
  }
  return normalize(path).replace(/(.)[\\/]+$/, '$1');
}

/**
 * The most confident mistakes (up to `limit`, 12), decoded from the labelled folder at `size` (96) pixels, for
 * misclassifiedGalleryFigure. Images that no longer decode are left out and passed to `onSkip`.
 *
 * @example misclassifiedGalleryFigure(await misclassifiedSamples(rows, { labeledDir: 'data/labeled', limit: 8 }))
 */
export async function misclassifiedSamples(
  rows: readonly PredictionRow[],
  options: { labeledDir: string; limit?: number; size?: number; onSkip?: (path: string, err: unknown) => void },
): Promise<MisclassifiedSample[]> {
  const size = options.size ?? 96;
  const out: MisclassifiedSample[] = [];
  for (const row of mostConfidentMistakes(rows, { limit: options.limit ?? 12 })) {
    const path = join(options.labeledDir, row.file);
    try {
      const pixels = await decodeGray(path, { size, name: row.file });
      out.push({ pixels, size, file: row.file, trueLabel: row.trueLabel, predictedLabel: row.predictedLabel, confidence: row[row.predictedLabel] });
    } catch (err) {
      options.onSkip?.(path, err);
    }
  }
  return out;
}

/**
 * Builds the HTML report of a training run and writes it atomically: configuration, the data (when the card's
 * labelled folder has summary.json), training curves, and when an evaluation is available the metrics table with
 * 95 % intervals, confusion matrix, metric bars beside Kermany et al. (2018), ROC curves and a gallery of the most
 * confident mistakes (the last two need the predictions CSV). Parts whose inputs are missing are left out and listed
 * in `notes`, and in the report.
 *
 * @example
 * await evaluateModel({ model: 'runs/cpu-1/model', out: 'runs/cpu-1/evaluation.json', predictions: 'runs/cpu-1/predictions.csv' })
 * const { out } = await writeRunReport({ runDir: 'runs/cpu-1' }) // runs/cpu-1/report.html
 */
export async function writeRunReport(options: RunReportOptions): Promise<RunReportResult> {
  const runDir = resolve(options.runDir); // normalised: "models/default/" and "models/default" are one folder
  const notes: string[] = [];
  const sections: ReportSection[] = [];

  const historyPath = join(runDir, 'history.json');
  // Undefined for a model folder without one (models/default before it shipped its history).
  const history = (await exists(historyPath)) ? await readJson<EpochRecord[]>(historyPath, 'training history') : undefined;
  if (history !== undefined && !Array.isArray(history)) {
    throw new ConfigError(`training history ${quote(historyPath)} is not a list of epochs`, { path: historyPath });
  }

  // A training run's folder (model/ or checkpoints/best/), or a model folder itself (models/default).
  let card: ModelCard | undefined;
  let modelDir = join(runDir, 'model');
  for (const candidate of [join(runDir, 'model', 'pneumotype.json'), join(runDir, 'checkpoints', 'best', 'pneumotype.json'), join(runDir, 'pneumotype.json')]) {
    if (await exists(candidate)) {
      card = await readJson<ModelCard>(candidate, 'model card');
      modelDir = dirname(candidate);
      break;
    }
  }
  if (history === undefined && !card) {
    throw new ConfigError(
      `no training history at ${quote(historyPath)} and no model card: expected the folder of a \`pneumotype train\` run ` +
        '(history.json, model/) or a model folder (pneumotype.json, model.json)',
      { path: historyPath },
    );
  }
  // A model folder may be in the repository (models/default): its report goes to the working directory instead.
  const out = options.out ?? (modelDir === runDir ? resolve(`${basename(runDir)}-report.html`) : join(runDir, 'report.html'));
  await checkOutputFile(out); // before its images are read
  if (history === undefined) notes.push(`no training history at ${quote(historyPath)}: the training curves are left out (the model card records its best epoch only)`);
  if (!card) notes.push(`no model card in ${quote(join(runDir, 'model'))}: the configuration is not shown`);
  // Without a history, the card's best epoch.
  const best = history === undefined
    ? card && { epoch: card.training.epoch, valAccuracy: card.validation.accuracy, valMacroF1: card.validation.macroF1, valBalancedAccuracy: card.validation.balancedAccuracy }
    : [...history].reverse().find((r) => r.best);
  const overview = [
    // As the caller named it (runs/cpu-1), not this machine's absolute path: the report is read elsewhere.
    `Run folder: ${shownPath(options.runDir)}`,
    card
      ? `Model ${card.model.summary.name} (${card.model.summary.parameters.toLocaleString('en-US')} parameters) on ${card.imageSize} x ${card.imageSize} grayscale images, ` +
        `${runLength(card, history)}, created ${card.createdAt}.`
      : '',
    best
      ? `Best epoch ${best.epoch}: validation accuracy ${fmt(best.valAccuracy)}, macro-F1 ${fmt(best.valMacroF1)}, balanced accuracy ${fmt(best.valBalancedAccuracy)}.`
      : 'No epoch finished yet.',
  ].filter((l) => l !== '');
  sections.push({ heading: 'Overview', text: overview.join('\n'), ...(card ? { table: configTable(card, history) } : {}) });

  // The data
  const labeledDir = options.labeledDir ?? card?.data.labeledDir;
  if (labeledDir !== undefined) {
    const summaryPath = join(resolve(labeledDir), 'summary.json');
    if (await exists(summaryPath)) {
      const summary = await readJson<RelabelSummary>(summaryPath, 'dataset summary');
      const leak = summary.leakage;
      const single = oneSplitNote(Object.keys(summary.counts));
      const leakText = single !== undefined
        ? `${single.charAt(0).toUpperCase()}${single.slice(1)}.` +
          (leak && leak.identicalAcrossPatients.length > 0
            ? ` ${leak.identicalAcrossPatients.length} byte-identical images sit under two patient ids, which the grouping by patient cannot see.`
            : '')
        : leak?.clean
        ? 'No image is shared across splits (byte-identical or near-duplicate).'
        : leak
          ? `Shared across splits: ${leak.identicalAcrossSplits.length} byte-identical and ${leak.nearDuplicatesAcrossSplits.length} near-duplicate pairs.`
          : '';
      sections.push({
        heading: 'Data',
        text: [`Labelled folder: ${shownPath(labeledDir)}`, leakText, ...(summary.notes ?? [])].filter((l) => l !== '').join('\n\n'),
        table: countsTable(summary),
        figure: classDistributionFigure(summary),
      });
    } else notes.push(`no dataset summary at ${quote(summaryPath)}: the data section is left out`);
  }

  if (history !== undefined) {
    sections.push({
      heading: 'Training',
      text:
        'Loss, accuracy and validation macro-F1 per epoch; the dotted vertical line marks the best epoch (the model kept), ' +
        'the gray dotted line the learning rate (right axis). The two losses measure different things: the training loss is ' +
        'that of the augmented batches with dropout on, with the class weights, label smoothing and weight penalty the ' +
        'configuration sets; the validation loss is the plain cross-entropy of the weights kept (their moving average, where ' +
        'the run keeps one) on unaugmented images. That the two curves cross says little by itself; the validation curves are the measure.',
      figure: trainingCurvesFigure(history),
      table: historyTable(history),
    });
  }

  // The evaluation
  let evaluation: EvaluationReport | undefined;
  let evalData: string | undefined;
  const evalSource = options.evaluation ?? ((await exists(join(runDir, 'evaluation.json'))) ? join(runDir, 'evaluation.json') : undefined);
  if (typeof evalSource === 'string') evaluation = await readJson<EvaluationReport>(resolve(evalSource), 'evaluation');
  else evaluation = evalSource;
  if (evaluation !== undefined) checkEvaluation(evaluation, typeof evalSource === 'string' ? evalSource : '<object>');
  if (evaluation !== undefined && card) await checkEvaluatedWeights(evaluation, modelDir, typeof evalSource === 'string' ? evalSource : undefined);
  // Where the images were read: the extraction folder of a zip (imagesDir), else the folder given.
  const read = evaluation as Partial<EvaluateResult> | undefined;
  if (typeof read?.imagesDir === 'string') evalData = read.imagesDir;
  else if (typeof read?.data === 'string') evalData = read.data;

  const predictionsPath = options.predictionsCsv ?? ((await exists(join(runDir, 'predictions.csv'))) ? join(runDir, 'predictions.csv') : undefined);
  let predictions = predictionsPath ? parsePredictionsCsv(await readFile(resolve(predictionsPath), 'utf8').catch((err: unknown) => {
    throw new ConfigError(`cannot read the predictions ${quote(predictionsPath)}: ${messageOf(err)}`, { path: predictionsPath, cause: err });
  }), predictionsPath) : undefined;
  // The ROC curves and the gallery must be of the evaluation's images: another evaluation's rows (the folder's own
  // predictions.csv beside a test evaluation given with --eval, say) would be drawn under its title.
  const mismatch = predictions && evaluation ? predictionsMismatch(predictions, evaluation) : undefined;
  if (predictionsPath !== undefined && mismatch !== undefined) {
    const evaluationName = typeof evalSource === 'string' ? quote(evalSource) : 'given';
    if (options.predictionsCsv !== undefined) {
      throw new ConfigError(`the predictions ${quote(predictionsPath)} are not of the evaluation ${evaluationName} (${mismatch}): give the CSV that evaluate wrote with it (--predictions)`, { path: predictionsPath });
    }
    notes.push(`${quote(predictionsPath)} is not of the evaluation ${evaluationName} (${mismatch}): the ROC curves and the gallery of mistakes are left out (give the CSV that evaluate wrote with it: --predictions)`);
    predictions = undefined;
  }

  const evaluationSplit = evaluation && 'split' in evaluation && typeof evaluation.split === 'string' ? evaluation.split : 'test';
  const byGroup = byGroupOf(evaluation);
  if (evaluation) {
    const split = evaluationSplit;
    const boot = evaluation.bootstrap;
    const calibration = calibrationOf(evaluation);
    const failed = Array.isArray(read?.failed) ? read.failed.length : 0;
    const leftOut = failed > 0 ? ` ${failed} more could not be used and are left out of every figure (listed in the evaluation's "failed").` : '';
    sections.push({
      heading: 'Evaluation',
      text:
        `${evaluation.n} ${split} images.${leftOut} Intervals: ${boot && boot.resamples > 0 ? `${Math.round(boot.confidence * 100)} % percentile bootstrap over patients, ${boot.resamples} resamples${boot.minDefinedShare !== undefined ? ` (n/a where fewer than ${Math.round(boot.minDefinedShare * 100)} % of them define the figure: a class of very few patients)` : ''}` : 'none'}.\n\n` +
        (Array.isArray(read?.warnings) && read.warnings.length > 0 ? `Warning: ${read.warnings.join(' ')}\n\n` : '') +
        splitText(split, card) +
        `Published figures: ${PUBLISHED.citation}. They come from another model (transfer learning from ImageNet), measured ` +
        `on the official test split (624 images)${split === 'test' ? '' : `, not on these ${split} images`}: shown for orientation, not as a ` +
        'like-for-like comparison. The paper does not say which class its bacteria-versus-virus sensitivity takes as positive.' +
        '\n\nThe binary views: normal versus pneumonia ranks every image by 1 − p(normal); bacteria versus virus takes the true ' +
        'pneumonia images alone and compares p(virus) with p(bacteria), whatever p(normal) is, so its sensitivity is not the ' +
        'virus recall of the confusion matrix (a virus image called normal can count as found there).' +
        (byGroup === undefined ? `\n\n${SHORTCUT_CAVEAT}` : '') +
        // Evaluations written before `caveats` have none: the card's calibration record says the same of the temperature.
        (Array.isArray(read?.caveats) && read.caveats.length > 0
          ? `\n\nOptimistic figures: ${read.caveats.map((c) => `${c.charAt(0).toUpperCase()}${c.slice(1)}.`).join(' ')}`
          : card?.calibration && card.calibration.split === split
            ? `\n\nThe temperature of this model was fitted on these ${split} images, so their calibration figures may be optimistic: ` +
              `cross-fitted by patient (fitted on half the patients, measured on the other), the expected calibration error is ` +
              `${fmt(card.calibration.crossFitted.ece)} (${fmt(card.calibration.before.ece)} before calibration).`
            : ''),
      table: metricsTable(evaluation),
      figures: [
        confusionMatrixFigure(evaluation.confusion),
        metricBarsFigure(evaluation, { title: `${splitTitle(split)} metrics with 95 % intervals` }),
        ...(calibration ? [reliabilityFigure(calibration)] : []),
      ],
    });
  } else {
    notes.push(
      modelDir === runDir
        ? // A model folder (models/default is in the repository): the evaluation goes elsewhere and is named.
          `no evaluation: run \`pneumotype evaluate --model ${modelDir} --split val --out evaluation.json --predictions predictions.csv\` ` +
            `(or --split test with --data naming the test images), then \`pneumotype report --run ${modelDir} --eval evaluation.json --predictions predictions.csv\``
        : `no evaluation: run \`pneumotype evaluate --model ${modelDir} --split val --out ${join(runDir, 'evaluation.json')} ` +
            `--predictions ${join(runDir, 'predictions.csv')}\` (or --split test with --data naming the test images) and make the report again`,
    );
  }

  if (byGroup) {
    sections.push({
      heading: 'Metrics per group',
      text:
        'The same images, broken down by a grouping of the files (evaluate --groups). When the groups are how the files ' +
        'were made, such as the copy pipelines of the shared data (derived_from), a gap between them means the model ' +
        'learned the pipeline, not the lungs; a group holding every class from one pipeline (full-res there) is the ' +
        'fairest proxy for new images. Point values, no intervals: a recall over a handful of images (see the counts) says ' +
        'little, and where one pipeline holds nearly all of a class the group\'s figures say more about the pipeline than the model.',
      table: groupsTable(byGroup),
    });
  }

  if (predictions && predictions.length > 0) {
    const curves = rocCurvesFromPredictions(predictions);
    sections.push({
      heading: 'ROC curves',
      text: 'Each class against the two others, then the two binary views: pneumonia (bacteria or virus) against normal, and virus against bacteria among the pneumonia images.',
      figures: [
        rocFigure(curves.filter((c) => c.kind === 'one-vs-rest'), { title: 'ROC: each class against the others' }),
        rocFigure(curves.filter((c) => c.kind === 'binary'), { title: 'ROC: the binary views' }),
      ],
    });
    const limit = options.gallery ?? 12;
    // A folder the caller names wins; else where the evaluation read its images; else the model card's.
    const root = options.labeledDir ?? evalData ?? labeledDir;
    const folder = limit > 0 && root !== undefined ? resolve(root) : undefined;
    // A folder that is not there (a shipped model's evaluation, read on another machine) is one note, not one per image.
    if (folder !== undefined && !(await exists(folder))) {
      notes.push(`gallery: the evaluated images are not at ${quote(folder)}: the gallery of mistakes is left out (name their folder with --data)`);
    } else if (folder !== undefined) {
      const samples = await misclassifiedSamples(predictions, {
        labeledDir: folder,
        limit,
        onSkip: (path, err) => notes.push(`gallery: ${quote(path)} left out (${messageOf(err)})`),
      });
      if (samples.length > 0) {
        sections.push({
          heading: 'Most confident mistakes',
          text: `${splitTitle(evaluationSplit)} images the model got wrong, the most confident first: true class → predicted class (probability).`,
          figure: misclassifiedGalleryFigure(samples, { columns: 3, title: `Misclassified ${splitTitle(evaluationSplit).toLowerCase()} images, most confident first` }),
        });
      }
    }
  }

  if (notes.length > 0) sections.push({ heading: 'Left out', text: notes.join('\n\n') });
  const html = renderHtmlReport({
    title: options.title ?? `pneumotype run ${runDir.split(/[\\/]/).at(-1) ?? runDir}`,
    subtitle: 'Normal, bacterial and viral pneumonia on pediatric chest X-rays (Kermany, Zhang & Goldbaum 2018, CC BY 4.0)',
    notice: NOT_A_DEVICE,
    sections,
    ...(options.generatedAt !== undefined ? { generatedAt: options.generatedAt } : {}),
  });
  await writeFileAtomic(out, html);
  const figures = sections.reduce((n, s) => n + (s.figure ? 1 : 0) + (s.figures?.length ?? 0), 0);
  return { out, bytes: Buffer.byteLength(html), figures, sections: sections.map((s) => s.heading), notes };
}

