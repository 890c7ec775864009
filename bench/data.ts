// Benchmark of the data pipeline: decode+resize+cache throughput, and an epoch read from the cache vs decoded afresh.
// Run with `npm run bench:data`. Uses ../shared/data next to the repository (or PNEUMOTYPE_SHARED_DATA); skips without it.
// BENCH_DECODE_LIMIT=N decodes only the first N images for the decoded-afresh epoch (and extrapolates the full one).
import AdmZip from 'adm-zip';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { openCache, prepareCache, type OpenedCache } from '../lib/cache.js';
import { DEFAULTS, type Label } from '../lib/config.js';
import { batchPlan, batches } from '../lib/dataset.js';
import { exists, sha256 } from '../lib/fsx.js';
import { decodeGray } from '../lib/images.js';
import { parseName } from '../lib/labels.js';
import { writeManifest, type ManifestRow } from '../lib/manifest.js';
import { loadTfWithInfo } from '../lib/tf.js';
import { intEnv, round } from './util.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const shared = resolve(process.env.PNEUMOTYPE_SHARED_DATA ?? join(here, '..', '..', 'shared', 'data'));
const zipPath = join(shared, 'chest_xray_train_224.zip');
const originalsDir = join(shared, 'originals');
/** At most this many images in the decode-every-epoch comparison (default: the whole epoch, ~15 s on 2 cores). */
const DECODE_EPOCH_LIMIT = intEnv('BENCH_DECODE_LIMIT', Infinity);
const BATCH = 32;

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Writes a labelled folder (DIR/train/<label>/NAME + manifest.csv) from (class folder, name, bytes) triples. */
async function writeLabeled(dir: string, files: Iterable<{ classDir: 'NORMAL' | 'PNEUMONIA'; name: string; data: Buffer }>): Promise<number> {
  const rows: ManifestRow[] = [];
  for (const { classDir, name, data } of files) {
    const info = parseName(classDir, name);
    const label: Label | undefined = info.label;
    if (!label) continue;
    const file = `train/${label}/${name}`;
    await mkdir(join(dir, 'train', label), { recursive: true });
    await writeFile(join(dir, file), data);
    rows.push({ split: 'train', label, file, patientId: info.patientId, bytes: data.length, sha256: sha256(data), width: 224, height: 224, channels: 1 }); // the shared zip's images are all 224 x 224 gray
  }
  await writeManifest(dir, rows);
  return rows.length;
}

function* zipImages(path: string): Generator<{ classDir: 'NORMAL' | 'PNEUMONIA'; name: string; data: Buffer }> {
  for (const entry of new AdmZip(path).getEntries()) {
    const m = /^chest_xray\/train\/(NORMAL|PNEUMONIA)\/([^/]+\.jpe?g)$/i.exec(entry.entryName);
    if (!m || entry.isDirectory) continue;
    yield { classDir: m[1]?.toUpperCase() as 'NORMAL' | 'PNEUMONIA', name: m[2] as string, data: entry.getData() };
  }
}

async function* originalImages(dir: string): AsyncGenerator<{ classDir: 'NORMAL' | 'PNEUMONIA'; name: string; data: Buffer }> {
  for (const classDir of ['NORMAL', 'PNEUMONIA'] as const) {
    for (const name of (await readdir(join(dir, classDir))).sort()) {
      if (/\.jpe?g$/i.test(name)) yield { classDir, name, data: await readFile(join(dir, classDir, name)) };
    }
  }
}

async function collect<T>(it: AsyncIterable<T> | Iterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function timePrepare(labeledDir: string, cacheDir: string, imageSize: number): Promise<{ images: number; seconds: number; perSecond: number; failed: number }> {
  const t0 = performance.now();
  const { index } = await prepareCache({ labeledDir, cacheDir, imageSize, splits: ['train'], force: true });
  const seconds = (performance.now() - t0) / 1000;
  return { images: index.images.length, seconds: round(seconds, 2), perSecond: round(index.images.length / seconds), failed: index.failed.length };
}

async function main(): Promise<void> {
  const cores = availableParallelism();
  log(`machine: ${cores} cores (${cpus()[0]?.model ?? 'unknown CPU'}), node ${process.version}, sharp ${sharp.versions.sharp} ` +
    `(libvips ${sharp.versions.vips}, sharp.concurrency ${sharp.concurrency()}), prepareConcurrency ${DEFAULTS.prepareConcurrency}`);
  if (!(await exists(zipPath)) || !(await exists(join(originalsDir, 'NORMAL')))) {
    log(`skipped: no shared data at ${shared} (expected chest_xray_train_224.zip and originals/); set PNEUMOTYPE_SHARED_DATA`);
    log(JSON.stringify({ skipped: true, reason: 'no shared data', cores }));
    return;
  }
  const { tf, info } = loadTfWithInfo();
  log(`tensorflow: ${info.package} (backend ${info.backend})`);
  const work = await mkdtemp(join(tmpdir(), 'pneumotype-bench-'));
  try {
    // --- setup, not timed: labelled folders from the originals and from the zip (extracted in memory with adm-zip)
    let t = performance.now();
    const origLabeled = join(work, 'originals');
    const nOrig = await writeLabeled(origLabeled, await collect(originalImages(originalsDir)));
    const zipLabeled = join(work, 'train224');
    const nZip = await writeLabeled(zipLabeled, zipImages(zipPath));
    log(`setup (not timed): ${nOrig} originals and ${nZip} images of ${basename(zipPath)} written as labelled folders in ${round((performance.now() - t) / 1000)} s`);

    // Warm-up (not timed): sharp and libvips load their codecs on first use.
    for (const f of (await readdir(join(originalsDir, 'NORMAL'))).slice(0, 2)) await decodeGray(join(originalsDir, 'NORMAL', f), { size: 224 });

    // --- decode + resize + cache (prepareCache: read, sha256 check, decodeGray, write .u8, index)
    const prepare: Record<string, Awaited<ReturnType<typeof timePrepare>>> = {};
    for (const [name, dir, size] of [
      ['originals@224', origLabeled, 224],
      ['originals@128', origLabeled, 128],
      ['train224@224', zipLabeled, 224],
      ['train224@128', zipLabeled, 128],
    ] as const) {
      const r = await timePrepare(dir, join(work, `cache-${name.split('@')[0]}`), size);
      prepare[name] = r;
      log(`prepare ${name.padEnd(14)} ${String(r.images).padStart(5)} images in ${String(r.seconds).padStart(6)} s: ${r.perSecond} images/s${r.failed ? ` (${r.failed} failed)` : ''}`);
    }

    // --- one epoch of train batches of 32 (tensors built and disposed): read from the cache, then decoded afresh
    const cache: OpenedCache = await openCache(join(work, 'cache-train224', '224'));
    let cacheEpoch: { images: number; seconds: number; perSecond: number };
    let plan: string[][];
    try {
      plan = batchPlan(cache, { subset: 'train', batchSize: BATCH, epoch: 0 }).map((b) => b.map((i) => join(zipLabeled, cache.index.images[i]?.file ?? '')));
      const t0 = performance.now();
      let n = 0;
      for await (const b of batches(cache, { subset: 'train', batchSize: BATCH, epoch: 0 })) {
        n += b.indices.length;
        tf.dispose([b.xs, b.ys]);
      }
      const s = (performance.now() - t0) / 1000;
      cacheEpoch = { images: n, seconds: round(s, 3), perSecond: round(n / s) };
    } finally {
      cache.close();
    }
    log(`epoch from the cache @224: ${cacheEpoch.images} images in ${cacheEpoch.seconds} s (${cacheEpoch.perSecond} images/s, batches of ${BATCH})`);

    // The same batches, every file read and decoded with decodeGray (DEFAULTS.prepareConcurrency at once).
    const limit = Math.min(DECODE_EPOCH_LIMIT, cacheEpoch.images);
    const px = 224 * 224;
    let decoded = 0;
    t = performance.now();
    for (const files of plan) {
      if (decoded >= limit) break;
      const chunk = files.slice(0, limit - decoded);
      const images: Uint8Array[] = [];
      for (let k = 0; k < chunk.length; k += DEFAULTS.prepareConcurrency) {
        images.push(...(await Promise.all(chunk.slice(k, k + DEFAULTS.prepareConcurrency).map((f) => decodeGray(f, { size: 224 })))));
      }
      const x = new Float32Array(chunk.length * px);
      images.forEach((p, k) => {
        for (let j = 0; j < px; j++) x[k * px + j] = (p[j] as number) / 255;
      });
      const xs = tf.tensor4d(x, [chunk.length, 224, 224, 1]);
      tf.dispose(xs);
      decoded += chunk.length;
    }
    const ds = (performance.now() - t) / 1000;
    const decodeEpoch = { images: decoded, seconds: round(ds, 3), perSecond: round(decoded / ds) };
    const fullEpochSeconds = round(cacheEpoch.images / (decoded / ds), 2);
    const ratio = round(fullEpochSeconds / cacheEpoch.seconds, 1);
    log(`epoch decoding every file @224: ${decoded} images in ${decodeEpoch.seconds} s (${decodeEpoch.perSecond} images/s)` +
      (decoded < cacheEpoch.images ? ` - a subset (BENCH_DECODE_LIMIT); the full epoch would take ~${fullEpochSeconds} s` : ''));
    log(`cache vs decoding every epoch: ${ratio}x faster per epoch from the cache`);
    log(JSON.stringify({
      cores,
      cpu: cpus()[0]?.model ?? 'unknown',
      node: process.version,
      sharp: sharp.versions.sharp,
      libvips: sharp.versions.vips,
      sharpConcurrency: sharp.concurrency(),
      prepareConcurrency: DEFAULTS.prepareConcurrency,
      tfBackend: info.backend,
      zipReading: 'extracted in memory with adm-zip to a temp labelled folder before timing',
      prepare,
      cacheEpoch224: { ...cacheEpoch, batchSize: BATCH },
      decodeEpoch224: { ...decodeEpoch, epochImages: cacheEpoch.images, fullEpochSeconds },
      cacheSpeedup: ratio,
    }));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
