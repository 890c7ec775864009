// Notebook output for tslab: figures, tables and live training charts as HTML, plotly.js inlined once per session.
import { randomBytes } from 'node:crypto';
import { ConfigError, quote } from './errors.js';
import type { Figure } from './plots.js';
import { escapeScriptText, figureElements, PLOT_CONFIG, plotlyBundle, renderTableHtml, scriptJson, type Table } from './report.js';

/**
 * What the helpers need of tslab's display: `html(s)` writes an HTML output. Pass `tslab.display` (a new output each
 * call) or `tslab.newDisplay()` (one output, overwritten by every call). pneumotype does not depend on tslab.
 */
export interface HtmlDisplay {
  html(html: string): void;
}

let plotlyLoaded = false;
let figureCounter = 0;
/** Ids unique across kernel restarts that write into the same page. */
const idPrefix = `pneumotype-${randomBytes(4).toString('hex')}`;

/**
 * The `<script>` that defines window.Plotly: the whole bundle, inlined so that a saved notebook works offline.
 *
 * @example tslab.display.html(plotlyLoaderHtml())
 */
export function plotlyLoaderHtml(): string {
  return `<script type="text/javascript">${plotlyBundle().text}\n</script>`;
}

/**
 * True once this kernel has written plotly.js into the notebook.
 *
 * @example if (!plotlyIsLoaded()) loadPlotly(tslab.display)
 */
export function plotlyIsLoaded(): boolean {
  return plotlyLoaded;
}

/**
 * Forgets that plotly.js was written (the next figure inlines it again): after "clear all outputs" in the notebook,
 * which removes the output that held it.
 *
 * @example forgetPlotly(); showFigure(tslab.display, figure) // carries plotly.js again
 */
export function forgetPlotly(): void {
  plotlyLoaded = false;
}

/**
 * Writes plotly.js into the notebook now, as an output of its own, unless this kernel already did (`force` writes it
 * again). Run it in an early cell: later figures and live charts then stay small.
 *
 * @example import * as tslab from 'tslab'; loadPlotly(tslab.display)
 */
export function loadPlotly(display: HtmlDisplay, options: { force?: boolean } = {}): void {
  if (plotlyLoaded && !options.force) return;
  display.html(plotlyLoaderHtml());
  plotlyLoaded = true;
}

/**
 * The HTML of one figure for a notebook output: a div, the figure's JSON and a script that draws it with
 * `Plotly.newPlot` (or says that plotly.js is missing). `includeBundle` puts plotly.js in front of it. The script
 * finds its elements beside itself and waits until they are attached to the page (JupyterLab runs output scripts
 * before attaching the output). `id` must be a valid HTML id of letters, digits, `-` and `_`. Pure.
 *
 * @example figureHtml(trainingCurvesFigure(history), { id: 'curves', includeBundle: false })
 */
export function figureHtml(figure: Figure, options: { id: string; includeBundle: boolean }): string {
  if (!/^[A-Za-z][\w-]*$/.test(options.id)) {
    throw new ConfigError(`figure id ${quote(options.id)} is not valid: expected a letter, then letters, digits, "-" or "_"`);
  }
  const el = figureElements(figure, options.id);
  const draw = `(function (me) {
  var id = ${scriptJson(options.id)};
  var root = me && me.parentNode ? me.parentNode : document;
  var div = root.querySelector('#' + id) || document.getElementById(id);
  var data = root.querySelector('#' + id + '-data') || document.getElementById(id + '-data');
  if (!div || !data) return;
  var spec = JSON.parse(data.textContent);
  var waited = 0;
  (function draw() {
    if (!window.Plotly) { div.textContent = 'plotly.js is not loaded in this page: run loadPlotly(tslab.display, { force: true }), then draw again.'; return; }
    if (!div.isConnected && waited++ < 200) { setTimeout(draw, 25); return; }
    window.Plotly.newPlot(div, spec.data, spec.layout, ${scriptJson(PLOT_CONFIG)});
  })();
})(document.currentScript);`;
  return [
    ...(options.includeBundle ? [plotlyLoaderHtml()] : []),
    el.div,
    el.json,
    `<script type="text/javascript">${escapeScriptText(draw)}</script>`,
  ].join('\n');
}

function nextId(): string {
  figureCounter += 1;
  return `${idPrefix}-${figureCounter}`;
}

/**
 * Shows a figure in a tslab notebook. The first figure of the kernel session carries plotly.js inline (so the saved
 * notebook, and its HTML export, draw offline); later ones are just the figure.
 *
 * @example import * as tslab from 'tslab'; showFigure(tslab.display, trainingCurvesFigure(history))
 */
export function showFigure(display: HtmlDisplay, figure: Figure): void {
  const includeBundle = !plotlyLoaded;
  display.html(figureHtml(figure, { id: nextId(), includeBundle }));
  plotlyLoaded = true;
}

/**
 * Shows a table: a list of records (columns: every key, in order of first appearance) or a {@link Table}.
 *
 * @example showTable(tslab.display, history.map((r) => ({ epoch: r.epoch, loss: r.loss, valMacroF1: r.valMacroF1 })))
 */
export function showTable(display: HtmlDisplay, rows: readonly object[] | Table): void {
  display.html(`<div style="overflow-x:auto">${renderTableHtml(toTable(rows))}</div>`);
}

/**
 * A list of records as a {@link Table}; values that are not strings, numbers or null are written as JSON.
 *
 * @example toTable([{ epoch: 1, loss: 0.9 }]) // { columns: ['epoch', 'loss'], rows: [[1, 0.9]] }
 */
export function toTable(rows: readonly object[] | Table): Table {
  if (!Array.isArray(rows)) return rows as Table;
  const records = rows as readonly Record<string, unknown>[];
  const columns: string[] = [];
  for (const r of records) for (const k of Object.keys(r)) if (!columns.includes(k)) columns.push(k);
  return {
    columns,
    rows: records.map((r) =>
      columns.map((c) => {
        const v = r[c];
        if (v === undefined || v === null) return null;
        if (typeof v === 'string' || typeof v === 'number') return v;
        // A BigInt (a stat with bigint: true) has no JSON: its digits.
        return typeof v === 'bigint' ? String(v) : (JSON.stringify(v) ?? String(v));
      }),
    ),
  };
}

/** A chart redrawn in place: `update(figure)` replaces the figure of the same output. */
export interface LiveChart {
  update(figure: Figure): void;
}

/**
 * A chart that is redrawn in place, for training curves that grow epoch by epoch. Pass a display that overwrites
 * one output: tslab's `newDisplay()`. When plotly.js has not been written yet, every redraw carries it (a redraw
 * replaces the output that held it): call {@link loadPlotly} in an earlier cell to keep redraws small.
 *
 * @example
 * const chart = liveChart(tslab.newDisplay(), trainingCurvesFigure([]))
 * const history: EpochRecord[] = []
 * await train({ data: 'data/labeled', out: 'runs/nb', preset: 'smoke', onEpoch: (r) => { history.push(r); chart.update(trainingCurvesFigure(history)) } })
 */
export function liveChart(display: HtmlDisplay, figure: Figure): LiveChart {
  const ownsBundle = !plotlyLoaded;
  const draw = (f: Figure): void => {
    display.html(figureHtml(f, { id: nextId(), includeBundle: ownsBundle }));
  };
  draw(figure);
  plotlyLoaded = true;
  return { update: draw };
}
