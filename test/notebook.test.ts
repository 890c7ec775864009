// The notebooks' helpers: settings from the environment, live displays, and the data shaped for one-call cells.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { openCache, prepareCache, type OpenedCache } from '../lib/cache.js';
import { ConfigError, PneumotypeError } from '../lib/errors.js';
import {
  archiveContents,
  evaluationSplit,
  folderContents,
  groupMetricsTable,
  interruptSignal,
  labeledSamples,
  augmentTable,
  datasetTable,
  leakageTable,
  runSummaryTable,
  liveTrainingChart,
  misclassifiedSamples,
  notebookSettings,
  pixelsByClass,
  previewBatch,
  progressDisplay,
  readPredictions,
  settingsTable,
  uploadIfConfigured,
  type NotebookS3,
} from '../lib/notebook.js';
import type { PredictionRow } from '../lib/plots.js';
import type { ModelCard } from '../lib/train.js';
import { relabel } from '../lib/relabel.js';
import type { EpochRecord } from '../lib/train.js';
import { datasetFiles, writeTree } from './helpers/fixtures.js';
import { withEnv } from './helpers/env.js';
import { startS3Server } from './helpers/s3-server.js';
import { assertNoTensorLeak } from './helpers/tf-leaks.js';
import { datasetZip } from './helpers/zip-writer.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

let tmp: string;
let project: string;
let labeled: string;
let trainOnly: string;
let cache: OpenedCache;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-notebook-'));
  project = join(tmp, 'project');
  await mkdir(join(project, 'notebooks'), { recursive: true });
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'pneumotype' }));
  labeled = join(tmp, 'labeled');
  await writeTree(join(tmp, 'src'), await datasetFiles({ perClass: { train: 6, test: 2 }, width: 24, height: 24 }));
  await relabel({ from: join(tmp, 'src'), out: labeled });
  trainOnly = join(tmp, 'train-only');
  await writeTree(join(tmp, 'src-train'), await datasetFiles({ perClass: { train: 3, test: 0 }, width: 24, height: 24 }));
  await relabel({ from: join(tmp, 'src-train'), out: trainOnly });
  const { dir } = await prepareCache({ labeledDir: labeled, cacheDir: join(tmp, 'cache'), imageSize: 12, valFraction: 0.2, seed: 1 });
  cache = await openCache(dir);
});
after(async () => {
  cache?.close();
  await rm(tmp, { recursive: true, force: true });
});

/** A display that records what it was given. */
function recorder(): { html(s: string): void; out: string[] } {
  const out: string[] = [];
  return { out, html: (s) => void out.push(s) };
}

test('notebookSettings: defaults resolved from the project folder, not from notebooks/', () => {
  const nb = notebookSettings({ env: {}, cwd: join(project, 'notebooks') });
  assert.equal(nb.root, project);
  assert.equal(nb.preset, 'cpu');
  assert.equal(nb.config.imageSize, 128);
  assert.equal(nb.source, 'v2');
  assert.equal(nb.dataDir, join(project, 'data'));
  assert.equal(nb.labeledDir, join(project, 'data', 'labeled'));
  assert.equal(nb.cacheDir, join(project, 'data', 'cache'));
  assert.equal(nb.downloadsDir, join(project, 'data', 'downloads'));
  assert.equal(nb.runDir, join(project, 'runs', 'notebook-cpu'));
  assert.equal(nb.reportsDir, join(project, 'data', 'reports'));
  assert.deepEqual(nb.groupBy, {});
  assert.equal(nb.s3, undefined);
  assert.equal(notebookSettings({ env: {}, cwd: tmp }).root, tmp, 'no project folder: the working directory');
});

test('notebookSettings: the environment overrides, relative paths from the project folder', async () => {
  const csv = join(tmp, 'groups.csv');
  await writeFile(csv, 'file,derived_from\n');
  const nb = notebookSettings({
    cwd: join(project, 'notebooks'),
    env: {
      PNEUMOTYPE_PRESET: 'smoke',
      PNEUMOTYPE_SOURCE: 'archives/x.zip',
      PNEUMOTYPE_DATA_DIR: 'scratch',
      PNEUMOTYPE_RUN_DIR: join(tmp, 'run'),
      PNEUMOTYPE_GROUPS_CSV: csv,
      PNEUMOTYPE_S3_BUCKET: 'my-scans',
      PNEUMOTYPE_S3_PREFIX: 'chest',
      AWS_DEFAULT_REGION: 'eu-west-1',
      AWS_ENDPOINT_URL: 'http://127.0.0.1:9000',
    },
  });
  assert.equal(nb.preset, 'smoke');
  assert.equal(nb.config.imageSize, 32);
  assert.equal(nb.source, join(project, 'archives', 'x.zip'));
  assert.equal(nb.labeledDir, join(project, 'scratch', 'labeled'));
  assert.equal(nb.runDir, join(tmp, 'run'));
  assert.equal(nb.reportsDir, join(project, 'scratch', 'reports'));
  assert.deepEqual(nb.groupBy, { groups: { csv, column: 'derived_from' } });
  assert.deepEqual(nb.s3, { bucket: 'my-scans', prefix: 'chest', region: 'eu-west-1', endpoint: 'http://127.0.0.1:9000' });
  assert.equal(notebookSettings({ env: { PNEUMOTYPE_SOURCE: 'https://example.org/a.zip' }, cwd: project }).source, 'https://example.org/a.zip');
  assert.equal(notebookSettings({ env: { PNEUMOTYPE_PRESET: 'tiny' }, cwd: project }).preset, 'smoke', "'tiny' is the smoke preset, as for the CLI");
  const table = settingsTable(nb);
  assert.deepEqual(table.columns, ['setting', 'value', 'from']);
  assert.deepEqual(table.rows[0], ['preset', 'smoke (32 px, model tiny, 2 epochs, batch 8)', 'PNEUMOTYPE_PRESET']);
  assert.deepEqual(table.rows.at(-1), ['S3 target', 's3://my-scans/chest (region eu-west-1, endpoint http://127.0.0.1:9000)', 'PNEUMOTYPE_S3_BUCKET']);
  // The endpoint's password is not shown, the prefix is shown as the upload uses it, and the SDK's endpoint variables
  // are left alone where AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true tells the SDK to.
  const secret = settingsTable(notebookSettings({
    env: { PNEUMOTYPE_S3_BUCKET: 'scans', PNEUMOTYPE_S3_PREFIX: '/datasets/v2/', AWS_REGION: 'eu-west-1', PNEUMOTYPE_S3_ENDPOINT: 'https://alice:s3cr3t@minio.example:9000' },
    cwd: project,
  }));
  assert.deepEqual(secret.rows.at(-1), ['S3 target', 's3://scans/datasets/v2 (region eu-west-1, endpoint https://***@minio.example:9000/)', 'PNEUMOTYPE_S3_BUCKET']);
  const ignored = notebookSettings({ env: { PNEUMOTYPE_S3_BUCKET: 'scans', AWS_ENDPOINT_URL: 'http://127.0.0.1:9000', AWS_IGNORE_CONFIGURED_ENDPOINT_URLS: 'true' }, cwd: project });
  assert.equal(ignored.s3?.endpoint, undefined);
  // A bucket without a region: cell 2 says so, before cell 3's upload needs one.
  const noRegion = settingsTable(notebookSettings({ env: { PNEUMOTYPE_S3_BUCKET: 'my-scans' }, cwd: project }));
  assert.deepEqual(noRegion.rows.at(-1), [
    'S3 target', "s3://my-scans/ (region not set: the AWS profile's, if it names one; else set AWS_REGION to the deployment region)", 'PNEUMOTYPE_S3_BUCKET',
  ]);
});

test('notebookSettings: an unknown preset or a missing groups CSV is a ConfigError', () => {
  assert.throws(() => notebookSettings({ env: { PNEUMOTYPE_PRESET: 'fast' }, cwd: project }), {
    name: 'ConfigError',
    message: 'PNEUMOTYPE_PRESET "fast" is not a preset: expected "smoke", "cpu", "gpu"',
  });
  const missing = join(project, 'nope.csv');
  assert.throws(() => notebookSettings({ env: { PNEUMOTYPE_GROUPS_CSV: 'nope.csv' }, cwd: project }), {
    name: 'ConfigError',
    message: `PNEUMOTYPE_GROUPS_CSV "${missing}" does not exist: expected a CSV with a file column (or unset it)`,
  });
});

test('progressDisplay redraws one output with a line per stage, escaped', () => {
  const d = recorder();
  const onProgress = progressDisplay(d, { title: 'Fetching' });
  onProgress({ stage: 'fetch', done: 50, total: 100, unit: 'bytes', message: 'retry <1>' });
  onProgress({ stage: 'extract', done: 3, unit: 'files' });
  assert.equal(d.out.length, 2);
  const last = d.out[1] ?? '';
  assert.match(last, /Fetching/);
  assert.match(last, /fetch<\/span> <progress max="1" value="0\.5000"/);
  assert.match(last, / 50 %/);
  assert.match(last, /retry &lt;1&gt;/);
  assert.match(last, /extract<\/span> <progress style/, 'no total: an indeterminate bar');
  assert.ok(last.indexOf('fetch</span>') < last.indexOf('extract</span>'), 'stages in the order they started');
});

test('liveTrainingChart redraws the curves after every epoch', () => {
  const d = recorder();
  const live = liveTrainingChart(d);
  const record = (epoch: number): EpochRecord => ({
    epoch, learningRate: 1e-3, loss: 1 / epoch, accuracy: 0.5, valLoss: 1, valAccuracy: 0.5, valMacroF1: 0.4,
    valBalancedAccuracy: 0.5, seconds: 1, imagesPerSecond: 10, best: true,
  });
  live.onEpoch(record(1));
  live.onEpoch(record(2));
  assert.equal(d.out.length, 3, 'the empty chart, then one redraw per epoch');
  assert.deepEqual(live.history.map((r) => r.epoch), [1, 2]);
  assert.match(d.out[2] ?? '', /"x":\[1,2\]/);
});

test('archiveContents counts files and bytes per folder, junk apart', async () => {
  const { zip } = await datasetZip({ perClass: { train: 2, test: 1 }, junk: true });
  const path = join(tmp, 'archive.zip');
  await writeFile(path, zip);
  const table = await archiveContents(path);
  assert.deepEqual(table.columns, ['folder', 'files', 'uncompressed']);
  assert.deepEqual(table.rows.map((r) => [r[0], r[1]]), [
    ['chest_xray/test/NORMAL', 1],
    ['chest_xray/test/PNEUMONIA', 2],
    ['chest_xray/train/NORMAL', 2],
    ['chest_xray/train/PNEUMONIA', 4],
    ['(junk: __MACOSX, ._*, .DS_Store, Thumbs.db)', 4],
  ]);
  // An extracted copy (a folder as the notebooks' source): the same table of its files.
  const tree = join(tmp, 'archive-tree');
  await writeTree(tree, await datasetFiles({ perClass: { train: 2, test: 1 }, junk: true }));
  const fromFolder = await archiveContents(tree);
  assert.deepEqual(fromFolder.rows.map((r) => [r[0], r[1]]), table.rows.map((r) => [r[0], r[1]]));
  assert.deepEqual(fromFolder.rows.map((r) => r[2]), table.rows.map((r) => r[2]));
});

test('folderContents lists every file under a folder with its size; a missing folder is named', async () => {
  const dir = join(tmp, 'run-listing');
  await mkdir(join(dir, 'checkpoints', 'last'), { recursive: true });
  await writeFile(join(dir, 'history.json'), '[]');
  await writeFile(join(dir, 'checkpoints', 'last', 'weights.bin'), Buffer.alloc(2048));
  assert.deepEqual(await folderContents(dir), {
    columns: ['file', 'size'],
    rows: [['checkpoints/last/weights.bin', '2.0 KB'], ['history.json', '2 B']],
  });
  await assert.rejects(folderContents(join(tmp, 'no-run')), {
    name: 'ConfigError',
    message: `cannot list "${join(tmp, 'no-run')}" (ENOENT: no such file or directory, scandir '${join(tmp, 'no-run')}')`,
  });
});

test('labeledSamples decodes a few images of each class, the same ones for the same seed', async () => {
  const a = await labeledSamples({ labeledDir: labeled, split: 'train', perClass: 2, size: 16 });
  const b = await labeledSamples({ labeledDir: labeled, split: 'train', perClass: 2, size: 16 });
  assert.equal(a.length, 6);
  assert.deepEqual(a.map((s) => s.title.split('\n')[0]), ['normal', 'normal', 'bacteria', 'bacteria', 'virus', 'virus']);
  assert.ok(a.every((s) => s.size === 16 && s.pixels.length === 256));
  assert.deepEqual(a.map((s) => s.title), b.map((s) => s.title));
});

test('previewBatch describes the first batch and leaks no tensor', async () => {
  const preview = previewBatch(cache, { subset: 'train', batchSize: 4, seed: 1, epoch: 0 });
  assert.deepEqual(preview.tensors.columns, ['tensor', 'shape', 'dtype', 'min', 'max', 'mean', 'holds']);
  assert.deepEqual(preview.tensors.rows.map((r) => r.slice(0, 3)), [['xs', '[4, 12, 12, 1]', 'float32'], ['ys', '[4, 3]', 'float32']]);
  assert.equal(preview.tensors.rows[1]?.[5], 0.3333);
  assert.equal(preview.samples.length, 4);
  assert.ok(preview.samples.every((s, k) => s.pixels.length === 144 && s.title.startsWith(`${preview.labels[k]}\n`)));
  assert.equal(previewBatch(cache, { subset: 'train', batchSize: 4, limit: 2 }).samples.length, 2);
  await assertNoTensorLeak('previewBatch', () => previewBatch(cache, { subset: 'train', batchSize: 4, augment: { noise: 0.1 } }));
  const { dir } = await prepareCache({ labeledDir: trainOnly, cacheDir: join(tmp, 'cache-train'), imageSize: 12, valFraction: 0.2, seed: 1 });
  const trainCache = await openCache(dir);
  try {
    assert.throws(() => previewBatch(trainCache, { subset: 'test' }), {
      name: 'ConfigError',
      message: `the test subset of the cache at ${JSON.stringify(dir)} has no images`,
    });
  } finally {
    trainCache.close();
  }
});

test('pixelsByClass picks up to perClass images of each class', () => {
  const px = pixelsByClass(cache, { subset: 'train', perClass: 2 });
  assert.deepEqual(Object.keys(px), ['normal', 'bacteria', 'virus']);
  assert.ok(Object.values(px).every((list) => list.length === 2 && list.every((p) => p.length === 144)));
  assert.equal(pixelsByClass(cache, { subset: 'test', perClass: 99 }).normal.length, 2);
});

test('readPredictions and misclassifiedSamples: the most confident mistakes, decoded', async () => {
  const csv = join(tmp, 'predictions.csv');
  await writeFile(
    csv,
    'file,patientId,trueLabel,predictedLabel,normal,bacteria,virus\n' +
      'test/virus/person60_virus_1013.jpeg,person60,virus,bacteria,0.1,0.8,0.1\n' +
      'test/normal/IM-0100-0001.jpeg,IM-0100,normal,normal,0.9,0.05,0.05\n' +
      'test/virus/missing.jpeg,p9,virus,normal,0.95,0.03,0.02\n',
  );
  const rows: PredictionRow[] = await readPredictions(csv);
  assert.equal(rows.length, 3);
  const samples = await misclassifiedSamples(rows, { labeledDir: labeled, size: 8 });
  assert.equal(samples.length, 1, 'the image that does not exist is left out');
  assert.deepEqual({ ...samples[0], pixels: samples[0]?.pixels.length }, {
    pixels: 64, size: 8, file: 'test/virus/person60_virus_1013.jpeg', trueLabel: 'virus', predictedLabel: 'bacteria', confidence: 0.8,
  });
  const missing = join(tmp, 'none.csv');
  await assert.rejects(readPredictions(missing), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, new RegExp(`^cannot read the predictions ${JSON.stringify(missing).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: ENOENT`));
    return true;
  });
});

test('evaluationSplit: test when the labelled folder has one, else val', async () => {
  assert.equal(await evaluationSplit(labeled), 'test');
  assert.equal(await evaluationSplit(trainOnly), 'val');
});

test('uploadIfConfigured: says how to configure S3 when nothing is, uploads when a bucket is given, names its variables in hints', async () => {
  const none = await uploadIfConfigured({ s3: undefined, data: labeled });
  assert.equal(none.uploaded, false);
  assert.equal(none.result, undefined);
  assert.match(none.note, /^No S3 bucket is configured, so nothing was uploaded\. Set PNEUMOTYPE_S3_BUCKET/);
  const s3 = await startS3Server({ buckets: ['notebook-test'], region: 'eu-west-1' });
  const credentials = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey };
  await withEnv(credentials, async () => {
    const sent = await uploadIfConfigured({ s3: { bucket: 'notebook-test', prefix: 'nb', region: 'eu-west-1', endpoint: s3.endpoint }, data: labeled });
    assert.equal(sent.uploaded, true);
    assert.match(sent.note, /^\d+ files sent \(.+\), 0 already there; s3:\/\/notebook-test\/nb\/ holds the \d+ files of the dataset, listed in nb\/_pneumotype-upload\.json\.$/);
    assert.ok((await s3.listKeys('notebook-test', 'nb/')).includes('nb/_pneumotype-upload.json'));

    // The hints name the notebooks' environment variables, not the CLI's flags.
    const target = { bucket: 'notebook-test', prefix: 'nb', region: 'eu-west-1', endpoint: s3.endpoint };
    const fails = async (s3Settings: NotebookS3, expected: string | RegExp): Promise<void> => {
      await assert.rejects(uploadIfConfigured({ s3: s3Settings, data: labeled }), (err: unknown) => {
        assert.ok(err instanceof PneumotypeError);
        if (typeof expected === 'string') assert.equal(err.message, expected);
        else assert.match(err.message, expected);
        return true;
      });
    };
    await fails({ ...target, region: 'us-east-1' }, 'bucket "notebook-test" is in "eu-west-1" but the upload targets "us-east-1": the narrative keeps data ' +
      'in the region the model is deployed to; set AWS_REGION=eu-west-1 or use another bucket');
    await fails({ ...target, bucket: 'no-such-bucket' }, /^bucket "no-such-bucket" does not exist \(endpoint ".+"\): create it in "eu-west-1" first or set PNEUMOTYPE_S3_BUCKET to another bucket$/);
    await fails({ ...target, prefix: 'a/../b' }, 'prefix "a/../b" has an empty, "." or ".." segment or a backslash: set PNEUMOTYPE_S3_PREFIX like "datasets/chest-xray"');
    await fails({ ...target, endpoint: 'ftp://example.com' }, 'endpoint "ftp://example.com" is not an http(s) URL: set PNEUMOTYPE_S3_ENDPOINT like "http://127.0.0.1:9000"');
    await fails({ ...target, endpoint: 'http://127.0.0.1:1' }, /^no answer from the S3 endpoint "http:\/\/127\.0\.0\.1:1" checking bucket "s3:\/\/notebook-test\/" \(.*ECONNREFUSED.*\): check PNEUMOTYPE_S3_ENDPOINT \(or AWS_ENDPOINT_URL_S3\) and that the server is running$/);
    await assert.rejects(uploadIfConfigured({ s3: target, data: tmp }), {
      message: `no manifest at ${JSON.stringify(join(tmp, 'manifest.csv'))}: run notebook 02-three-labels first`,
    });
    const none = join(tmp, 'no-such-aws-file');
    const isolated = { AWS_CONFIG_FILE: none, AWS_SHARED_CREDENTIALS_FILE: none, AWS_PROFILE: undefined, AWS_REGION: undefined, AWS_DEFAULT_REGION: undefined };
    await withEnv(isolated, () => fails({ ...target, region: undefined }, 'no AWS region for bucket "notebook-test": set AWS_REGION (the region the model is deployed to)'));
  }).finally(() => s3.close());
});

test('groupMetricsTable and leakageTable', () => {
  assert.deepEqual(groupMetricsTable(undefined).rows[0]?.[0], '(none)');
  const table = groupMetricsTable({
    'full-res': { n: 4, accuracy: 0.75, balancedAccuracy: 0.5, macroF1: 0.4, recall: { normal: 1, bacteria: 0.5, virus: 0 }, support: { normal: 2, bacteria: 2, virus: 0 }, bacteriaVsVirusAuc: null },
    'copies': { n: 4, accuracy: 0.5, balancedAccuracy: 0.5, macroF1: 0.5, recall: { normal: 0, bacteria: 0.5, virus: 0.5 }, support: { normal: 0, bacteria: 2, virus: 2 }, bacteriaVsVirusAuc: 0.75 },
  });
  assert.deepEqual(table.rows, [['full-res', 4, '2 / 2 / 0', '0.750', '0.500', '1.000', '0.500', null, null], ['copies', 4, '0 / 2 / 2', '0.500', '0.500', null, '0.500', '0.500', '0.750']]);
  assert.equal(table.columns[2], 'images normal / bacteria / virus');
  assert.equal(table.columns.at(-1), 'bacteria vs virus AUC');
  const audit = leakageTable({
    threshold: 10,
    identicalAcrossSplits: [],
    nearDuplicatesAcrossSplits: [{ a: 'train/virus/a.jpeg', b: 'test/virus/b.jpeg', distance: 4 }],
    identicalAcrossPatients: [],
    clean: false,
  });
  assert.deepEqual(audit.rows.map((r) => r[1]), [0, 1, 0, null]);
  assert.equal(audit.rows[1]?.[2], 'train/virus/a.jpeg ~ test/virus/b.jpeg (4 bits)');
  assert.equal(audit.rows[3]?.[2], 'images are shared across splits: test scores would be inflated');
  // The shared train split alone: a clean audit compared nothing, and says so.
  const alone = { threshold: 10, identicalAcrossSplits: [], nearDuplicatesAcrossSplits: [], identicalAcrossPatients: [], clean: true };
  assert.equal(leakageTable(alone, { splits: ['train'] }).rows[3]?.[2], 'one split only (train): nothing to compare across splits; validation is carved from it by patient id');
  assert.equal(leakageTable(alone, { splits: ['test'] }).rows[3]?.[2], 'one split only (test): nothing to compare across splits');
  assert.equal(leakageTable(alone, { splits: ['train', 'test'] }).rows[3]?.[2], 'clean: no image is shared across splits');
});

test('datasetTable: one row per fact, the source left out where it is the path', () => {
  const archive = { kind: 'archive' as const, path: '/d/ChestXRay2017.zip', bytes: 2048, sha256: 'ab'.repeat(32), source: 'v2', url: 'https://x.example/a.zip', resumed: true, downloaded: true };
  assert.deepEqual(datasetTable(archive).rows, [
    ['source', 'v2'], ['archive', '/d/ChestXRay2017.zip'], ['size', '2.0 KB (2,048 bytes)'], ['SHA-256', 'ab'.repeat(32)],
    ['from', 'https://x.example/a.zip'], ['this time', 'downloaded, resuming an earlier partial file'],
  ]);
  const local = datasetTable({ ...archive, source: '/d/ChestXRay2017.zip', downloaded: false, resumed: false, url: undefined } as unknown as Parameters<typeof datasetTable>[0]);
  assert.deepEqual(local.rows.map((r) => r[0]), ['archive', 'size', 'SHA-256', 'this time']);
  assert.equal(local.rows.at(-1)?.[1], 'already there: verified, not downloaded');
  assert.deepEqual(datasetTable({ kind: 'folder', path: 'data/x', source: 'data/x' }).rows.map((r) => r[0]), ['folder', 'taken as it is']);
});

test('augmentTable: each option that is on, its amount and what it does', () => {
  assert.deepEqual(augmentTable({ flip: false, rotateDegrees: 7, brightness: 0.05, jpegQuality: [40, 95], localContrast: 0.3, noise: 0 }), {
    columns: ['option', 'value', 'what it does'],
    rows: [
      ['rotateDegrees', '7', 'rotated by up to 7 degrees either way'],
      ['brightness', '0.05', 'every pixel shifted by the same amount, up to ±0.05 (pixels from 0 to 1)'],
      ['jpegQuality', '40-95', 're-compressed as JPEG at a quality from 40 to 95'],
      ['localContrast', '0.3', 'probability 0.3 of a CLAHE-like local contrast enhancement'],
    ],
  });
});

test('runSummaryTable: the kept model\'s figures named as validation figures, three decimals', () => {
  const card = { training: { engine: 'one TensorFlow graph per step' }, validation: { accuracy: 0.74689, macroF1: 0.7, balancedAccuracy: 0.71234, loss: Number.NaN } } as unknown as ModelCard;
  assert.deepEqual(runSummaryTable({ bestEpoch: 2, stoppedEarly: false, card }), {
    columns: ['best epoch', 'stopped early', 'training steps', 'val accuracy', 'val macro-F1', 'val balanced accuracy', 'val loss'],
    rows: [[2, 'no', 'one TensorFlow graph per step', '0.747', '0.700', '0.712', 'n/a']],
  });
});

test('interruptSignal: the kernel\'s next SIGINT aborts every signal handed out, through one listener', async () => {
  const before = process.rawListeners('SIGINT');
  const added = (): Array<() => void> => process.rawListeners('SIGINT').filter((l) => !before.includes(l)) as Array<() => void>;
  const a = interruptSignal();
  const b = interruptSignal(); // a cell run again: no second listener
  assert.equal(added().length, 0, 'not added while the cell\'s own code runs');
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(added().length, 1);
  assert.ok(!a.aborted && !b.aborted);
  added()[0]?.(); // what the kernel's SIGINT calls (a once listener: it removes itself)
  assert.ok(a.aborted && b.aborted);
  assert.equal((a.reason as Error).message, 'interrupted from the notebook (SIGINT)');
  assert.deepEqual(process.rawListeners('SIGINT'), before, 'nothing left listening');
  const c = interruptSignal(); // the next interrupt is heard again
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(added().length, 1);
  added()[0]?.();
  assert.ok(c.aborted);
});
