// The tslab notebooks' helpers: settings from the environment, live displays, and data shaped for one-call cells.
import { existsSync } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { AugmentOptions } from './augment.js';
import type { OpenedCache, Subset } from './cache.js';
import { CLASSES, DEFAULTS, PRESETS, presetAlias, resolveConfig, type Config, type EvaluationSplit, type Label, type PresetName, type Split } from './config.js';
import { batchIterator, type BatchOptions } from './dataset.js';
import { liveChart, type HtmlDisplay } from './display.js';
import { ConfigError, messageOf, quote } from './errors.js';
import { listFiles, projectRoot } from './fsx.js';
import type { GroupMetrics } from './evaluate.js';
import { decodeGray } from './images.js';
import { readManifest } from './manifest.js';
import { isHttpUrl, shownUrl, type ObtainedDataset } from './fetch.js';
import { parsePredictionsCsv, trainingCurvesFigure, type GraySample, type PredictionRow } from './plots.js';
import type { Progress, ProgressCallback } from './progress.js';
import { createRng, shuffled } from './random.js';
import { escapeHtml, fmt, groupsTable, oneSplitNote, type Table } from './report.js';
import { describeProgress, formatBytes } from './terminal.js';
import { loadTf } from './tf.js';
import type { EpochRecord, TrainResult } from './train.js';
import { environmentEndpoint, normalizePrefix, upload, type UploadResult, type UploadSettingNames } from './upload.js';
import type { LeakageAudit } from './phash.js';
import { isJunkEntry, listZip } from './zip.js';

/** The environment variables the notebooks read (set them before starting Jupyter, or let `npm run notebooks` do it). */
export const NOTEBOOK_ENV = {
  preset: 'PNEUMOTYPE_PRESET',
  source: 'PNEUMOTYPE_SOURCE',
  dataDir: 'PNEUMOTYPE_DATA_DIR',
  runDir: 'PNEUMOTYPE_RUN_DIR',
  reportsDir: 'PNEUMOTYPE_REPORTS_DIR',
  groupsCsv: 'PNEUMOTYPE_GROUPS_CSV',
  groupsColumn: 'PNEUMOTYPE_GROUPS_COLUMN',
  bucket: 'PNEUMOTYPE_S3_BUCKET',
  prefix: 'PNEUMOTYPE_S3_PREFIX',
  endpoint: 'PNEUMOTYPE_S3_ENDPOINT',
} as const;

/** How upload's messages name the notebooks' S3 settings: the environment variables they come from, not CLI flags. */
export const NOTEBOOK_UPLOAD_NAMES: UploadSettingNames = Object.freeze({
  bucket: NOTEBOOK_ENV.bucket,
  prefix: NOTEBOOK_ENV.prefix,
  region: 'AWS_REGION',
  endpoint: NOTEBOOK_ENV.endpoint,
  relabel: 'notebook 02-three-labels',
});

/** The preset notebooks use when PNEUMOTYPE_PRESET is not set. */
export const NOTEBOOK_DEFAULT_PRESET: PresetName = 'cpu';

/** Where the notebook uploads to, from the environment; absent when no bucket is named. */
export interface NotebookS3 {
  readonly bucket: string;
  readonly prefix: string;
  /** AWS_REGION, else AWS_DEFAULT_REGION; undefined lets the SDK's profile decide. */
  readonly region: string | undefined;
  /** PNEUMOTYPE_S3_ENDPOINT, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL: an S3-compatible server. */
  readonly endpoint: string | undefined;
}

/** Everything a notebook needs to know about where things are and which preset it runs, all paths absolute. */
export interface NotebookSettings {
  /** The project folder (the nearest one up from the working directory with pneumotype's package.json), else the working directory. */
  readonly root: string;
  readonly preset: PresetName;
  readonly config: Config;
  /** v2 | v3 | URL | absolute path of a local archive. */
  readonly source: string;
  readonly dataDir: string;
  readonly downloadsDir: string;
  readonly extractedDir: string;
  readonly labeledDir: string;
  readonly cacheDir: string;
  /** The training run folder (default `runs/notebook-<preset>`). */
  readonly runDir: string;
  /** Where reports and exported notebooks go (default `<dataDir>/reports`). */
  readonly reportsDir: string;
  /** Spread into evaluateModel's options: `{ groups }` when PNEUMOTYPE_GROUPS_CSV names a CSV, else `{}`. */
  readonly groupBy: { readonly groups?: { readonly csv: string; readonly column: string } };
  readonly s3: NotebookS3 | undefined;
  /** Which variable (or default) each setting came from. */
  readonly origins: Readonly<Record<string, string>>;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

/** Where notebookSettings reads from. */
export interface NotebookSettingsOptions {
  /** Default: process.env. */
  readonly env?: NodeJS.ProcessEnv;
  /** Where to look for the project folder. Default: process.cwd(). */
  readonly cwd?: string;
}

/**
 * The notebooks' settings: the preset (PNEUMOTYPE_PRESET, default `cpu`), the dataset source (PNEUMOTYPE_SOURCE, a
 * relative path taken from the project folder), the data, run and reports folders, the optional groups CSV for
 * metrics by group, and the S3 target (PNEUMOTYPE_S3_BUCKET, AWS_REGION, PNEUMOTYPE_S3_ENDPOINT). Relative paths are
 * resolved from the project folder, not from notebooks/ where Jupyter starts the kernel. Reads files only to find
 * the project folder.
 *
 * @example const nb = notebookSettings(); await fetchDataset({ source: nb.source, outDir: nb.downloadsDir })
 */
export function notebookSettings(options: NotebookSettingsOptions = {}): NotebookSettings {
  const env = options.env ?? process.env;
  const cwd = resolve(options.cwd ?? process.cwd());
  const root = projectRoot(cwd) ?? cwd;
  const origins: Record<string, string> = {};
  const from = (key: keyof typeof NOTEBOOK_ENV, fallback: string): string => {
    const v = nonEmpty(env[NOTEBOOK_ENV[key]]);
    origins[key] = v === undefined ? 'default' : NOTEBOOK_ENV[key];
    return v ?? fallback;
  };

  // `tiny` is the smoke preset's other name, as for the CLI and SageMaker.
  const presetName = presetAlias(from('preset', NOTEBOOK_DEFAULT_PRESET)) ?? NOTEBOOK_DEFAULT_PRESET;
  if (!Object.hasOwn(PRESETS, presetName)) {
    throw new ConfigError(`${NOTEBOOK_ENV.preset} ${quote(presetName)} is not a preset: expected ${Object.keys(PRESETS).map((p) => quote(p)).join(', ')}`);
  }
  const preset = presetName as PresetName;
  const config = resolveConfig(preset);
  const rawSource = from('source', config.source);
  const source = /^(v2|v3)$/.test(rawSource) || isHttpUrl(rawSource) ? rawSource : resolve(root, rawSource);
  const dataDir = resolve(root, from('dataDir', config.dataDir));
  const runDir = resolve(root, from('runDir', join('runs', `notebook-${preset}`)));
  const reportsDir = resolve(root, from('reportsDir', join(dataDir, 'reports')));

  const groupsCsv = nonEmpty(env[NOTEBOOK_ENV.groupsCsv]);
  let groupBy: NotebookSettings['groupBy'] = {};
  if (groupsCsv !== undefined) {
    const csv = resolve(root, groupsCsv);
    if (!existsSync(csv)) {
      throw new ConfigError(`${NOTEBOOK_ENV.groupsCsv} ${quote(csv)} does not exist: expected a CSV with a file column (or unset it)`, { path: csv });
    }
    groupBy = { groups: { csv, column: nonEmpty(env[NOTEBOOK_ENV.groupsColumn]) ?? 'derived_from' } };
  }

  const bucket = nonEmpty(env[NOTEBOOK_ENV.bucket]);
  const s3: NotebookS3 | undefined =
    bucket === undefined
      ? undefined
      : {
          bucket,
          prefix: nonEmpty(env[NOTEBOOK_ENV.prefix]) ?? config.uploadPrefix,
          region: nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION),
          endpoint: nonEmpty(env[NOTEBOOK_ENV.endpoint]) ?? environmentEndpoint(env), // the SDK's variables, as it reads them
        };

  return {
    root,
    preset,
    config,
    source,
    dataDir,
    downloadsDir: join(dataDir, 'downloads'),
    extractedDir: join(dataDir, 'extracted'),
    labeledDir: join(dataDir, 'labeled'),
    cacheDir: join(dataDir, 'cache'),
    runDir,
    reportsDir,
    groupBy,
    s3,
    origins,
  };
}

/** A key prefix as the upload will use it (no leading or trailing slash); one it will refuse, as given. */
function shownPrefix(prefix: string): string {
  try {
    return normalizePrefix(prefix);
  } catch {
    return prefix;
  }
}

/**
 * The settings as a table (setting, value, where it came from), for `showTable`.
 *
 * @example showTable(tslab.display, settingsTable(notebookSettings()))
 */
export function settingsTable(settings: NotebookSettings): Table {
  const o = settings.origins;
  const c = settings.config;
  const rows: (string | number | null)[][] = [
    ['preset', `${settings.preset} (${c.imageSize} px, model ${c.model}, ${c.epochs} epochs, batch ${c.batchSize})`, o.preset ?? 'default'],
    ['dataset source', shownUrl(settings.source), o.source ?? 'default'], // a password or signature in it as ***
    ['data folder', settings.dataDir, o.dataDir ?? 'default'],
    ['run folder', settings.runDir, o.runDir ?? 'default'],
    ['reports folder', settings.reportsDir, o.reportsDir ?? 'default'],
    ['metrics by group', settings.groupBy.groups ? `${settings.groupBy.groups.column} of ${settings.groupBy.groups.csv}` : 'off', NOTEBOOK_ENV.groupsCsv],
    [
      'S3 target',
      settings.s3
        ? `s3://${settings.s3.bucket}/${shownPrefix(settings.s3.prefix)} (region ${settings.s3.region ?? "not set: the AWS profile's, if it names one; else set AWS_REGION to the deployment region"}${settings.s3.endpoint ? `, endpoint ${shownUrl(settings.s3.endpoint)}` : ''})`
        : 'none',
      NOTEBOOK_ENV.bucket,
    ],
  ];
  return { columns: ['setting', 'value', 'from'], rows };
}

// ---------------------------------------------------------------------------------------------------------------
// Live displays

/**
 * A progress callback that draws into one notebook output, redrawn in place: a bar and a line per stage (fetch,
 * extract, relabel, prepare, train, ...), the last message of each. Pass `tslab.newDisplay()`.
 *
 * @example await fetchDataset({ source: 'v2', onProgress: progressDisplay(tslab.newDisplay()) })
 */
export function progressDisplay(display: HtmlDisplay, options: { title?: string } = {}): ProgressCallback {
  const stages = new Map<string, { last: Progress; message: string | undefined }>();
  return (p) => {
    const previous = stages.get(p.stage);
    stages.set(p.stage, { last: p, message: p.message ?? previous?.message });
    const rows = [...stages.entries()].map(([stage, { last, message }]) => {
      const fraction = last.total !== undefined && last.total > 0 ? Math.min(1, last.done / last.total) : undefined;
      const bar =
        fraction === undefined
          ? '<progress style="width:14em;vertical-align:middle"></progress>'
          : `<progress max="1" value="${fraction.toFixed(4)}" style="width:14em;vertical-align:middle"></progress> ${String(Math.min(100, Math.floor((last.done * 100) / (last.total ?? 1)))).padStart(3)} %`;
      const note = message === undefined ? '' : ` <span style="color:#5f6368">${escapeHtml(message)}</span>`;
      return `<div><span style="display:inline-block;min-width:6.5em;font-weight:600">${escapeHtml(stage)}</span> ${bar} &nbsp;${escapeHtml(describeProgress(last))}${note}</div>`;
    });
    const title = options.title === undefined ? '' : `<div style="font-weight:600">${escapeHtml(options.title)}</div>`;
    display.html(`<div class="pneumotype-progress" style="font:13px/1.6 system-ui,sans-serif">${title}${rows.join('')}</div>`);
  };
}

/** A training chart that grows epoch by epoch; pass `onEpoch` to train(). */
export interface LiveTraining {
  /** The epochs seen so far, in order. */
  readonly history: readonly EpochRecord[];
  readonly onEpoch: (record: EpochRecord) => void;
}

/**
 * A live training chart (loss, accuracy, validation macro-F1, learning rate) redrawn in place after every epoch.
 * Pass `tslab.newDisplay()`, then `onEpoch` to train().
 *
 * @example
 * const live = liveTrainingChart(tslab.newDisplay())
 * await train({ data: 'data/labeled', out: 'runs/nb', preset: 'smoke', onEpoch: live.onEpoch })
 */
export function liveTrainingChart(display: HtmlDisplay, options: { title?: string } = {}): LiveTraining {
  const history: EpochRecord[] = [];
  const figureOptions = options.title === undefined ? {} : { title: options.title };
  const chart = liveChart(display, trainingCurvesFigure(history, figureOptions));
  return {
    history,
    onEpoch: (record) => {
      history.push(record);
      chart.update(trainingCurvesFigure(history, figureOptions));
    },
  };
}

/** The signals {@link interruptSignal} handed out that the kernel's next interrupt aborts. */
const interruptible = new Set<AbortController>();
/** Whether the process listener is added or about to be (one serves every signal). */
let listening = false;

/**
 * An AbortSignal that the kernel's next interrupt aborts (Jupyter's stop button sends the tslab kernel SIGINT). tslab
 * itself only stops waiting for the cell; passed to train() as `signal`, the training stops too, at the next batch:
 * the unfinished epoch is dropped and re-running the cell (with `resume: true`) continues from the last checkpoint.
 * One process listener serves every signal, so re-running a cell adds none. Meant for notebooks, where the kernel
 * handles SIGINT anyway: in a script the listener stays until the next SIGINT, which it takes instead of ending the
 * process; use an AbortController of your own there.
 *
 * The listener is added on the next turn of the event loop, not while the cell's own code runs: tslab runs that code
 * with `breakOnSigint`, and a SIGINT listener added during such a run is left without its signal handler when the run
 * ends (Node puts back its default handler), so the next stop button would end the kernel instead.
 *
 * @example
 * const run = await train({ data: nb.labeledDir, out: nb.runDir, resume: true, signal: interruptSignal() })
 */
export function interruptSignal(): AbortSignal {
  const controller = new AbortController();
  interruptible.add(controller);
  if (!listening) {
    listening = true;
    setImmediate(() => process.once('SIGINT', interruptAll));
  }
  return controller.signal;
}

function interruptAll(): void {
  listening = false;
  const controllers = [...interruptible];
  interruptible.clear();
  for (const c of controllers) c.abort(new Error('interrupted from the notebook (SIGINT)'));
}

// ---------------------------------------------------------------------------------------------------------------
// Data shaped for tables and figures

/** True when `path` is a folder (a missing path is left to the reader that follows, for its own error). */
async function isFolder(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}

/** The files under a folder in a zip listing's terms (names relative to it, '/'-separated). */
async function folderEntries(dir: string): Promise<{ name: string; isDirectory: boolean; uncompressedSize: number }[]> {
  const names = await listFiles(dir);
  // A file gone between the listing and its stat is left out, as from a zip listed a moment later.
  const entries = await Promise.all(names.map(async (name) => {
    const size = (await stat(join(dir, name)).catch(() => undefined))?.size;
    return size === undefined ? undefined : { name, isDirectory: false, uncompressedSize: size };
  }));
  return entries.filter((e) => e !== undefined);
}

/**
 * What an archive holds, folder by folder: entries and uncompressed bytes per folder, junk (`__MACOSX`, `._*`,
 * `.DS_Store`) counted apart. Reads only the central directory. Given a folder (an archive extracted by other means,
 * as {@link obtainDataset} returns it), the same table of the files under it.
 *
 * @example showTable(tslab.display, await archiveContents('data/downloads/ChestXRay2017.zip'))
 */
export async function archiveContents(archive: string): Promise<Table> {
  const entries = (await isFolder(archive)) ? await folderEntries(archive) : await listZip(archive);
  const folders = new Map<string, { files: number; bytes: number }>();
  let junk = 0;
  for (const e of entries) {
    if (e.isDirectory) continue;
    if (isJunkEntry(e.name)) {
      junk++;
      continue;
    }
    const folder = e.name.split('/').slice(0, -1).join('/') || '(top level)';
    const f = folders.get(folder) ?? { files: 0, bytes: 0 };
    f.files++;
    f.bytes += e.uncompressedSize;
    folders.set(folder, f);
  }
  const rows: (string | number | null)[][] = [...folders.entries()]
    .sort((a, b) => a[0].localeCompare(b[0]))
    .map(([folder, f]) => [folder, f.files, formatBytes(f.bytes)]);
  if (junk > 0) rows.push(['(junk: __MACOSX, ._*, .DS_Store, Thumbs.db)', junk, null]);
  return { columns: ['folder', 'files', 'uncompressed'], rows };
}

/**
 * Every file under `dir` (a run folder, say), with its size, sorted by path; a missing folder is named in the error.
 *
 * @example showTable(tslab.display, await folderContents(nb.runDir)) // nb = notebookSettings(): runs/notebook-cpu by default
 */
export async function folderContents(dir: string): Promise<Table> {
  let names: string[];
  try {
    names = await readdir(dir, { recursive: true });
  } catch (err) {
    throw new ConfigError(`cannot list ${quote(dir)} (${messageOf(err)})`, { path: dir, cause: err });
  }
  const rows: (string | number | null)[][] = [];
  for (const name of names.sort()) {
    const s = await stat(join(dir, name)).catch(() => undefined); // gone meanwhile (a checkpoint being replaced)
    if (s?.isFile()) rows.push([name, formatBytes(s.size)]);
  }
  return { columns: ['file', 'size'], rows };
}

/** Which images labeledSamples picks, and at what size. */
export interface LabeledSamplesOptions {
  readonly labeledDir: string;
  /** Default: every split. */
  readonly split?: Split;
  /** Default: 4. */
  readonly perClass?: number;
  /** Pixels a side. Default: 96. */
  readonly size?: number;
  /** Default: DEFAULTS.seed. */
  readonly seed?: number;
}

/**
 * A few images of each class straight from the labelled folder (no prepared cache needed), decoded to `size` (96)
 * pixels a side, picked with `seed` (DEFAULTS.seed) so that they are the same every run; for sampleGridFigure.
 *
 * @example sampleGridFigure(await labeledSamples({ labeledDir: 'data/labeled', perClass: 4 }), { columns: 4 })
 */
export async function labeledSamples(options: LabeledSamplesOptions): Promise<GraySample[]> {
  const perClass = options.perClass ?? 4;
  const size = options.size ?? 96;
  const rows = (await readManifest(options.labeledDir)).filter((r) => r.width > 0 && (options.split === undefined || r.split === options.split));
  const rng = createRng(options.seed ?? DEFAULTS.seed);
  const out: GraySample[] = [];
  for (const label of CLASSES) {
    for (const row of shuffled(rows.filter((r) => r.label === label), rng).slice(0, perClass)) {
      const pixels = await decodeGray(join(options.labeledDir, row.file), { size, name: row.file });
      out.push({ pixels, size, title: `${label}\n${row.file.split('/').at(-1) ?? row.file}` });
    }
  }
  return out;
}

/** One batch, described: its tensors as a table and its images as samples to draw. */
export interface BatchPreview {
  /** tensor, shape, dtype, min, max, mean and what it holds, for `xs` and `ys`. */
  readonly tensors: Table;
  /** The batch's images as the model sees them (augmentation included), titled `label` and `file` on two lines. */
  readonly samples: GraySample[];
  readonly labels: readonly Label[];
}

/**
 * Reads the first batch that `batches()` would yield with these options, describes its tensors and returns its
 * images as samples (at most `limit`, default all), then disposes the tensors: nothing is left allocated.
 *
 * @example const preview = previewBatch(cache, { subset: 'train', batchSize: 8 }); showTable(tslab.display, preview.tensors)
 */
export function previewBatch(cache: OpenedCache, options: BatchOptions & { limit?: number }): BatchPreview {
  const tf = loadTf();
  const iterator = batchIterator(cache, options);
  const first = iterator.next();
  iterator.return(undefined);
  if (first.done === true) {
    throw new ConfigError(`the ${options.subset} subset of the cache at ${quote(cache.dir)} has no images`, { path: cache.dir });
  }
  const batch = first.value;
  try {
    const describe = (name: string, t: typeof batch.xs | typeof batch.ys, what: string): (string | number)[] => {
      const [min, max, mean] = tf.tidy(() => [t.min(), t.max(), t.mean()].map((s) => s.dataSync()[0] ?? Number.NaN));
      return [name, `[${t.shape.join(', ')}]`, t.dtype, round(min ?? Number.NaN), round(max ?? Number.NaN), round(mean ?? Number.NaN), what];
    };
    const tensors: Table = {
      columns: ['tensor', 'shape', 'dtype', 'min', 'max', 'mean', 'holds'],
      rows: [
        describe('xs', batch.xs, 'images: batch x height x width x 1 channel, pixel / 255'),
        describe('ys', batch.ys, `one-hot labels, columns ${CLASSES.join(', ')}`),
      ],
    };
    const size = cache.imageSize;
    const pixels = size * size;
    const values = batch.xs.dataSync();
    const count = Math.min(batch.labels.length, options.limit ?? batch.labels.length);
    const labels = batch.labels.map((l) => CLASSES[l] ?? 'normal');
    const samples: GraySample[] = [];
    for (let k = 0; k < count; k++) {
      const image = new Uint8Array(pixels);
      for (let j = 0; j < pixels; j++) image[j] = Math.max(0, Math.min(255, Math.round((values[k * pixels + j] ?? 0) * 255)));
      samples.push({ pixels: image, size, title: `${labels[k]}\n${batch.files[k]?.split('/').at(-1) ?? ''}` });
    }
    return { tensors, samples, labels };
  } finally {
    tf.dispose([batch.xs, batch.ys]);
  }
}

function round(v: number): number {
  return Number.isFinite(v) ? Math.round(v * 1e4) / 1e4 : v;
}

/** Which cached images pixelsByClass picks. */
export interface PixelsByClassOptions {
  /** Default: every subset. */
  readonly subset?: Subset;
  /** Default: 200. */
  readonly perClass?: number;
  /** Default: DEFAULTS.seed. */
  readonly seed?: number;
}

/**
 * The pixels of up to `perClass` (200) images of each class from a prepared cache (of one subset, default all),
 * picked with `seed`: the input of intensityHistogramFigure.
 *
 * @example intensityHistogramFigure(pixelsByClass(cache, { subset: 'train' }))
 */
export function pixelsByClass(cache: OpenedCache, options: PixelsByClassOptions = {}): Record<Label, Uint8Array[]> {
  const perClass = options.perClass ?? 200;
  const rng = createRng(options.seed ?? DEFAULTS.seed);
  const out = { normal: [], bacteria: [], virus: [] } as Record<Label, Uint8Array[]>;
  for (const label of CLASSES) {
    const idx: number[] = [];
    cache.index.images.forEach((im, i) => {
      if (im.label === label && (options.subset === undefined || im.subset === options.subset)) idx.push(i);
    });
    for (const i of shuffled(idx, rng).slice(0, perClass)) out[label].push(cache.readImage(i));
  }
  return out;
}

/**
 * Reads the per-image predictions CSV that evaluateModel's `predictions` option wrote.
 *
 * @example rocCurvesFromPredictions(await readPredictions('runs/cpu-1/predictions.csv'))
 */
export async function readPredictions(path: string): Promise<PredictionRow[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read the predictions ${quote(path)}: ${messageOf(err)}`, { path, cause: err });
  }
  return parsePredictionsCsv(text, path);
}

export { misclassifiedSamples } from './report.js';

/**
 * The split to evaluate on: `test` when the labelled folder has one, else `val` (the validation patients carved out
 * of train, as with the shared train-only data).
 *
 * @example await evaluateModel({ data: 'data/labeled', split: await evaluationSplit('data/labeled') })
 */
export async function evaluationSplit(labeledDir: string): Promise<EvaluationSplit> {
  return (await readManifest(labeledDir)).some((r) => r.split === 'test') ? 'test' : 'val';
}

/** What {@link uploadIfConfigured} did. */
export interface NotebookUpload {
  readonly uploaded: boolean;
  /** One sentence for people: what was sent where, or why nothing was. */
  readonly note: string;
  readonly result?: UploadResult;
}

/** The input of uploadIfConfigured. */
export interface UploadIfConfiguredOptions {
  /** The notebook's S3 target (notebookSettings().s3); undefined: nothing is sent. */
  readonly s3: NotebookS3 | undefined;
  /** The folder to upload. */
  readonly data: string;
  readonly onProgress?: ProgressCallback;
  readonly signal?: AbortSignal;
}

/**
 * Uploads the labelled folder to the notebook's S3 target, or, when none is configured, sends nothing and says how to
 * configure one: the upload notebook then runs to its end either way.
 *
 * @example const r = await uploadIfConfigured({ s3: nb.s3, data: nb.labeledDir }); r.note
 */
export async function uploadIfConfigured(options: UploadIfConfiguredOptions): Promise<NotebookUpload> {
  const s3 = options.s3;
  if (s3 === undefined) {
    return {
      uploaded: false,
      note:
        `No S3 bucket is configured, so nothing was uploaded. Set ${NOTEBOOK_ENV.bucket} (and AWS_REGION, the region the ` +
        `model will be deployed in; ${NOTEBOOK_ENV.endpoint} for an S3-compatible server; credentials as for the AWS CLI) ` +
        'and run this notebook again.',
    };
  }
  const result = await upload({
    data: options.data,
    bucket: s3.bucket,
    prefix: s3.prefix,
    settingNames: NOTEBOOK_UPLOAD_NAMES,
    ...(s3.region !== undefined ? { region: s3.region } : {}),
    ...(s3.endpoint !== undefined ? { endpoint: s3.endpoint } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const where = `s3://${result.bucket}/${result.prefix === '' ? '' : `${result.prefix}/`}`;
  return {
    uploaded: true,
    note:
      `${result.uploaded} files sent (${formatBytes(result.bytes)}), ${result.skipped} already there; ${where} holds the ` +
      `${result.manifest.totals.files} files of the dataset, listed in ${result.manifestKey}.`,
    result,
  };
}

/**
 * Metrics per group of images (evaluateModel's `byGroup`) as a table: a gap between groups that differ only in how
 * their files were made means the model learned the pipeline, not the lungs. Without groups, one row says how to
 * measure them.
 *
 * @example showTable(tslab.display, groupMetricsTable(evaluation.byGroup))
 */
export function groupMetricsTable(byGroup: Readonly<Record<string, GroupMetrics>> | undefined): Table {
  if (byGroup !== undefined) return groupsTable(byGroup);
  return {
    columns: ['group', 'note'],
    rows: [['(none)', `not measured: set ${NOTEBOOK_ENV.groupsCsv} to a CSV with a file column and a group column (${NOTEBOOK_ENV.groupsColumn}, default derived_from)`]],
  };
}

/**
 * What {@link obtainDataset} found, one row per fact (a wide row of long paths and digests runs off a page): the
 * archive or folder, its size and SHA-256, and whether this call downloaded or resumed it. The source is left out
 * where it is the path itself.
 *
 * @example showTable(tslab.display, datasetTable(await obtainDataset({ source: nb.source, outDir: nb.downloadsDir })))
 */
export function datasetTable(dataset: ObtainedDataset): Table {
  const rows: (string | number | null)[][] = [];
  if (resolve(dataset.source) !== resolve(dataset.path)) rows.push(['source', dataset.source]);
  if (dataset.kind === 'folder') {
    rows.push(['folder', dataset.path], ['taken as it is', 'an archive extracted by other means: nothing to fetch or hash']);
    return { columns: ['what', 'value'], rows };
  }
  rows.push(['archive', dataset.path], ['size', `${formatBytes(dataset.bytes)} (${dataset.bytes.toLocaleString('en-US')} bytes)`], ['SHA-256', dataset.sha256]);
  if (dataset.url !== undefined) rows.push(['from', dataset.url]);
  rows.push(['this time', dataset.downloaded ? (dataset.resumed ? 'downloaded, resuming an earlier partial file' : 'downloaded') : 'already there: verified, not downloaded']);
  return { columns: ['what', 'value'], rows };
}

/** What each augmentation amount means, in words (AugmentOptions' own documentation, shortened). */
const AUGMENT_MEANINGS: Readonly<Record<keyof AugmentOptions, (v: string) => string>> = {
  flip: () => 'mirrored left-right with probability 1/2 (moves the heart to the other side)',
  rotateDegrees: (v) => `rotated by up to ${v} degrees either way`,
  zoom: (v) => `scaled by a factor within 1 ± ${v}`,
  brightness: (v) => `every pixel shifted by the same amount, up to ±${v} (pixels from 0 to 1)`,
  contrast: (v) => `contrast stretched by a factor within 1 ± ${v}`,
  noise: (v) => `Gaussian pixel noise of standard deviation ${v} (pixels from 0 to 1)`,
  blur: (v) => `half the images blurred (Gaussian sigma up to ${v} px), half sharpened (unsharp mask)`,
  rescale: (v) => `shrunk by a factor down to 1 - ${v}, then scaled back up (resampling traces)`,
  jpegQuality: (v) => `re-compressed as JPEG at a quality from ${v.replace('-', ' to ')}`,
  localContrast: (v) => `probability ${v} of a CLAHE-like local contrast enhancement`,
  normalizeIntensity: (v) => `probability ${v} of standardising the image to a random mean and spread`,
  gamma: (v) => `every pixel raised to a power gamma within e^±${v}`,
};

/**
 * An augmentation as a table: each option that is on, its amount, and what it does to an image.
 *
 * @example showTable(tslab.display, augmentTable(TRACE_AUGMENT))
 */
export function augmentTable(options: AugmentOptions): Table {
  const rows: (string | number | null)[][] = [];
  for (const [key, meaning] of Object.entries(AUGMENT_MEANINGS) as [keyof AugmentOptions, (v: string) => string][]) {
    const value = options[key];
    if (value === undefined || value === false || value === 0) continue;
    const shown = Array.isArray(value) ? value.join('-') : value === true ? 'on' : String(value);
    rows.push([key, shown, meaning(shown)]);
  }
  return { columns: ['option', 'value', 'what it does'], rows };
}

/**
 * A finished training run in one row: its best epoch, whether it stopped early, how its steps ran and the kept
 * model's validation figures, named as validation figures (three decimals, as the history table).
 *
 * @example showTable(tslab.display, runSummaryTable(run))
 */
export function runSummaryTable(run: Pick<TrainResult, 'bestEpoch' | 'stoppedEarly' | 'card'>): Table {
  const v = run.card.validation;
  return {
    columns: ['best epoch', 'stopped early', 'training steps', 'val accuracy', 'val macro-F1', 'val balanced accuracy', 'val loss'],
    rows: [[run.bestEpoch, run.stoppedEarly ? 'yes' : 'no', run.card.training.engine ?? 'n/a', fmt(v.accuracy), fmt(v.macroF1), fmt(v.balancedAccuracy), fmt(v.loss)]],
  };
}

/**
 * The leakage audit of relabel's summary as a table: byte-identical and near-duplicate images shared by two splits,
 * and byte-identical images under two patient ids within a split, each with a count and a first example. With the
 * summary's `splits`, a folder of one split (the shared train split alone) says there was nothing to compare.
 *
 * @example showTable(tslab.display, leakageTable(summary.leakage, { splits: Object.keys(summary.counts) }))
 */
export function leakageTable(audit: LeakageAudit, options: { splits?: readonly string[] } = {}): Table {
  const single = options.splits === undefined ? undefined : oneSplitNote(options.splits);
  const first = <T>(pairs: readonly T[], show: (p: T) => string): string => (pairs[0] === undefined ? '—' : show(pairs[0]));
  return {
    columns: ['check', 'pairs', 'first example'],
    rows: [
      ['byte-identical images in two splits', audit.identicalAcrossSplits.length, first(audit.identicalAcrossSplits, (p) => `${p.a} = ${p.b}`)],
      [
        `near-duplicates in two splits (difference hashes at most ${audit.threshold} of 256 bits apart)`,
        audit.nearDuplicatesAcrossSplits.length,
        first(audit.nearDuplicatesAcrossSplits, (p) => `${p.a} ~ ${p.b} (${p.distance} bits)`),
      ],
      ['byte-identical images under two patient ids in one split', audit.identicalAcrossPatients.length, first(audit.identicalAcrossPatients, (p) => `${p.a} = ${p.b}`)],
      [
        'verdict',
        null,
        single !== undefined
          ? single
          : audit.clean ? 'clean: no image is shared across splits' : 'images are shared across splits: test scores would be inflated',
      ],
    ],
  };
}
