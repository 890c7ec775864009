// Integration: the real train split served over loopback HTTP, cut mid-way and resumed, then relabel and prepare;
// the shipped model on full-resolution originals.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import { after, before, test } from 'node:test';
import AdmZip from 'adm-zip';
import { openCache, prepareCache } from '../lib/cache.js';
import { CLASSES } from '../lib/config.js';
import { parseCsv } from '../lib/csv.js';
import { DEFAULT_MODEL_DIR, evaluateModel, loadModel, predict } from '../lib/evaluate.js';
import { readManifest } from '../lib/manifest.js';
import { patientGroupedSplit } from '../lib/split.js';
import type { ModelCard } from '../lib/train.js';
import { batches } from '../lib/dataset.js';
import { fetchDataset } from '../lib/fetch.js';
import type { Progress } from '../lib/progress.js';
import { relabel } from '../lib/relabel.js';
import { loadTf } from '../lib/tf.js';
import { startFileServer, type FileServer } from './helpers/http-server.js';

const REAL_ZIP = resolve('../shared/data/chest_xray_train_224.zip');
const skip = existsSync(REAL_ZIP) ? false : `the real data is not beside the checkout (${REAL_ZIP})`;
const ORIGINALS = resolve('../shared/data/originals');
const skipOriginals = existsSync(join(ORIGINALS, 'originals.csv')) && !skip ? false : `the full-resolution originals are not beside the checkout (${ORIGINALS})`;

let tmp: string;
let server: FileServer;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-integration-'));
  if (!skip) server = await startFileServer({ file: REAL_ZIP, cutAfterBytes: 20_000_000, cutTimes: 1 });
});
after(async () => {
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

test('the real train split: download cut and resumed, relabelled with exact counts, cached, one epoch read', { skip }, async () => {
  const events: Progress[] = [];
  const fetched = await fetchDataset({ source: server.url, outDir: join(tmp, 'downloads'), retries: 3, backoffMs: 10, onProgress: (p) => events.push(p) });
  assert.equal(fetched.bytes, (await stat(REAL_ZIP)).size);
  assert.equal(fetched.resumed, true);
  const gets = server.requests.filter((r) => r.method === 'GET');
  assert.ok(gets.some((r) => r.range?.startsWith('bytes=') && r.range !== 'bytes=0-'), `a Range request resumed the download: ${JSON.stringify(gets)}`);
  assert.equal(events.at(-1)?.done, fetched.bytes);

  const labeled = join(tmp, 'labeled');
  const r = await relabel({ from: fetched.path, out: labeled, extractedDir: join(tmp, 'extracted') });
  assert.deepEqual(r.summary.counts, { train: { normal: 1349, bacteria: 2538, virus: 1345, total: 5232 } });
  assert.equal(r.summary.leakage.clean, true);
  assert.deepEqual(r.summary.undecodable, []);
  assert.deepEqual(r.summary.rejected, []);
  assert.equal(r.extract?.files, 5232);

  const prepared = await prepareCache({ labeledDir: labeled, cacheDir: join(tmp, 'cache'), imageSize: 64, valFraction: 0.1, seed: 1 });
  assert.deepEqual(prepared.index.failed, []);
  const cache = await openCache(prepared.dir);
  try {
    const tf = loadTf();
    const val = new Set(prepared.index.images.filter((i) => i.subset === 'val').map((i) => i.patientId));
    const train = new Set(prepared.index.images.filter((i) => i.subset === 'train').map((i) => i.patientId));
    assert.deepEqual([...val].filter((p) => train.has(p)), [], 'no patient on both sides of the validation split');
    const share = prepared.index.images.filter((i) => i.subset === 'val').length / 5232;
    assert.ok(share > 0.08 && share < 0.12, `validation share ${share}`);
    let seen = 0;
    for await (const batch of batches(cache, { subset: 'train', batchSize: 256, seed: 1, epoch: 0 })) {
      assert.deepEqual(batch.xs.shape.slice(1), [64, 64, 1]);
      seen += batch.xs.shape[0];
      tf.dispose([batch.xs, batch.ys]);
    }
    assert.equal(seen, cache.count('train'));
  } finally {
    await cache.close();
  }
});

// The held-out test split may come at full resolution, while the model trained on 224 px copies: `predict` decodes an
// original straight to the model's input size, a copy went through 224 px (Lanczos, JPEG quality 92) first. On the
// 107 originals of ../shared/data (416 to 2,772 px; training images, so this checks consistency, not accuracy) the
// shipped model gives the same label to all 107 and moves no probability by more than 0.003 on average (largest 0.023;
// 106, 0.011 and 0.27 while the NORMAL originals' ICC profile brightened them by 14 levels on average).
test('the shipped model labels full-resolution originals as it labels their 224 px copies', { skip: skipOriginals }, async () => {
  const csvPath = join(ORIGINALS, 'originals.csv');
  const rows = parseCsv(await readFile(csvPath, 'utf8'), csvPath);
  const zip = new AdmZip(REAL_ZIP);
  const copies = rows.map(({ label_folder: folder, file }) => {
    const name = `chest_xray/train/${folder}/${file}`;
    const entry = zip.getEntry(name);
    assert.ok(entry, name);
    return { name, data: entry.getData() };
  });
  const model = await loadModel();
  try {
    const originals = await predict(model, rows.map(({ label_folder: folder, file }) => join(ORIGINALS, folder ?? '', file ?? '')));
    const fromCopies = await predict(model, copies);
    let same = 0;
    let moved = 0;
    originals.forEach((o, i) => {
      const c = fromCopies[i];
      assert.ok(c && 'label' in c && 'label' in o, `${o.file}: ${JSON.stringify([o, c])}`);
      if (o.label === c.label) same++;
      moved += Math.max(...CLASSES.map((k) => Math.abs(o.probabilities[k] - c.probabilities[k])));
    });
    assert.equal(rows.length, 107);
    assert.ok(same >= 106, `the same label for ${same} of 107`);
    assert.ok(moved / rows.length < 0.008, `mean largest probability change ${moved / rows.length}`);
  } finally {
    model.dispose();
  }
});

// The shipped model keeps thumbnails of its 4,709 training images: evaluate names the originals it trained on (their
// 224 px copies were in its training split) and only those, so that a score on them is not taken for one on new images.
test('evaluate knows the originals that the shipped model trained on, and no other', { skip: skipOriginals }, async () => {
  const r = await evaluateModel({ data: ORIGINALS, bootstrap: 0 });
  assert.equal(r.n, 107);
  const seen = new Set(r.seenInTraining ?? []);
  assert.equal(seen.size, 92);
  assert.match(r.warnings?.[0] ?? '', /^92 of the 107 images are the model's own training images, or copies of them \("/);
  // Which ones: those outside the model's validation split, carved again from the real data (the first test relabels it).
  const labeled = join(tmp, 'labeled');
  if (!existsSync(join(labeled, 'manifest.csv'))) return;
  const card = JSON.parse(await readFile(join(DEFAULT_MODEL_DIR, 'pneumotype.json'), 'utf8')) as ModelCard;
  const rows = (await readManifest(labeled)).filter((row) => row.split === 'train');
  const { val } = patientGroupedSplit(rows, { valFraction: card.training.config.valFraction, seed: card.training.config.seed });
  const valNames = new Set(val.map((i) => rows[i]?.file.split('/').at(-1)));
  const csvPath = join(ORIGINALS, 'originals.csv');
  for (const { label_folder: folder, file } of parseCsv(await readFile(csvPath, 'utf8'), csvPath)) {
    assert.equal(seen.has(`${folder}/${file}`), !valNames.has(file), `${folder}/${file}: ${valNames.has(file) ? 'a validation image' : 'a training image'}`);
  }
});

// models/default ships its validation evaluation (evaluation.json, predictions.csv) so that its figures can be read by
// a program and its report drawn without any data. They must be what evaluate gives now, on the real data.
test('the shipped evaluation.json and predictions.csv are what evaluate gives on the real validation split', { skip }, async () => {
  const labeled = join(tmp, 'labeled');
  assert.ok(existsSync(join(labeled, 'manifest.csv')), 'the first test relabels the real data');
  const shipped = JSON.parse(await readFile(join(DEFAULT_MODEL_DIR, 'evaluation.json'), 'utf8')) as Record<string, unknown>;
  // No path of the machine that wrote it.
  assert.deepEqual([shipped.model, shipped.data, shipped.imagesDir], ['models/default', 'data/labeled', 'data/labeled']);
  const groups = { csv: resolve('../shared/data/chest_xray_train_224.csv'), column: 'derived_from' };
  const predictions = join(tmp, 'default-predictions.csv');
  const r = await evaluateModel({ data: labeled, split: 'val', groups, predictions });
  // Counts and labels exactly; probabilities to 1e-4 and figures to 1e-3, since another CPU may pick other kernels
  // (a probability that crosses a bin edge moves the calibration error by about 2e-4).
  const near = (a: unknown, b: unknown, path: string, tolerance = 1e-3): void => {
    if (typeof a === 'number' && typeof b === 'number') assert.ok(Math.abs(a - b) <= tolerance, `${path}: ${a} against ${b}`);
    else if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
      assert.deepEqual(Object.keys(a), Object.keys(b), path);
      for (const k of Object.keys(a)) near((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`, tolerance);
    } else assert.equal(a, b, path);
  };
  for (const key of ['weightsSha256', 'n', 'accuracy', 'balancedAccuracy', 'macroF1', 'perClass', 'confusion', 'auc', 'binary', 'calibration', 'byGroup'] as const) {
    near(shipped[key], JSON.parse(JSON.stringify(r[key])), key);
  }
  const shippedRows = parseCsv(await readFile(join(DEFAULT_MODEL_DIR, 'predictions.csv'), 'utf8'), 'predictions.csv');
  const rows = parseCsv(await readFile(predictions, 'utf8'), predictions);
  assert.equal(shippedRows.length, 523);
  near(shippedRows.map((row) => ({ ...row, normal: Number(row.normal), bacteria: Number(row.bacteria), virus: Number(row.virus) })),
    rows.map((row) => ({ ...row, normal: Number(row.normal), bacteria: Number(row.bacteria), virus: Number(row.virus) })), 'predictions', 1e-4);
});

// Killed (SIGKILL: no handler runs) once while extracting the real zip and once while linking its images, relabel run
// again finishes with the manifest of an uninterrupted run, leaves no unfinished file, and never touches the zip.
test('relabel killed mid-extract and mid-copy finishes on the next run as if never interrupted', { skip }, async () => {
  const reference = join(tmp, 'labeled', 'manifest.csv');
  assert.ok(existsSync(reference), 'the first test relabels the real data');
  const zipBefore = await stat(REAL_ZIP);
  const out = join(tmp, 'killed', 'labeled');
  const args = [resolve('bin/pneumotype.js'), 'relabel', '--from', REAL_ZIP, '--out', out, '--extracted', join(tmp, 'killed', 'extracted')];
  for (const [stage, enough] of [['extract', /^extract: (\d+\.\d) MB\//m], ['relabel', /^relabel: (\d+)\/5232 files/m]] as const) {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let killed = false;
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      // Well into the stage: 10 MB of 56 extracted, or 500 of 5,232 images linked.
      const done = [...stderr.matchAll(new RegExp(enough.source, 'gm'))].map((m) => Number(m[1]));
      if (!killed && done.some((n) => n >= (stage === 'extract' ? 10 : 500))) killed = child.kill('SIGKILL');
    });
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    assert.deepEqual([code, signal], [null, 'SIGKILL'], `killed during ${stage}: ${stderr}`);
    // Killed where it says: part of the archive extracted, or no manifest written yet.
    if (stage === 'extract') {
      const jpegs = (await readdir(join(tmp, 'killed', 'extracted'), { recursive: true })).filter((f) => f.endsWith('.jpeg'));
      assert.ok(jpegs.length < 5232, `killed before the extraction finished: ${jpegs.length} images out`);
    } else assert.equal(existsSync(join(out, 'manifest.csv')), false, 'killed before relabel finished');
  }
  const finished = spawnSync(process.execPath, args, { encoding: 'utf8' });
  assert.equal(finished.status, 0, finished.stderr);
  assert.equal(await readFile(join(out, 'manifest.csv'), 'utf8'), await readFile(reference, 'utf8'));
  // Every file in the labelled folder is an image of the manifest, or the manifest and summary themselves.
  const manifest = await readManifest(out);
  const files = (await readdir(out, { recursive: true, withFileTypes: true })).filter((e) => !e.isDirectory())
    .map((e) => relative(out, join(e.parentPath ?? (e as unknown as { path: string }).path, e.name)).split(sep).join('/')).sort();
  assert.deepEqual(files, [...manifest.map((row) => row.file), 'manifest.csv', 'summary.json'].sort());
  // The entry being extracted when it was killed was extracted again: no `.part` is left behind.
  const extracted = await readdir(join(tmp, 'killed', 'extracted'), { recursive: true });
  assert.deepEqual(extracted.filter((f) => f.endsWith('.part')), []);
  assert.equal(extracted.filter((f) => f.endsWith('.jpeg')).length, 5232);
  const zipAfter = await stat(REAL_ZIP);
  assert.deepEqual([zipAfter.size, zipAfter.mtimeMs], [zipBefore.size, zipBefore.mtimeMs]);
});
