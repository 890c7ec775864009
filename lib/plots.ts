// Plotly figures as plain JSON ({ data, layout }) built from pneumotype's results: drawn in notebooks and HTML reports.
import { CLASSES, DEFAULTS, type ClassCounts, type Label, type Split } from './config.js';
import { csvRowOf, parseCsv } from './csv.js';
import { ConfigError, quote } from './errors.js';
import type { ManifestRow } from './manifest.js';
import { rocAuc, rocCurve, type EvaluationReport, type Interval } from './metrics.js';
import { createRng, shuffled } from './random.js';
import type { RelabelSummary } from './relabel.js';
import type { EpochRecord } from './train.js';

/** One plotly trace: a plain, JSON-serialisable object (`type`, `x`, `y`, ...). */
export type Trace = Record<string, unknown>;
/** A plotly layout: a plain, JSON-serialisable object. */
export type Layout = Record<string, unknown>;

/**
 * A plotly figure as plain data: no functions, no typed arrays, no NaN (missing values are `null`), so that
 * `JSON.stringify(figure)` is exact. Draw it with `Plotly.newPlot(div, figure.data, figure.layout)`.
 */
export interface Figure {
  data: Trace[];
  layout: Layout;
}

/**
 * Published results of the dataset's authors, to compare with: Kermany et al. (2018), transfer learning from an
 * ImageNet Inception V3 on the same test split (624 images). Fractions, not percentages.
 */
export const PUBLISHED = {
  citation:
    'Kermany DS, Goldbaum M, Cai W, et al. Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep ' +
    'Learning. Cell. 2018;172(5):1122-1131.e9. doi:10.1016/j.cell.2018.02.010',
  short: 'Kermany et al. 2018',
  /** How figures and tables name the published values: where they were measured. */
  label: 'Kermany et al. 2018 (their test split, 624 images)',
  normalVsPneumonia: { accuracy: 0.928, sensitivity: 0.932, specificity: 0.901, auc: 0.968 },
  bacteriaVsVirus: { accuracy: 0.907, sensitivity: 0.886, specificity: 0.909, auc: 0.94 },
} as const;

/**
 * One colour per class, the same in every figure: Okabe-Ito colours, told apart with colour-vision deficiencies
 * (blue, orange, reddish purple; never red against green).
 */
export const CLASS_COLORS: Readonly<Record<Label, string>> = { normal: '#0072B2', bacteria: '#E69F00', virus: '#CC79A7' };

/** Colours of the other series: training vs validation, this model vs the published one, the chance line. */
export const SERIES_COLORS = {
  train: '#0072B2',
  val: '#D55E00',
  extra: '#009E73',
  learningRate: '#7F7F7F',
  published: '#8C8C8C',
  model: '#0072B2',
  chance: '#9E9E9E',
} as const;

const FONT = { family: 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif', size: 13 };

/** The layout every figure starts from. */
function baseLayout(title: string, height: number, extra: Layout = {}): Layout {
  return {
    title: { text: title, x: 0.02, xanchor: 'left' },
    font: FONT,
    height,
    margin: { l: 64, r: 24, t: 64, b: 100 },
    paper_bgcolor: '#ffffff',
    plot_bgcolor: '#ffffff',
    // At the very bottom of the figure, below the axis titles, whatever the height.
    legend: { orientation: 'h', x: 0.01, xanchor: 'left', y: 0.01, yref: 'container', yanchor: 'bottom' },
    ...extra,
  };
}

/** An axis with a title, light grid lines and a visible zero line. */
function axis(title: string, extra: Layout = {}): Layout {
  return { title: { text: title }, gridcolor: '#e6e6e6', zerolinecolor: '#bdbdbd', automargin: true, ...extra };
}

/** A finite number, or null (JSON has no NaN or Infinity; plotly draws null as a gap). */
function finite(v: number | undefined): number | null {
  return v !== undefined && Number.isFinite(v) ? v : null;
}

function pct(v: number | undefined, digits = 1): string {
  return v !== undefined && Number.isFinite(v) ? `${(v * 100).toFixed(digits)} %` : 'n/a';
}

/** Axis names of subplot k (1-based): x/y, x2/y2, ... and their layout keys xaxis/yaxis, xaxis2/yaxis2, ... */
function axisNames(k: number): { x: string; y: string; xKey: string; yKey: string } {
  const s = k === 1 ? '' : String(k);
  return { x: `x${s}`, y: `y${s}`, xKey: `xaxis${s}`, yKey: `yaxis${s}` };
}

/** Horizontal domains of `n` side-by-side panels with a gap between them. */
function columnDomains(n: number, gap = 0.08): [number, number][] {
  const w = (1 - gap * (n - 1)) / n;
  return Array.from({ length: n }, (_, i) => [round4(i * (w + gap)), round4(i * (w + gap) + w)]);
}

/** Rounded to 4 decimals; never -0 (JSON would write it as 0). */
function round4(v: number): number {
  return Math.round(v * 1e4) / 1e4 || 0;
}

/** A subplot title written as an annotation above the panel's domain. */
function panelTitle(text: string, domain: [number, number], y = 1): Layout {
  return {
    text: `<b>${escapeText(text)}</b>`,
    x: (domain[0] + domain[1]) / 2,
    y,
    xref: 'paper',
    yref: 'paper',
    xanchor: 'center',
    yanchor: 'bottom',
    showarrow: false,
    font: { size: 13 },
  };
}

/** A title cut in the middle to at most `max` characters (its end, a file name's, kept): tiles have a fixed width. */
const TILE_TITLE_CHARS = 48;
function shorten(s: string, max: number): string {
  if (s.length <= max) return s;
  const head = Math.ceil((max - 1) / 2);
  return `${s.slice(0, head)}…${s.slice(s.length - (max - 1 - head))}`;
}

/** Plotly renders a small subset of HTML in text: escape what comes from file names and labels. */
function escapeText(s: string): string {
  return s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}

// ---------------------------------------------------------------------------------------------------------------
// The data

const SPLIT_ORDER: readonly Split[] = ['train', 'val', 'test'];

/**
 * Images and distinct patients per split and class, from summary.json or from manifest rows (an empty patient id
 * counts the image as a patient of its own).
 *
 * @example classCounts(await readManifest('data/labeled')).images.train?.virus // 1345
 */
export function classCounts(source: RelabelSummary | readonly ManifestRow[]): {
  splits: Split[];
  images: Partial<Record<Split, ClassCounts>>;
  patients: Partial<Record<Split, ClassCounts>>;
} {
  if (!Array.isArray(source)) {
    const summary = source as RelabelSummary;
    const splits = SPLIT_ORDER.filter((s) => summary.counts[s] !== undefined);
    return { splits, images: summary.counts, patients: summary.patients };
  }
  const images: Partial<Record<Split, ClassCounts>> = {};
  const ids: Partial<Record<Split, Record<Label, Set<string>>>> = {};
  for (const row of source as readonly ManifestRow[]) {
    const c = (images[row.split] ??= { normal: 0, bacteria: 0, virus: 0, total: 0 });
    c[row.label] += 1;
    c.total += 1;
    const p = (ids[row.split] ??= { normal: new Set(), bacteria: new Set(), virus: new Set() });
    p[row.label].add(row.patientId === '' ? `\u0000${row.file}` : row.patientId);
  }
  const patients: Partial<Record<Split, ClassCounts>> = {};
  for (const [split, sets] of Object.entries(ids) as [Split, Record<Label, Set<string>>][]) {
    const counts = { normal: sets.normal.size, bacteria: sets.bacteria.size, virus: sets.virus.size, total: 0 };
    counts.total = counts.normal + counts.bacteria + counts.virus;
    patients[split] = counts;
  }
  return { splits: SPLIT_ORDER.filter((s) => images[s] !== undefined), images, patients };
}

/**
 * Images and patients per split and class as grouped bars, one colour per class: images on the left, distinct
 * patients on the right. Takes relabel's summary.json or the manifest rows.
 *
 * @example showFigure(tslab.display, classDistributionFigure(JSON.parse(await readFile('data/labeled/summary.json', 'utf8'))))
 */
export function classDistributionFigure(source: RelabelSummary | readonly ManifestRow[], options: { title?: string } = {}): Figure {
  const { splits, images, patients } = classCounts(source);
  const domains = columnDomains(2, 0.1);
  const data: Trace[] = [];
  const panels: [Partial<Record<Split, ClassCounts>>, string][] = [[images, 'images'], [patients, 'patients']];
  panels.forEach(([counts, unit], p) => {
    const ax = axisNames(p + 1);
    for (const label of CLASSES) {
      const y = splits.map((s) => counts[s]?.[label] ?? 0);
      data.push({
        type: 'bar',
        name: label,
        legendgroup: label,
        showlegend: p === 0,
        x: splits,
        y,
        text: y.map(String),
        textposition: 'outside',
        cliponaxis: false,
        marker: { color: CLASS_COLORS[label] },
        xaxis: ax.x,
        yaxis: ax.y,
        hovertemplate: `%{x} · ${label}: %{y} ${unit}<extra></extra>`,
      });
    }
  });
  const layout = baseLayout(options.title ?? 'Images and patients per split and class', 420, {
    barmode: 'group',
    xaxis: axis('split', { domain: domains[0], anchor: 'y' }),
    yaxis: axis('images', { anchor: 'x', rangemode: 'tozero' }),
    xaxis2: axis('split', { domain: domains[1], anchor: 'y2' }),
    yaxis2: axis('patients', { anchor: 'x2', rangemode: 'tozero' }),
    annotations: [panelTitle('images', domains[0] as [number, number]), panelTitle('distinct patients', domains[1] as [number, number])],
  });
  return { data, layout };
}

/**
 * Stored pixel size (width x height) of every image of the manifest, one colour per class: the originals vary a lot
 * in size and aspect ratio before they are squashed to a square.
 *
 * @example imageSizeFigure(await readManifest('data/labeled'))
 */
export function imageSizeFigure(rows: readonly ManifestRow[], options: { title?: string } = {}): Figure {
  const data: Trace[] = CLASSES.map((label) => {
    const mine = rows.filter((r) => r.label === label && r.width > 0 && r.height > 0);
    return {
      type: 'scatter',
      mode: 'markers',
      name: `${label} (${mine.length})`,
      x: mine.map((r) => r.width),
      y: mine.map((r) => r.height),
      marker: { color: CLASS_COLORS[label], size: 4, opacity: 0.5 },
      hovertemplate: `${label}: %{x} x %{y} px<extra></extra>`,
    };
  });
  const layout = baseLayout(options.title ?? 'Stored image sizes', 460, {
    xaxis: axis('width (px)', { rangemode: 'tozero' }),
    yaxis: axis('height (px)', { rangemode: 'tozero' }),
  });
  // One size for every image (the shared 224 px copies): a lone dot in a corner says little, a note says it all.
  const sized = rows.filter((r) => r.width > 0 && r.height > 0);
  const sizes = new Set(sized.map((r) => `${r.width} x ${r.height}`));
  if (sized.length > 0 && sizes.size === 1) {
    layout.annotations = [{
      text: `all ${sized.length.toLocaleString('en-US')} images are ${[...sizes][0]} px`,
      xref: 'paper', yref: 'paper', x: 0.5, y: 0.5, showarrow: false, font: { size: 15 },
    }];
  }
  return { data, layout };
}

// ---------------------------------------------------------------------------------------------------------------
// Images

/** One grayscale image to show: `size * size` bytes, row-major, 0 black to 255 white. */
export interface GraySample {
  readonly pixels: Uint8Array;
  readonly size: number;
  /** Shown above the image; a line break ('\n') starts a second line, each line shortened on its own. */
  readonly title: string;
}

export interface SampleGridOptions {
  /** Images per row (default: up to 4, fewer for fewer images). */
  readonly columns?: number;
  /** Images larger than this are box-averaged down to it, to keep the figure's JSON small (default 96). */
  readonly maxSize?: number;
  readonly title?: string;
  /** Height of one row in pixels (default 220). */
  readonly rowHeight?: number;
}

/**
 * Box-averages a square grayscale image down to `target` pixels a side (no change when already that small).
 *
 * @example downsampleGray(cache.readImage(0), 224, 96).pixels.length // 9216
 */
export function downsampleGray(pixels: Uint8Array, size: number, target: number): { pixels: Uint8Array; size: number } {
  if (size <= target) return { pixels, size };
  const out = new Uint8Array(target * target);
  for (let oy = 0; oy < target; oy++) {
    const y0 = Math.floor((oy * size) / target);
    const y1 = Math.max(y0 + 1, Math.floor(((oy + 1) * size) / target));
    for (let ox = 0; ox < target; ox++) {
      const x0 = Math.floor((ox * size) / target);
      const x1 = Math.max(x0 + 1, Math.floor(((ox + 1) * size) / target));
      let sum = 0;
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) sum += pixels[y * size + x] as number;
      out[oy * target + ox] = Math.round(sum / ((y1 - y0) * (x1 - x0)));
    }
  }
  return { pixels: out, size: target };
}

/**
 * A grid of grayscale images (heatmaps with a gray scale, image rows top to bottom, square pixels), each titled.
 * Images larger than `maxSize` (96) are averaged down first so that the JSON stays small.
 *
 * @example sampleGridFigure([{ pixels: cache.readImage(0), size: cache.imageSize, title: 'normal' }])
 */
export function sampleGridFigure(samples: readonly GraySample[], options: SampleGridOptions = {}): Figure {
  const maxSize = options.maxSize ?? 96;
  if (!Number.isInteger(maxSize) || maxSize < 1) {
    throw new ConfigError(`maxSize ${quote(maxSize)} is not valid: expected a positive integer`);
  }
  samples.forEach((s, i) => {
    if (!Number.isInteger(s.size) || s.size < 1 || s.pixels.length !== s.size * s.size) {
      throw new ConfigError(
        `sample ${i} (${quote(s.title)}) has ${s.pixels.length} bytes for size ${quote(s.size)}: expected size x size bytes`,
      );
    }
  });
  const columns = Math.max(1, Math.min(options.columns ?? 4, Math.max(1, samples.length)));
  const rows = Math.max(1, Math.ceil(samples.length / columns));
  const rowHeight = options.rowHeight ?? 220;
  const gapX = 0.03;
  const gapY = 0.09;
  const w = (1 - gapX * (columns - 1)) / columns;
  const h = (1 - gapY * (rows - 1)) / rows;
  const data: Trace[] = [];
  // Room above the first row for its tiles' titles: a second line of title needs about 14 px more.
  const extraTitleLines = Math.max(0, ...samples.map((s) => s.title.split('\n').length - 1));
  const layout = baseLayout(options.title ?? 'Sample images', 60 + 14 * extraTitleLines + rows * rowHeight, {
    margin: { l: 16, r: 16, t: 64 + 14 * extraTitleLines, b: 16 },
    showlegend: false,
  });
  const annotations: Layout[] = [];
  samples.forEach((sample, i) => {
    const small = downsampleGray(sample.pixels, sample.size, maxSize);
    const z: number[][] = [];
    for (let y = 0; y < small.size; y++) z.push(Array.from(small.pixels.subarray(y * small.size, (y + 1) * small.size)));
    const ax = axisNames(i + 1);
    const col = i % columns;
    const row = Math.floor(i / columns);
    const xDomain: [number, number] = [round4(col * (w + gapX)), round4(col * (w + gapX) + w)];
    const yTop = 1 - row * (h + gapY);
    const yDomain: [number, number] = [Math.max(0, round4(yTop - h)), round4(yTop)];
    data.push({
      type: 'heatmap',
      name: sample.title,
      z,
      zmin: 0,
      zmax: 255,
      colorscale: [[0, '#000000'], [1, '#ffffff']],
      showscale: false,
      xaxis: ax.x,
      yaxis: ax.y,
      hovertemplate: `${sample.title.split('\n').map(escapeText).join('<br>')}<br>x %{x}, y %{y}: %{z}<extra></extra>`,
    });
    const hidden = { showgrid: false, zeroline: false, showticklabels: false, ticks: '', showline: false };
    layout[ax.xKey] = { ...hidden, domain: xDomain, anchor: ax.y, constrain: 'domain' };
    layout[ax.yKey] = { ...hidden, domain: yDomain, anchor: ax.x, autorange: 'reversed', scaleanchor: ax.x, constrain: 'domain' };
    annotations.push({
      // As much as a tile's width holds at 12 px (about 100 characters across the figure): whole in the hover text.
      text: sample.title
        .split('\n')
        .map((line) => escapeText(shorten(line, Math.max(12, Math.min(TILE_TITLE_CHARS, Math.floor(100 / columns))))))
        .join('<br>'),
      x: (xDomain[0] + xDomain[1]) / 2,
      y: yDomain[1],
      xref: 'paper',
      yref: 'paper',
      xanchor: 'center',
      yanchor: 'bottom',
      showarrow: false,
      font: { size: 12 },
    });
  });
  if (samples.length === 0) {
    annotations.push({ text: 'no images', x: 0.5, y: 0.5, xref: 'paper', yref: 'paper', showarrow: false });
    layout.xaxis = { visible: false };
    layout.yaxis = { visible: false };
  }
  layout.annotations = annotations;
  return { data, layout };
}

/** The subset of an opened cache (lib/cache.ts OpenedCache) that {@link cacheSamples} reads. */
export interface SampleSource {
  readonly imageSize: number;
  readonly index: { readonly images: readonly { readonly file: string; readonly label: Label; readonly subset: string }[] };
  readImage(i: number): Uint8Array;
}

/**
 * Picks `perClass` (4) images of each class from a prepared cache, optionally of one subset, seeded by `seed`
 * (DEFAULTS.seed) so that they are the same every time; ready for {@link sampleGridFigure}, titled `label` and `file` on two lines.
 *
 * @example
 * const cache = await openCache('data/cache/128')
 * try { showFigure(tslab.display, sampleGridFigure(cacheSamples(cache, { perClass: 4 }), { columns: 4 })) } finally { cache.close() }
 */
export function cacheSamples(
  cache: SampleSource,
  options: { perClass?: number; subset?: string; seed?: number } = {},
): GraySample[] {
  const perClass = options.perClass ?? 4;
  const rng = createRng(options.seed ?? DEFAULTS.seed);
  const out: GraySample[] = [];
  for (const label of CLASSES) {
    const idx: number[] = [];
    cache.index.images.forEach((im, i) => {
      if (im.label === label && (options.subset === undefined || im.subset === options.subset)) idx.push(i);
    });
    for (const i of shuffled(idx, rng).slice(0, perClass)) {
      const im = cache.index.images[i];
      out.push({ pixels: cache.readImage(i), size: cache.imageSize, title: `${label}\n${im?.file.split('/').at(-1) ?? i}` });
    }
  }
  return out;
}

/**
 * Overlaid pixel-intensity distributions, one line per class: the share of all pixels of the class's images in each
 * of `bins` (64) equal bins from 0 to 255. Differences in exposure between classes are a shortcut a model can learn.
 *
 * @example intensityHistogramFigure({ normal: [px1, px2], bacteria: [px3], virus: [px4] })
 */
export function intensityHistogramFigure(
  perClass: Partial<Record<Label, readonly Uint8Array[]>>,
  options: { bins?: number; title?: string } = {},
): Figure {
  const bins = options.bins ?? 64;
  if (!Number.isInteger(bins) || bins < 1 || bins > 256) {
    throw new ConfigError(`bins ${quote(bins)} is not valid: expected an integer from 1 to 256`);
  }
  const width = 256 / bins;
  const centers = Array.from({ length: bins }, (_, b) => round4((b + 0.5) * width - 0.5));
  const data: Trace[] = [];
  for (const label of CLASSES) {
    const images = perClass[label];
    if (!images || images.length === 0) continue;
    const counts = new Float64Array(bins);
    let n = 0;
    let sum = 0;
    for (const px of images) {
      for (let i = 0; i < px.length; i++) {
        const v = px[i] as number;
        counts[Math.min(bins - 1, Math.floor(v / width))]! += 1;
        sum += v;
      }
      n += px.length;
    }
    const share = Array.from(counts, (c) => (n > 0 ? c / n : 0));
    data.push({
      type: 'scatter',
      mode: 'lines',
      name: `${label} (${images.length} images, mean ${n > 0 ? (sum / n).toFixed(1) : 'n/a'})`,
      x: centers,
      y: share,
      line: { color: CLASS_COLORS[label], width: 2, shape: 'spline', smoothing: 0.3 },
      fill: 'tozeroy',
      opacity: 0.6,
      hovertemplate: `${label}: %{y:.2%} of pixels near %{x:.0f}<extra></extra>`,
    });
  }
  const layout = baseLayout(options.title ?? 'Pixel intensity by class', 400, {
    xaxis: axis('pixel intensity (0 black, 255 white)', { range: [0, 255] }),
    yaxis: axis('share of pixels', { tickformat: '.1%', rangemode: 'tozero' }),
  });
  return { data, layout };
}

// ---------------------------------------------------------------------------------------------------------------
// Training

/**
 * Training curves from history.json: loss (train and validation) on the left, accuracy (train and validation) and
 * validation macro-F1 on the right, the learning rate as a dotted line on a right-hand axis of the loss panel (unless
 * `learningRate: false`), and a dotted vertical line at the best epoch.
 *
 * @example trainingCurvesFigure(JSON.parse(await readFile('runs/cpu-1/history.json', 'utf8')))
 */
export function trainingCurvesFigure(
  history: readonly EpochRecord[],
  options: { learningRate?: boolean; title?: string } = {},
): Figure {
  const showLr = options.learningRate ?? true;
  const epochs = history.map((r) => r.epoch);
  // The legend names a style once (train solid, validation dashed) for both panels; a click hides the pair. Each
  // point's hover names its series in full.
  const line = (series: string, y: number[], color: string, dash: string, xaxis: string, yaxis: string, group: string, legend?: string): Trace => ({
    type: 'scatter',
    mode: history.length > 1 ? 'lines+markers' : 'markers',
    name: legend ?? series,
    ...(xaxis === 'x2' && legend !== undefined ? { showlegend: false } : {}),
    legendgroup: group,
    x: epochs,
    y: y.map((v) => finite(v)),
    line: { color, dash, width: 2 },
    marker: { color, size: 5 },
    xaxis,
    yaxis,
    hovertemplate: `${series}, epoch %{x}: %{y:.4f}<extra></extra>`,
  });
  const data: Trace[] = [
    line('train loss', history.map((r) => r.loss), SERIES_COLORS.train, 'solid', 'x', 'y', 'train', 'train'),
    line('validation loss', history.map((r) => r.valLoss), SERIES_COLORS.val, 'dash', 'x', 'y', 'val', 'validation'),
    line('train accuracy', history.map((r) => r.accuracy), SERIES_COLORS.train, 'solid', 'x2', 'y2', 'train', 'train'),
    line('validation accuracy', history.map((r) => r.valAccuracy), SERIES_COLORS.val, 'dash', 'x2', 'y2', 'val', 'validation'),
    line('validation macro-F1', history.map((r) => r.valMacroF1), SERIES_COLORS.extra, 'dot', 'x2', 'y2', 'f1'),
  ];
  const domains = columnDomains(2, 0.2); // room between the panels for the learning-rate axis and the next axis title
  // One epoch range for both panels, set here: autorange would stretch the right one to fit the best-epoch label.
  const epochRange = epochs.length === 0 ? undefined : [Math.min(...epochs) - 0.5, Math.max(...epochs) + 0.5];
  const layout = baseLayout(options.title ?? 'Training curves', 440, {
    xaxis: axis('epoch', { domain: domains[0], anchor: 'y', dtick: history.length <= 20 ? 1 : undefined, range: epochRange }),
    yaxis: axis('loss', { anchor: 'x', rangemode: 'tozero' }),
    xaxis2: axis('epoch', { domain: domains[1], anchor: 'y2', dtick: history.length <= 20 ? 1 : undefined, range: epochRange }),
    yaxis2: axis('accuracy / macro-F1', { anchor: 'x2', range: [0, 1.02], tickformat: '.0%' }),
    hovermode: 'x unified',
  });
  const annotations: Layout[] = [
    panelTitle('loss', domains[0] as [number, number]),
    panelTitle('accuracy and macro-F1', domains[1] as [number, number]),
  ];
  if (showLr) {
    data.push({
      ...line('learning rate', history.map((r) => r.learningRate), SERIES_COLORS.learningRate, 'dot', 'x', 'y3', 'lr'),
      mode: history.length > 1 ? 'lines' : 'markers', // one epoch: a line of one point draws nothing
      line: { color: SERIES_COLORS.learningRate, dash: 'dot', width: 1.5 },
      hovertemplate: 'learning rate, epoch %{x}: %{y:.2e}<extra></extra>',
    });
    layout.yaxis3 = axis('learning rate', {
      overlaying: 'y',
      side: 'right',
      anchor: 'x',
      rangemode: 'tozero',
      showgrid: false,
      // Round rates (0.025, 0.05, …), not ticks synced to the loss axis's grid (2.7e-2, 5.3e-2: plotly's default for an
      // overlaying axis).
      tickmode: 'auto',
      nticks: 6,
      tickformat: '~g',
      title: { text: 'learning rate', font: { color: SERIES_COLORS.learningRate } },
      tickfont: { color: SERIES_COLORS.learningRate },
    });
  }
  // JSON has no undefined: drop the dtick and range keys that were left undefined.
  for (const key of ['xaxis', 'xaxis2']) {
    const ax = layout[key] as Layout;
    if (ax.dtick === undefined) delete ax.dtick;
    if (ax.range === undefined) delete ax.range;
  }
  const best = [...history].reverse().find((r) => r.best);
  if (best) {
    layout.shapes = ['x', 'x2'].map((xref, i) => ({
      type: 'line',
      xref,
      yref: `${i === 0 ? 'y' : 'y2'} domain`,
      x0: best.epoch,
      x1: best.epoch,
      y0: 0,
      y1: 1,
      line: { color: '#555555', dash: 'dot', width: 1 },
    }));
    annotations.push({
      text: `best epoch ${best.epoch}`,
      x: best.epoch,
      y: 1,
      xref: 'x2',
      yref: 'y2 domain',
      // Into the panel: leftwards from a best epoch in the right half, so the label is never cut at the edge.
      xanchor: epochs.length > 0 && best.epoch > (Math.min(...epochs) + Math.max(...epochs)) / 2 ? 'right' : 'left',
      yanchor: 'top',
      showarrow: false,
      font: { size: 11, color: '#555555' },
    });
  }
  layout.annotations = annotations;
  return { data, layout };
}

// ---------------------------------------------------------------------------------------------------------------
// Evaluation

/**
 * The confusion matrix as a heatmap: rows are the true class, columns the predicted class (both in CLASSES order,
 * first row at the top); each cell shows its count and its share of the row (the recall of the diagonal).
 *
 * @example confusionMatrixFigure(report.confusion)
 */
export function confusionMatrixFigure(
  confusion: readonly (readonly number[])[],
  options: { labels?: readonly string[]; title?: string } = {},
): Figure {
  const labels = options.labels ?? CLASSES;
  const k = labels.length;
  if (confusion.length !== k || confusion.some((row) => row.length !== k)) {
    throw new ConfigError(
      `confusion matrix ${quote(confusion)} is not ${k} x ${k}: expected one row and one column per class (${labels.join(', ')})`,
    );
  }
  const z = confusion.map((row) => row.map((v) => v));
  const rowShare = z.map((row) => {
    const total = row.reduce((a, b) => a + b, 0);
    return row.map((v) => (total > 0 ? v / total : null));
  });
  const max = Math.max(0, ...z.flat());
  const annotations: Layout[] = [];
  z.forEach((row, r) =>
    row.forEach((v, c) => {
      const share = rowShare[r]?.[c];
      annotations.push({
        text: `<b>${v}</b><br>${share === null || share === undefined ? 'n/a' : `${(share * 100).toFixed(1)} %`}`,
        x: labels[c],
        y: labels[r],
        xref: 'x',
        yref: 'y',
        showarrow: false,
        font: { color: max > 0 && v / max > 0.5 ? '#ffffff' : '#1a1a1a', size: 13 },
      });
    }),
  );
  const data: Trace[] = [
    {
      type: 'heatmap',
      z,
      x: [...labels],
      y: [...labels],
      customdata: rowShare,
      colorscale: [[0, '#f7fbff'], [0.5, '#6baed6'], [1, '#08306b']],
      zmin: 0,
      zmax: Math.max(1, max),
      xgap: 2,
      ygap: 2,
      colorbar: { title: { text: 'images' } },
      hovertemplate: 'true %{y}, predicted %{x}: %{z} images (%{customdata:.1%} of the row)<extra></extra>',
    },
  ];
  const layout = baseLayout(options.title ?? 'Confusion matrix', 440, {
    xaxis: axis('predicted class', { type: 'category', side: 'bottom', showgrid: false }),
    yaxis: axis('true class', { type: 'category', autorange: 'reversed', showgrid: false }),
    annotations,
  });
  return { data, layout };
}

/** One ROC curve to draw: false and true positive rates from lib/metrics.ts rocCurve, and its AUC. */
export interface RocCurveData {
  readonly name: string;
  readonly fpr: readonly number[];
  readonly tpr: readonly number[];
  readonly auc: number;
  readonly color?: string;
  /** One class against the two others, or one of the two binary views of the report. */
  readonly kind?: 'one-vs-rest' | 'binary';
}

/** The dashed diagonal from (0, 0) to (1, 1): chance in a ROC plot, perfect calibration in a reliability diagram. */
function diagonal(name: string): Trace {
  return { type: 'scatter', mode: 'lines', name, x: [0, 1], y: [0, 1], line: { color: SERIES_COLORS.chance, dash: 'dash', width: 1 }, hoverinfo: 'skip' };
}

const PALETTE = ['#0072B2', '#E69F00', '#CC79A7', '#009E73', '#D55E00', '#56B4E9', '#000000'];

/**
 * ROC curves (false positive rate against true positive rate), each named with its AUC, and the chance diagonal.
 *
 * @example rocFigure([{ name: 'virus', ...rocCurve(scores, positives), auc: rocAuc(scores, positives) }])
 */
export function rocFigure(curves: readonly RocCurveData[], options: { title?: string } = {}): Figure {
  const data: Trace[] = [diagonal('chance')];
  curves.forEach((c, i) => {
    if (c.fpr.length !== c.tpr.length) {
      throw new ConfigError(`ROC curve ${quote(c.name)} has ${c.fpr.length} fpr but ${c.tpr.length} tpr values: expected as many`);
    }
    data.push({
      type: 'scatter',
      mode: 'lines',
      name: `${c.name} (AUC ${Number.isFinite(c.auc) ? c.auc.toFixed(3) : 'n/a'})`,
      x: c.fpr.map((v) => finite(v)),
      y: c.tpr.map((v) => finite(v)),
      line: { color: c.color ?? PALETTE[i % PALETTE.length], width: 2 },
      hovertemplate: `${escapeText(c.name)}: FPR %{x:.3f}, TPR %{y:.3f}<extra></extra>`,
    });
  });
  const layout = baseLayout(options.title ?? 'ROC curves', 540, {
    // A square plot, its legend centred below it: inside the plot it covered curves; beside it, on a wide page, it sat
    // stranded at the far edge.
    xaxis: axis('false positive rate (1 - specificity)', { range: [-0.01, 1.01], constrain: 'domain' }),
    yaxis: axis('true positive rate (sensitivity)', { range: [-0.01, 1.01], scaleanchor: 'x', constrain: 'domain' }),
    margin: { l: 64, r: 24, t: 64, b: 130 },
    legend: { orientation: 'h', x: 0.5, xanchor: 'center', y: 0.01, yref: 'container', yanchor: 'bottom' },
  });
  return { data, layout };
}

/**
 * The reliability diagram: for each bin of the top probability, the share of right answers (bars, with the images
 * in each bin on hover) against the bin's mean top probability (dots), beside the diagonal of perfect calibration;
 * the title gives the expected calibration error and the Brier score with their intervals. Bars below the diagonal
 * mean overconfidence.
 *
 * @example reliabilityFigure(evaluatePredictions(preds).calibration)
 */
export function reliabilityFigure(calibration: EvaluationReport['calibration'], options: { title?: string } = {}): Figure {
  const bins = calibration.bins.filter((b) => b.n > 0);
  const mid = (b: { low: number; high: number }): number => (b.low + b.high) / 2;
  // A NaN saved to JSON comes back as null: shown as n/a, not thrown on.
  const point = (v: unknown): string => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(3) : 'n/a');
  const range = (i: Interval): string => (Number.isFinite(i.low) && Number.isFinite(i.high) ? ` [${i.low.toFixed(3)}, ${i.high.toFixed(3)}]` : '');
  const data: Trace[] = [
    diagonal('perfectly calibrated'),
    {
      type: 'bar',
      name: 'accuracy in the bin',
      x: bins.map(mid),
      y: bins.map((b) => finite(b.accuracy)),
      width: bins.map((b) => (b.high - b.low) * 0.9),
      marker: { color: SERIES_COLORS.model, opacity: 0.75 },
      // Each bin's images written in it: a bin of 15 must not look as solid as one of 200.
      text: bins.map((b) => `n = ${b.n}`),
      // Inside a tall bar, above a short one (a bin with no image right has no bar to write in).
      textposition: 'auto',
      insidetextanchor: 'start',
      textangle: 0,
      insidetextfont: { color: '#ffffff', size: 11 },
      outsidetextfont: { color: '#333333', size: 11 },
      cliponaxis: false,
      customdata: bins.map((b) => [b.low, b.high, b.n, finite(b.confidence)]),
      hovertemplate: 'top probability %{customdata[0]:.1f}-%{customdata[1]:.1f}: %{customdata[2]} images, ' +
        'accuracy %{y:.3f}, mean top probability %{customdata[3]:.3f}<extra></extra>',
    },
    {
      type: 'scatter',
      mode: 'markers',
      name: 'mean top probability',
      x: bins.map(mid),
      y: bins.map((b) => finite(b.confidence)),
      marker: { color: SERIES_COLORS.val, size: 8, symbol: 'diamond' },
      hoverinfo: 'skip',
    },
  ];
  const { ece, brier } = calibration;
  const title = options.title ?? `Reliability: ECE ${point(ece.value)}${range(ece)}, Brier ${point(brier.value)}${range(brier)}`;
  const layout = baseLayout(title, 440, {
    xaxis: axis('top probability (the model\'s confidence)', { range: [0, 1], dtick: 0.1 }),
    yaxis: axis('share predicted right', { range: [0, 1.02] }),
    bargap: 0,
    legend: { x: 0.02, y: 0.98, xanchor: 'left', yanchor: 'top', bgcolor: 'rgba(255,255,255,0.85)', bordercolor: '#cccccc', borderwidth: 1 },
  });
  return { data, layout };
}

/** One row of the predictions CSV written by evaluateModel's `predictions` option. */
export interface PredictionRow {
  readonly file: string;
  readonly patientId: string;
  readonly trueLabel: Label;
  readonly predictedLabel: Label;
  readonly normal: number;
  readonly bacteria: number;
  readonly virus: number;
}

/** The columns of evaluate's predictions CSV that the report reads. */
const PREDICTION_COLUMNS = ['file', 'trueLabel', 'predictedLabel', ...CLASSES] as const;

/**
 * Parses the predictions CSV of evaluateModel (`file,patientId,trueLabel,predictedLabel,normal,bacteria,virus`).
 * `path` only names the file in errors.
 *
 * @example parsePredictionsCsv(await readFile('runs/cpu-1/predictions.csv', 'utf8'), 'runs/cpu-1/predictions.csv')
 */
export function parsePredictionsCsv(text: string, path = '<predictions>'): PredictionRow[] {
  // Another file given by mistake (evaluation.json, say) would give no rows, and the charts it feeds would vanish.
  const header = (text.replace(/^\uFEFF/, '').split(/\r?\n/, 1)[0] ?? '').split(',').map((c) => c.trim().replace(/^"|"$/g, ''));
  const missing = PREDICTION_COLUMNS.filter((c) => !header.includes(c));
  if (missing.length > 0) {
    throw new ConfigError(`${quote(path)} is not a predictions CSV: it lacks the column${missing.length > 1 ? 's' : ''} ${missing.join(', ')} (evaluate --predictions writes one)`, { path });
  }
  const rows = parseCsv(text, path);
  if (rows.length === 0) throw new ConfigError(`${quote(path)} holds no predictions (a header and no rows)`, { path });
  return rows.map((r, i) => {
    const label = (key: 'trueLabel' | 'predictedLabel'): Label => {
      const v = r[key];
      if (!CLASSES.includes(v as Label)) {
        throw new ConfigError(`row ${csvRowOf(r) ?? i + 2} of ${quote(path)}: ${key} ${quote(v)} is not one of ${CLASSES.join(', ')}`, { path });
      }
      return v as Label;
    };
    const prob = (key: Label): number => {
      const v = Number(r[key]);
      if (r[key] === undefined || r[key] === '' || !Number.isFinite(v) || v < 0 || v > 1) {
        throw new ConfigError(`row ${csvRowOf(r) ?? i + 2} of ${quote(path)}: ${key} ${quote(r[key])} is not a probability from 0 to 1`, { path });
      }
      return v;
    };
    return {
      file: r.file ?? '',
      patientId: r.patientId ?? '',
      trueLabel: label('trueLabel'),
      predictedLabel: label('predictedLabel'),
      normal: prob('normal'),
      bacteria: prob('bacteria'),
      virus: prob('virus'),
    };
  });
}

type Scored = Pick<PredictionRow, 'trueLabel' | Label>;

/**
 * ROC curves from per-image predictions: one class against the others for each class (score: its probability), then
 * the report's two binary views: pneumonia vs normal (score 1 - p(normal)) and, among true bacteria and virus
 * images, virus vs bacteria (score p(virus) / (p(bacteria) + p(virus)), 0.5 when both are 0), as in lib/metrics.ts.
 * A curve whose positives or negatives are missing is left out.
 *
 * @example rocFigure(rocCurvesFromPredictions(parsePredictionsCsv(text)).filter((c) => c.kind === 'binary'))
 */
export function rocCurvesFromPredictions(rows: readonly Scored[]): RocCurveData[] {
  const out: RocCurveData[] = [];
  const add = (name: string, scores: number[], positives: boolean[], kind: 'one-vs-rest' | 'binary', color: string): void => {
    const pos = positives.filter(Boolean).length;
    if (pos === 0 || pos === positives.length) return;
    const { fpr, tpr } = rocCurve(scores, positives);
    out.push({ name, fpr, tpr, auc: rocAuc(scores, positives), color, kind });
  };
  for (const label of CLASSES) {
    add(`${label} vs rest`, rows.map((r) => r[label]), rows.map((r) => r.trueLabel === label), 'one-vs-rest', CLASS_COLORS[label]);
  }
  add('pneumonia (positive) vs normal', rows.map((r) => 1 - r.normal), rows.map((r) => r.trueLabel !== 'normal'), 'binary', '#000000');
  const sick = rows.filter((r) => r.trueLabel !== 'normal');
  add(
    'virus (positive) vs bacteria',
    sick.map((r) => (r.bacteria + r.virus > 0 ? r.virus / (r.bacteria + r.virus) : 0.5)),
    sick.map((r) => r.trueLabel === 'virus'),
    'binary',
    SERIES_COLORS.val,
  );
  return out;
}

/**
 * The headline metrics as horizontal bars with their bootstrap intervals as error bars, in three panels stacked top
 * to bottom: the 3-class scores, normal vs pneumonia and bacteria vs virus, the two binary panels beside the
 * published figures of {@link PUBLISHED} (gray, hatched).
 *
 * @example metricBarsFigure(await evaluateModel({ data: 'data/labeled' }))
 */
export function metricBarsFigure(report: EvaluationReport, options: { title?: string; published?: boolean } = {}): Figure {
  const showPublished = options.published ?? true;
  type Row = [string, Interval, number | undefined];
  const nvp = report.binary.normalVsPneumonia;
  const bvv = report.binary.bacteriaVsVirus;
  const pub = PUBLISHED;
  const panels: [string, number, Row[]][] = [
    ['3 classes', report.n, [['accuracy', report.accuracy, undefined], ['balanced accuracy', report.balancedAccuracy, undefined], ['macro-F1', report.macroF1, undefined]]],
    [
      'normal vs pneumonia (pneumonia positive)',
      nvp.n,
      [
        ['accuracy', nvp.accuracy, pub.normalVsPneumonia.accuracy],
        ['sensitivity', nvp.sensitivity, pub.normalVsPneumonia.sensitivity],
        ['specificity', nvp.specificity, pub.normalVsPneumonia.specificity],
        ['AUC', nvp.auc, pub.normalVsPneumonia.auc],
      ],
    ],
    [
      'bacteria vs virus (virus positive)',
      bvv.n,
      [
        ['accuracy', bvv.accuracy, pub.bacteriaVsVirus.accuracy],
        ['sensitivity', bvv.sensitivity, pub.bacteriaVsVirus.sensitivity],
        ['specificity', bvv.specificity, pub.bacteriaVsVirus.specificity],
        ['AUC', bvv.auc, pub.bacteriaVsVirus.auc],
      ],
    ],
  ];
  // Panel heights proportional to their bars (published bars double a panel's), with gaps for the panel titles.
  const weights = panels.map(([, , rows]) => rows.length * (showPublished && rows.some((r) => r[2] !== undefined) ? 2 : 1));
  const gap = 0.09;
  const total = weights.reduce((a, b) => a + b, 0);
  const usable = 1 - gap * (panels.length - 1);
  const data: Trace[] = [];
  const height = 140 + total * 26 + panels.length * 40;
  const layout = baseLayout(options.title ?? 'Metrics with 95 % intervals', height, {
    barmode: 'group',
    bargap: 0.22,
    bargroupgap: 0.05,
    margin: { l: 130, r: 24, t: 72, b: 110 },
  });
  const annotations: Layout[] = [];
  let top = 1;
  panels.forEach(([name, n, rows], p) => {
    const ax = axisNames(p + 1);
    const domain: [number, number] = [round4(Math.max(0, top - (usable * (weights[p] as number)) / total)), round4(top)];
    top = domain[0] - gap;
    const y = rows.map((r) => r[0]);
    data.push({
      type: 'bar',
      orientation: 'h',
      name: 'this model (95 % interval)',
      legendgroup: 'model',
      showlegend: p === 0,
      y,
      x: rows.map((r) => finite(r[1].value)),
      text: rows.map((r) => pct(r[1].value)),
      textposition: 'inside',
      insidetextanchor: 'start',
      textangle: 0,
      marker: { color: SERIES_COLORS.model },
      error_x: {
        type: 'data',
        symmetric: false,
        array: rows.map((r) => (Number.isFinite(r[1].high) && Number.isFinite(r[1].value) ? round4(r[1].high - r[1].value) : null)),
        arrayminus: rows.map((r) => (Number.isFinite(r[1].low) && Number.isFinite(r[1].value) ? round4(r[1].value - r[1].low) : null)),
        color: '#333333',
        thickness: 1.5,
        width: 4,
      },
      customdata: rows.map((r) => [finite(r[1].low), finite(r[1].high)]),
      hovertemplate: `${name} %{y}: %{x:.1%} (95 % interval %{customdata[0]:.1%} to %{customdata[1]:.1%})<extra>this model</extra>`,
      xaxis: ax.x,
      yaxis: ax.y,
    });
    if (showPublished && rows.some((r) => r[2] !== undefined)) {
      data.push({
        type: 'bar',
        orientation: 'h',
        name: PUBLISHED.label,
        legendgroup: 'published',
        showlegend: data.every((t) => t.legendgroup !== 'published'),
        y,
        x: rows.map((r) => (r[2] === undefined ? null : r[2])),
        text: rows.map((r) => (r[2] === undefined ? '' : pct(r[2]))),
        textposition: 'inside',
        insidetextanchor: 'start',
        textangle: 0,
        marker: { color: SERIES_COLORS.published, pattern: { shape: '/', fgcolor: '#ffffff', fillmode: 'overlay', size: 8, solidity: 0.15 } },
        hovertemplate: `${name} %{y}: %{x:.1%}<extra>${PUBLISHED.label}</extra>`,
        xaxis: ax.x,
        yaxis: ax.y,
      });
    }
    const last = p === panels.length - 1;
    layout[ax.xKey] = axis(last ? 'score' : '', { anchor: ax.y, range: [0, 1.02], tickformat: '.0%', ...(p > 0 ? { matches: 'x' } : {}) });
    layout[ax.yKey] = axis('', { domain, anchor: ax.x, type: 'category', autorange: 'reversed', showgrid: false, ticksuffix: '  ' });
    annotations.push({
      text: `<b>${escapeText(name)}</b> (n = ${n})`,
      x: 0,
      y: domain[1],
      xref: 'paper',
      yref: 'paper',
      xanchor: 'left',
      yanchor: 'bottom',
      showarrow: false,
      font: { size: 13 },
    });
  });
  layout.annotations = annotations;
  return { data, layout };
}

/** A misclassified image to show, with what the model said. */
export interface MisclassifiedSample {
  readonly pixels: Uint8Array;
  readonly size: number;
  readonly file: string;
  readonly trueLabel: Label;
  readonly predictedLabel: Label;
  /** The predicted class's probability. */
  readonly confidence: number;
}

/**
 * The predictions the model got wrong, most confident first (up to `limit`, 12): the rows to decode for
 * {@link misclassifiedGalleryFigure}.
 *
 * @example mostConfidentMistakes(parsePredictionsCsv(text), { limit: 8 })
 */
export function mostConfidentMistakes(rows: readonly PredictionRow[], options: { limit?: number } = {}): PredictionRow[] {
  const limit = options.limit ?? 12;
  return rows
    .filter((r) => r.trueLabel !== r.predictedLabel)
    .sort((a, b) => b[b.predictedLabel] - a[a.predictedLabel] || a.file.localeCompare(b.file))
    .slice(0, limit);
}

/**
 * A gallery of misclassified images, each titled `true → predicted (confidence)` over its file name (a second line, so
 * that a long name shortened on a narrow tile never cuts the confidence).
 *
 * @example misclassifiedGalleryFigure([{ pixels, size: 96, file: 'test/virus/x.jpeg', trueLabel: 'virus', predictedLabel: 'bacteria', confidence: 0.91 }])
 */
export function misclassifiedGalleryFigure(
  samples: readonly MisclassifiedSample[],
  options: Omit<SampleGridOptions, 'title'> & { title?: string } = {},
): Figure {
  return sampleGridFigure(
    samples.map((s) => ({
      pixels: s.pixels,
      size: s.size,
      title: `${s.trueLabel} → ${s.predictedLabel} (${pct(s.confidence, 0)})\n${s.file.split('/').at(-1) ?? s.file}`,
    })),
    { ...options, title: options.title ?? 'Misclassified images, most confident first' },
  );
}
