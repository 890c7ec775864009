// The whole job, step by step: fetch, relabel (with extraction) and prepare, skipping what is already done.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveConfig, type PresetName } from './config.js';
import { prepareCache, type PrepareResult } from './cache.js';
import { fetchDataset, resolveSource, type FetchResult } from './fetch.js';
import { exists } from './fsx.js';
import { MANIFEST_FILE, readManifest } from './manifest.js';
import type { ProgressCallback } from './progress.js';
import { relabel, SUMMARY_FILE } from './relabel.js';
import { extractRemoteZip, type RemoteExtractResult } from './remote-zip.js';

export interface PrepareStepOptions {
  readonly labeledDir?: string;
  readonly cacheDir?: string;
  readonly preset?: PresetName;
  readonly imageSize?: number;
  readonly valFraction?: number;
  readonly seed?: number;
  readonly onProgress?: ProgressCallback;
}

/** Builds (or reuses) the prepared cache with the preset's settings and describes the result in one line. */
export async function prepareStep(options: PrepareStepOptions): Promise<PrepareResult & { description: string }> {
  const config = resolveConfig(options.preset, {
    ...(options.imageSize !== undefined ? { imageSize: options.imageSize } : {}),
    ...(options.valFraction !== undefined ? { valFraction: options.valFraction } : {}),
    ...(options.seed !== undefined ? { seed: options.seed } : {}),
  });
  const r = await prepareCache({
    labeledDir: options.labeledDir ?? config.labeledDir,
    cacheDir: options.cacheDir ?? config.cacheDir,
    imageSize: config.imageSize,
    valFraction: config.valFraction,
    seed: config.seed,
    concurrency: config.prepareConcurrency,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  const subsets = { train: 0, val: 0, test: 0 };
  for (const image of r.index.images) subsets[image.subset]++;
  const description =
    `${r.reused ? 'cache up to date' : 'cache written'}: ${r.dir} (${config.imageSize} px; ` +
    `${subsets.train} train, ${subsets.val} validation, ${subsets.test} test; ${r.index.failed.length} failed)`;
  return { ...r, description };
}

/** True when the labelled folder is complete: summary written last, every manifest file present with its size. */
async function labeledIsComplete(labeledDir: string): Promise<boolean> {
  if (!(await exists(join(labeledDir, SUMMARY_FILE))) || !(await exists(join(labeledDir, MANIFEST_FILE)))) return false;
  const rows = await readManifest(labeledDir);
  for (const row of rows) {
    const s = await stat(join(labeledDir, row.file)).catch(() => undefined);
    if (!s || s.size !== row.bytes) return false;
  }
  return rows.length > 0;
}

export interface PipelineOptions {
  /** v2 | v3 | URL | path (PNEUMOTYPE_SOURCE, else DEFAULTS.source). */
  readonly source?: string;
  /** Root of downloads/, extracted/, labeled/ and cache/ (DEFAULTS.dataDir). */
  readonly dataDir?: string;
  readonly preset?: PresetName;
  /**
   * Read only the chest X-ray entries of a remote archive with HTTP Range requests instead of downloading it whole.
   * Default: true for `v3` (1.2 of 7.9 GB), false otherwise.
   */
  readonly remote?: boolean;
  readonly onProgress?: ProgressCallback;
  /** Called when a step starts or is skipped, with a one-line note. */
  readonly onStep?: (step: 'fetch' | 'relabel' | 'prepare', note: string) => void;
}

export interface PipelineResult {
  readonly steps: readonly { readonly step: string; readonly skipped: boolean; readonly note: string }[];
  /** The downloaded or verified archive (absent when the chest entries were read remotely). */
  readonly archive?: FetchResult;
  readonly remote?: RemoteExtractResult;
  readonly labeledDir: string;
  readonly cache: PrepareResult;
}

/**
 * Runs fetch, relabel and prepare. Each step checks its own output first: a verified archive is not downloaded
 * again, a complete labelled folder is not rebuilt, an up-to-date cache is reused; so an interrupted run picks up
 * where it stopped.
 *
 * @example await runPipeline({ source: 'v2', dataDir: 'data', preset: 'cpu' })
 */
export async function runPipeline(options: PipelineOptions = {}): Promise<PipelineResult> {
  const config = resolveConfig(options.preset);
  const dataDir = options.dataDir ?? config.dataDir;
  const dirs = {
    downloads: join(dataDir, 'downloads'),
    extracted: join(dataDir, 'extracted'),
    labeled: join(dataDir, 'labeled'),
    cache: join(dataDir, 'cache'),
  };
  const progress = options.onProgress ? { onProgress: options.onProgress } : {};
  const steps: { step: string; skipped: boolean; note: string }[] = [];
  const step = (name: 'fetch' | 'relabel' | 'prepare', skipped: boolean, note: string): void => {
    steps.push({ step: name, skipped, note });
    options.onStep?.(name, note);
  };

  const source = options.source ?? process.env.PNEUMOTYPE_SOURCE ?? config.source;
  const resolved = resolveSource(source);
  const url = resolved.kind === 'known' ? resolved.known.url : resolved.kind === 'url' ? resolved.url : undefined;
  const remote = url !== undefined && (options.remote ?? (resolved.kind === 'known' && resolved.known.name === 'v3'));
  let archive: FetchResult | undefined;
  let remoteResult: RemoteExtractResult | undefined;
  const labeledDone = await labeledIsComplete(dirs.labeled);

  if (remote && labeledDone) {
    step('fetch', true, `${dirs.labeled} is complete; nothing to read from ${url}`);
  } else if (remote) {
    options.onStep?.('fetch', `reading only the chest X-ray entries of ${url} with Range requests`);
    remoteResult = await extractRemoteZip({ url, outDir: dirs.extracted, ...progress });
    step('fetch', false, `extracted ${remoteResult.files + remoteResult.alreadyPresent} chest X-ray entries, ` +
      `${(remoteResult.transferredBytes / 1e9).toFixed(2)} of ${(remoteResult.archiveBytes / 1e9).toFixed(2)} GB transferred`);
  } else {
    options.onStep?.('fetch', 'checking the archive');
    archive = await fetchDataset({ source, outDir: dirs.downloads, ...progress });
    step('fetch', !archive.downloaded, archive.downloaded ? `downloaded ${archive.path}` : `verified ${archive.path}`);
  }

  if (labeledDone) {
    step('relabel', true, `${dirs.labeled} is complete (summary.json and every manifest file present)`);
  } else {
    const from = archive?.path ?? dirs.extracted;
    options.onStep?.('relabel', `relabelling ${from}`);
    const r = await relabel({ from, out: dirs.labeled, extractedDir: dirs.extracted, ...progress });
    const c = r.summary.counts;
    step('relabel', !r.changed, `${dirs.labeled}: ${Object.entries(c).map(([s, n]) => `${s} ${n.total}`).join(', ')}`);
  }

  options.onStep?.('prepare', `decoding into ${dirs.cache}`);
  const cache = await prepareStep({ labeledDir: dirs.labeled, cacheDir: dirs.cache, ...(options.preset ? { preset: options.preset } : {}), ...progress });
  step('prepare', cache.reused, cache.description);
  return { steps, labeledDir: dirs.labeled, cache, ...(archive ? { archive } : {}), ...(remoteResult ? { remote: remoteResult } : {}) };
}
