// The whole job on fixtures: a local zip, and a remote v3-like zip read with Range requests; re-runs skip every step.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import { ConfigError } from '../lib/errors.js';
import { readManifest } from '../lib/manifest.js';
import { defaultPreset, runPipeline } from '../lib/pipeline.js';
import { train } from '../lib/train.js';
import { datasetFiles, writeTree } from './helpers/fixtures.js';
import { startFileServer } from './helpers/http-server.js';
import { buildZip, datasetZip } from './helpers/zip-writer.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-pipeline-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('run on a local zip: fetch verifies, relabel and prepare run, a second run skips all three, another archive is refused', async () => {
  const zipPath = join(tmp, 'local.zip');
  await writeFile(zipPath, (await datasetZip({ perClass: { train: 4, test: 2 }, junk: true })).zip);
  const dataDir = join(tmp, 'local-data');
  const steps: string[] = [];
  const first = await runPipeline({ source: zipPath, dataDir, preset: 'smoke', train: false, onStep: (s, note) => steps.push(`${s}: ${note}`) });
  assert.deepEqual(first.steps.map((s) => [s.step, s.skipped]), [['fetch', true], ['relabel', false], ['prepare', false]]);
  assert.equal(first.cache.index.imageSize, 32);
  assert.equal(first.cache.index.images.length, 18);
  const againSteps: string[] = [];
  const second = await runPipeline({ source: zipPath, dataDir, preset: 'smoke', train: false, onStep: (s, note) => againSteps.push(`${s}: ${note}`) });
  assert.deepEqual(second.steps.map((s) => [s.step, s.skipped]), [['fetch', true], ['relabel', true], ['prepare', true]]);
  assert.ok(steps.length >= 3);
  // The first run decodes; the second checks the cache it finds (and says so before the check, not "decoding").
  assert.ok(steps.includes(`prepare: decoding into ${join(dataDir, 'cache')}`), steps.join('\n'));
  assert.ok(againSteps.includes(`prepare: checking ${join(dataDir, 'cache', '32')}`), againSteps.join('\n'));
  // Another archive into the same folders: refused, not skipped past.
  const otherZip = join(tmp, 'other.zip');
  await writeFile(otherZip, (await datasetZip({ perClass: { train: 5, test: 2 } })).zip);
  const labeled = join(dataDir, 'labeled');
  await assert.rejects(runPipeline({ source: otherZip, dataDir, preset: 'smoke', train: false }), {
    name: 'LabelError',
    message: `"${labeled}" was made from "${zipPath}", not from "${otherZip}": give --source "${zipPath}" to use it, choose another --data-dir, or remove "${labeled}" to relabel`,
  });
  // Relabelled from it after all, nothing that the first archive left in extracted/ is mixed in.
  await rm(labeled, { recursive: true });
  const other = await runPipeline({ source: otherZip, dataDir, preset: 'smoke', train: false });
  assert.equal(other.cache.index.images.length, 21);
  // A labelled file deleted since is put back.
  const gone = join(labeled, (await readManifest(labeled))[0]?.file ?? '');
  await rm(gone);
  const back = await runPipeline({ source: otherZip, dataDir, preset: 'smoke', train: false });
  assert.deepEqual(back.steps.map((s) => [s.step, s.skipped]), [['fetch', true], ['relabel', false], ['prepare', true]]);
  assert.equal((await stat(gone)).isFile(), true);
  // A grouping CSV that cannot be read is found before any step runs.
  const nope = join(tmp, 'nope.csv');
  const seen: string[] = [];
  await assert.rejects(runPipeline({ source: otherZip, dataDir, preset: 'smoke', groups: { csv: nope, column: 'g' }, onStep: (s) => seen.push(s) }), {
    name: 'ConfigError',
    message: `the grouping CSV "${nope}" cannot be read (ENOENT: no such file or directory, open '${nope}')`,
  });
  assert.deepEqual(seen, []);
  // Without a preset and without training: the cpu preset's cache (128 px, the gpu preset's too), so that a later
  // run finds it; under PNEUMOTYPE_PRESET=smoke (the notebooks in CI), the smoke preset's.
  const saved = process.env.PNEUMOTYPE_PRESET;
  try {
    delete process.env.PNEUMOTYPE_PRESET;
    assert.equal((await runPipeline({ source: otherZip, dataDir, train: false })).cache.index.imageSize, 128);
    process.env.PNEUMOTYPE_PRESET = 'smoke';
    const smoke = await runPipeline({ source: otherZip, dataDir, train: false });
    assert.deepEqual([smoke.cache.index.imageSize, smoke.steps.at(-1)?.skipped], [32, true]);
  } finally {
    if (saved === undefined) delete process.env.PNEUMOTYPE_PRESET;
    else process.env.PNEUMOTYPE_PRESET = saved;
  }
});

test('run on a folder (an archive extracted by other means): nothing to fetch, relabelled as it is; --remote with a path is refused', async () => {
  const tree = join(tmp, 'tree');
  await writeTree(tree, await datasetFiles({ perClass: { train: 3, test: 1 } }));
  const dataDir = join(tmp, 'tree-data');
  const r = await runPipeline({ source: tree, dataDir, preset: 'smoke', train: false });
  assert.deepEqual(r.steps.map((s) => [s.step, s.skipped, s.step === 'fetch' ? s.note : '']), [['fetch', true, `${tree} is a folder: nothing to fetch`], ['relabel', false, ''], ['prepare', false, '']]);
  assert.equal(r.cache.index.images.length, 12);
  const again = await runPipeline({ source: tree, dataDir, preset: 'smoke', train: false });
  assert.deepEqual(again.steps.map((s) => s.skipped), [true, true, true]);
  // Another process re-checking the same labelled folder (a notebook beside `npm start`): waited for, no BusyError.
  const other = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await once(other, 'spawn');
  const lock = `${join(dataDir, 'labeled')}.lock`;
  await writeFile(lock, `${JSON.stringify({ pid: other.pid, host: hostname(), started: new Date().toISOString() })}\n`);
  const waits: string[] = [];
  const released = setTimeout(() => void rm(lock, { force: true }), 1500);
  try {
    const waited = await runPipeline({ source: tree, dataDir, preset: 'smoke', train: false, onProgress: (p) => void (p.message?.startsWith('waiting: ') && waits.push(p.message)) });
    assert.deepEqual(waited.steps.map((s) => s.skipped), [true, true, true]);
    assert.equal(waits.length, 1);
    assert.match(waits[0] ?? '', new RegExp(`^waiting: Another process is already relabelling into .*: process ${other.pid} on `));
  } finally {
    clearTimeout(released);
    other.kill('SIGKILL');
  }
  // An image added to the folder since (a folder may change under the same path): relabel is run again and says so,
  // instead of a run on the stale labelled copy; with that copy removed, the new image is in.
  const had = new Set((await datasetFiles({ perClass: { train: 3, test: 1 } })).map((f) => f.path));
  const more = await datasetFiles({ perClass: { train: 4, test: 1 } });
  await writeTree(tree, more.filter((f) => f.path.includes('/train/NORMAL/') && !had.has(f.path)));
  const labeled = join(dataDir, 'labeled');
  await assert.rejects(runPipeline({ source: tree, dataDir, preset: 'smoke', train: false }), {
    name: 'LabelError',
    message: `"${labeled}" was made from another source: 1 file(s) differ from "${tree}"; ${tree} changed since it was relabelled: ` +
      `choose another --data-dir, or remove "${labeled}" to relabel:\n  train/normal/NORMAL2-IM-0203-0001.jpeg: new`,
  });
  await rm(labeled, { recursive: true });
  const grown = await runPipeline({ source: tree, dataDir, preset: 'smoke', train: false });
  assert.deepEqual(grown.steps.map((s) => s.skipped), [true, false, false]);
  assert.equal(grown.cache.index.images.length, 13);
  await assert.rejects(runPipeline({ source: tree, remote: true, dataDir, preset: 'smoke', train: false }), (err: unknown) => err instanceof ConfigError && err.name === 'UsageError');
  await assert.rejects(runPipeline({ source: tree, remote: true, dataDir, preset: 'smoke', train: false }), {
    name: 'UsageError',
    message: `remote reads an archive over HTTP with Range requests; "${tree}" is a local path: leave out --remote`,
  });
});

test('v3 (read remotely by default) against labelled data made the other way: refused before any request, with the flag that reads it as before', async () => {
  // The labelled folder made from a downloaded ZhangLabData.zip (here a tiny stand-in under that name).
  const dataDir = join(tmp, 'v3-whole');
  const archive = join(dataDir, 'downloads', 'ZhangLabData.zip');
  await mkdir(join(dataDir, 'downloads'), { recursive: true });
  await writeFile(archive, (await datasetZip({ perClass: { train: 2, test: 1 } })).zip);
  await runPipeline({ source: archive, dataDir, preset: 'smoke', train: false });
  const labeled = join(dataDir, 'labeled');
  // No server is reachable here: a request would fail, so these refusals come before any.
  const v3url = '"https://data.mendeley.com/datasets/rscbjbr9sj/3/files/810b2ce2-11c3-4424-996e-3bef36600907/ZhangLabData.zip?dl=1"';
  await assert.rejects(runPipeline({ source: 'v3', dataDir, preset: 'smoke', train: false }), {
    name: 'LabelError',
    message: `"${labeled}" was made from "${archive}", not from ${v3url} (read with --remote): add --download-whole to use it, choose another --data-dir, or remove "${labeled}" to relabel`,
  });
  await assert.rejects(runPipeline({ source: 'v3', remote: true, dataDir, preset: 'smoke', train: false }), {
    name: 'LabelError',
    message: `"${labeled}" was made from "${archive}", not from ${v3url} (read with --remote): use --download-whole instead of --remote to use it, choose another --data-dir, or remove "${labeled}" to relabel`,
  });
  // And the other way: made from v3 read remotely (its entries in extracted/, its URL recorded), asked to download it.
  const remoteDir = join(tmp, 'v3-remote');
  await writeTree(join(remoteDir, 'extracted'), await datasetFiles({ prefix: 'CellData/chest_xray', perClass: { train: 2, test: 1 } }));
  await writeFile(join(remoteDir, 'extracted.source.json'), JSON.stringify({ url: JSON.parse(v3url) as string }));
  await runPipeline({ source: join(remoteDir, 'extracted'), dataDir: remoteDir, preset: 'smoke', train: false });
  const remoteLabeled = join(remoteDir, 'labeled');
  await assert.rejects(runPipeline({ source: 'v3', remote: false, dataDir: remoteDir, preset: 'smoke', train: false }), {
    name: 'LabelError',
    message: `"${remoteLabeled}" was made from ${v3url} (read with --remote), not from "${join(remoteDir, 'downloads', 'ZhangLabData.zip')}": leave out --download-whole to use it, choose another --data-dir, or remove "${remoteLabeled}" to relabel`,
  });
});

test('run with remote: only the chest X-ray entries of a v3-like archive are transferred', async () => {
  const chest = await datasetFiles({ prefix: 'CellData/chest_xray', perClass: { train: 3, test: 1 } });
  const oct = Array.from({ length: 4 }, (_, i) => ({ name: `CellData/OCT/test/DME/DME-${i}-1.jpeg`, data: randomBytes(2_000_000), method: 'store' as const }));
  const server = await startFileServer({ data: buildZip([...oct, ...chest.map((f) => ({ name: f.path, data: f.data }))]) });
  try {
    const dataDir = join(tmp, 'remote-data');
    const r = await runPipeline({ source: server.url, remote: true, dataDir, preset: 'smoke', train: false });
    assert.equal(r.archive, undefined);
    assert.equal(r.remote?.files, chest.length);
    assert.ok((r.remote?.transferredBytes ?? Infinity) < 8_000_000 / 4, `transferred ${r.remote?.transferredBytes}`);
    assert.equal(r.cache.index.images.length, 12);
    const again = await runPipeline({ source: server.url, remote: true, dataDir, preset: 'smoke', train: false });
    assert.deepEqual(again.steps.map((s) => s.skipped), [true, true, true]);
    // Another archive read into the same folders, or the same one downloaded whole: refused before any request.
    const requests = server.requests.length;
    const labeled = join(dataDir, 'labeled');
    const other = `${server.url}?other`;
    await assert.rejects(runPipeline({ source: other, remote: true, dataDir, preset: 'smoke', train: false }), {
      name: 'LabelError',
      message: `"${labeled}" was made from "${server.url}" (read with --remote), not from "${other}" (read with --remote): choose another --data-dir, or remove "${labeled}" to relabel`,
    });
    await assert.rejects(runPipeline({ source: server.url, dataDir, preset: 'smoke', train: false }), {
      name: 'LabelError',
      message: `"${labeled}" was made from "${server.url}" (read with --remote), not from "${join(dataDir, 'downloads', 'data.zip')}": add --remote to use it, choose another --data-dir, or remove "${labeled}" to relabel`,
    });
    assert.equal(server.requests.length, requests);
    // An interrupted read of one archive is not completed with another's entries.
    await rm(labeled, { recursive: true });
    const extracted = join(dataDir, 'extracted');
    await assert.rejects(runPipeline({ source: other, remote: true, dataDir, preset: 'smoke', train: false }), {
      name: 'LabelError',
      message: `"${extracted}" holds entries read from "${server.url}", not from "${other}": choose another --data-dir, or remove "${extracted}" and "${extracted}.source.json"`,
    });
    assert.equal(server.requests.length, requests);
    // A record left by a read that failed before its first entry (no extracted folder) is replaced, not refused.
    const fresh = join(tmp, 'remote-record-only');
    await mkdir(fresh, { recursive: true });
    await writeFile(join(fresh, 'extracted.source.json'), JSON.stringify({ url: other }));
    const replaced = await runPipeline({ source: server.url, remote: true, dataDir: fresh, preset: 'smoke', train: false });
    assert.equal(replaced.remote?.files, chest.length);
    assert.deepEqual(JSON.parse(await readFile(join(fresh, 'extracted.source.json'), 'utf8')), { url: server.url });
  } finally {
    await server.close();
  }
});

test('the whole job trains (with config overrides) and evaluates on the test split; a second run skips training', async () => {
  const zipPath = join(tmp, 'whole.zip');
  await writeFile(zipPath, (await datasetZip({ perClass: { train: 8, test: 3 } })).zip);
  const dataDir = join(tmp, 'whole-data');
  const runDir = join(tmp, 'whole-run');
  // Overrides of the preset reach training (pneumotype run --eager passes { graphOps: false } the same way).
  const finishedPrepares: string[] = [];
  const first = await runPipeline({
    source: zipPath, dataDir, runDir, preset: 'smoke', config: { epochs: 1, graphOps: false },
    onProgress: (p) => void (p.stage === 'prepare' && p.done === p.total && finishedPrepares.push(p.message ?? '')),
  });
  assert.deepEqual(first.steps.map((s) => s.step), ['fetch', 'relabel', 'prepare', 'train', 'calibrate', 'evaluate', 'report']);
  // The prepare step's cache is announced once: train's own look at it (up to date) adds no second line.
  assert.deepEqual(finishedPrepares.map((m) => m.replace(/".*"/, 'DIR')), ['cached 33 images at DIR']);
  assert.ok(first.calibration && first.calibration.temperature > 0 && first.calibration.split === 'val');
  assert.match(first.steps[4]?.note ?? '', /^temperature \d+\.\d{3}: expected calibration error \d\.\d{3} -> \d\.\d{3} \(cross-fitted by patient\)$/);
  assert.equal(first.training?.history.length, 1);
  assert.equal(first.training?.card.training.engine, 'tfjs ops, fused native ops (lib/fast-train.ts)');
  assert.equal(first.report, join(runDir, 'report.html'));
  assert.equal(first.evaluation?.split, 'test');
  assert.equal(first.evaluation?.n, 9);
  const second = await runPipeline({ source: zipPath, dataDir, runDir, preset: 'smoke', config: { epochs: 1 } });
  assert.deepEqual(second.steps.map((s) => [s.step, s.skipped]), [['fetch', true], ['relabel', true], ['prepare', true], ['train', true], ['calibrate', true], ['evaluate', false], ['report', false]]);
  assert.equal(second.steps[4]?.note, `${runDir}/model is calibrated (temperature ${first.calibration.temperature.toFixed(3)})`);
  // The model is reused only for the data and the configuration it was trained with.
  await assert.rejects(runPipeline({ source: zipPath, dataDir, runDir, preset: 'smoke', config: { epochs: 1, learningRate: 0.5 } }), {
    name: 'ConfigError',
    message: `"${join(runDir, 'model')}" was trained on another configuration (learningRate 0.001 (now 0.5)): choose another --out, or remove "${runDir}" to train again`,
  });
  // More epochs than the run was started with: it cannot continue as the same run (the schedule spans all epochs).
  await assert.rejects(runPipeline({ source: zipPath, dataDir, runDir, preset: 'smoke' }), {
    name: 'ConfigError',
    message: `cannot resume ${JSON.stringify(runDir)}: it was started with 1 epoch (now 2); a resume continues the same run: give the settings it was started with, or train into another --out`,
  });
  await assert.rejects(runPipeline({ source: zipPath, dataDir, runDir, preset: 'smoke', config: { epochs: 1 }, augment: { flip: true } }), {
    name: 'ConfigError',
    message: `"${join(runDir, 'model')}" was trained on another augmentation (false, now {"flip":true}): choose another --out, or remove "${runDir}" to train again`,
  });
  // A model that `train --init-from` or `--balance-groups` made in this folder is not run's, whatever its hash says.
  const cardPath = join(runDir, 'model', 'pneumotype.json');
  const cardText = await readFile(cardPath, 'utf8');
  for (const [field, value, said] of [
    ['initFrom', 'models/pretrained', 'a pretrained start (--init-from "models/pretrained"; run trains from scratch)'],
    ['balanceGroups', 'groups.csv:derived_from', 'group balancing (--balance-groups "groups.csv:derived_from"; run balances no groups)'],
    // A model whose pixels an older decoding made (ICC profiles applied, say) is not reused with the new one.
    ['data.decoding', 3, 'images decoded another way (decoding version 3, now 4; see CACHE_VERSION in lib/cache.ts)'],
  ] as const) {
    const edited = JSON.parse(cardText) as { training: Record<string, unknown>; data: Record<string, unknown> };
    assert.equal(edited.data.decoding, 4, 'the card records the decoding of its pixels');
    if (field === 'data.decoding') edited.data.decoding = value;
    else edited.training[field] = value;
    await writeFile(cardPath, JSON.stringify(edited));
    await assert.rejects(runPipeline({ source: zipPath, dataDir, runDir, preset: 'smoke', config: { epochs: 1 } }), {
      name: 'ConfigError',
      message: `"${join(runDir, 'model')}" was trained on ${said}: choose another --out, or remove "${runDir}" to train again`,
    });
  }
  await writeFile(cardPath, cardText);
  const otherZip = join(tmp, 'whole-other.zip');
  await writeFile(otherZip, (await datasetZip({ perClass: { train: 8, test: 2 } })).zip);
  await assert.rejects(runPipeline({ source: otherZip, dataDir: join(tmp, 'whole-other-data'), runDir, preset: 'smoke', config: { epochs: 1 } }), {
    name: 'ConfigError',
    message: new RegExp(`^"${join(runDir, 'model')}" was trained on other data \\(manifest SHA-256 [0-9a-f]{12}…, .* has [0-9a-f]{12}…\\): choose another --out`),
  });
  const off = await runPipeline({ source: zipPath, dataDir, runDir: join(tmp, 'uncalibrated-run'), preset: 'smoke', calibrate: false, config: { epochs: 1, graphOps: false } });
  assert.deepEqual(off.steps.filter((s) => s.step === 'calibrate'), [{ step: 'calibrate', skipped: true, note: 'turned off' }]);
  // Another run holds the run folder and calibrates its model meanwhile: waited for, found calibrated, not calibrated
  // twice. The old model/ a killed calibration left half deleted beside it goes.
  const uncalibrated = join(tmp, 'uncalibrated-run');
  const dead = spawn(process.execPath, ['-e', '']);
  await once(dead, 'exit');
  await mkdir(join(`${uncalibrated}/model.pneumotype-old-${dead.pid}`), { recursive: true });
  await writeFile(join(`${uncalibrated}/model.pneumotype-old-${dead.pid}`, 'weights.bin'), 'half deleted');
  const other = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await once(other, 'spawn');
  await writeFile(`${uncalibrated}.lock`, `${JSON.stringify({ pid: other.pid, host: hostname(), started: new Date().toISOString() })}\n`);
  const offCard = join(uncalibrated, 'model', 'pneumotype.json');
  const calibratedByOther = { temperature: 1.25, split: 'val', images: 3 };
  try {
    const waited = await runPipeline({
      source: zipPath, dataDir, runDir: uncalibrated, preset: 'smoke', config: { epochs: 1, graphOps: false },
      onProgress: (p) => {
        if (p.stage !== 'calibrate' || !p.message?.startsWith('waiting: ')) return;
        // What the other run does before it lets go: its calibration recorded in the card.
        void readFile(offCard, 'utf8')
          .then((text) => writeFile(offCard, JSON.stringify({ ...JSON.parse(text), calibration: calibratedByOther })))
          .then(() => rm(`${uncalibrated}.lock`));
      },
    });
    assert.deepEqual(waited.steps.filter((s) => s.step === 'calibrate'), [{ step: 'calibrate', skipped: true, note: `${uncalibrated}/model was calibrated meanwhile, by another run` }]);
    assert.equal(waited.calibration, undefined);
    assert.deepEqual((JSON.parse(await readFile(offCard, 'utf8')) as { calibration: unknown }).calibration, calibratedByOther);
    assert.deepEqual((await readdir(tmp)).filter((f) => f.startsWith('uncalibrated-run')), ['uncalibrated-run']);
    assert.deepEqual((await readdir(uncalibrated)).filter((f) => f.includes('pneumotype-old')), []);
  } finally {
    other.kill('SIGKILL');
  }
  // With groups, the evaluation and the report break the metrics down by them.
  const rows = (await readManifest(join(dataDir, 'labeled'))).filter((r) => r.split === 'test').map((r, i) => `${r.file.split('/').at(-1)},${i < 5 ? 'full-res' : 'copies'}`);
  await writeFile(join(tmp, 'groups.csv'), `file,derived_from\n${rows.join('\n')}\n`);
  const grouped = await runPipeline({ source: zipPath, dataDir, runDir, preset: 'smoke', config: { epochs: 1 }, groups: { csv: join(tmp, 'groups.csv'), column: 'derived_from' } });
  assert.deepEqual(Object.entries(grouped.evaluation?.byGroup ?? {}).map(([g, m]) => [g, m.n]), [['copies', 4], ['full-res', 5]]);
  assert.match(await readFile(join(runDir, 'report.html'), 'utf8'), /<h2[^>]*>Metrics per group<\/h2>/);
});

test('run resumes a run cut short (its model/ is the best epoch so far), prepares the cache at the configured size, and fetches no archive that is no longer needed', async () => {
  const zipPath = join(tmp, 'resume.zip');
  await writeFile(zipPath, (await datasetZip({ perClass: { train: 6, test: 2 } })).zip);
  const dataDir = join(tmp, 'resume-data');
  const runDir = join(tmp, 'resume-run');
  const config = { epochs: 2, graphOps: false, imageSize: 40 };
  const first = await runPipeline({ source: zipPath, dataDir, runDir, preset: 'smoke', config, train: false });
  assert.equal(first.cache.index.imageSize, 40, 'the configured size, not the preset\'s 32');
  await train({ data: join(dataDir, 'labeled'), out: runDir, preset: 'smoke', cacheDir: join(dataDir, 'cache'), config, stopAfterEpochs: 1 });
  const r = await runPipeline({ source: zipPath, dataDir, runDir, preset: 'smoke', config, calibrate: false });
  assert.deepEqual(r.steps.find((s) => s.step === 'train')?.skipped, false);
  assert.deepEqual(r.training?.history.map((e) => e.epoch), [1, 2]);
  assert.deepEqual(await readdir(join(dataDir, 'cache')), ['40'], 'one cache, at 40 px');
});

test('a downloaded archive deleted after relabelling is not downloaded again while the labelled folder is complete', async () => {
  const { zip } = await datasetZip({ perClass: { train: 3, test: 1 } });
  const server = await startFileServer({ data: zip });
  try {
    const dataDir = join(tmp, 'gone-data');
    await runPipeline({ source: server.url, dataDir, preset: 'smoke', train: false });
    assert.equal(server.requests.length, 1);
    // Labelled and complete: the downloaded archive is not read (hashed) again.
    const kept = await runPipeline({ source: server.url, dataDir, preset: 'smoke', train: false });
    assert.deepEqual(kept.steps[0], { step: 'fetch', skipped: true, note: `${join(dataDir, 'labeled')} is complete, made from ${join(dataDir, 'downloads', 'data.zip')}: the archive is not read again` });
    await rm(join(dataDir, 'downloads', 'data.zip'));
    const again = await runPipeline({ source: server.url, dataDir, preset: 'smoke', train: false });
    assert.equal(server.requests.length, 1, 'no request');
    assert.deepEqual(again.steps[0], { step: 'fetch', skipped: true, note: `${join(dataDir, 'labeled')} is complete; its archive ${join(dataDir, 'downloads', 'data.zip')} is gone and not needed` });
    assert.deepEqual(again.steps.map((s) => s.skipped), [true, true, true]);
  } finally {
    await server.close();
  }
});

test('a complete labelled folder is found from another working directory and after its data folder moved; an older summary with a relative path too', async () => {
  const { zip } = await datasetZip({ perClass: { train: 2, test: 1 } });
  const server = await startFileServer({ data: zip });
  try {
    // Made with the data folder given relative to this process's working directory, as `run --data-dir data` is.
    const home = join(tmp, 'cwd-a');
    await mkdir(home, { recursive: true });
    const dataDir = join(home, 'data');
    await runPipeline({ source: server.url, dataDir: relative(process.cwd(), dataDir), preset: 'smoke', train: false });
    const summaryPath = join(dataDir, 'labeled', 'summary.json');
    const written = JSON.parse(await readFile(summaryPath, 'utf8')) as { source: Record<string, unknown> };
    assert.deepEqual(
      [written.source.absolute, written.source.fromOut],
      [join(dataDir, 'downloads', 'data.zip'), join('..', 'downloads', 'data.zip')],
    );
    // The same folder from another working directory (a child process started in `home`): every step skipped.
    const child = spawn(process.execPath, [
      '--import', import.meta.resolve('tsx'), '--input-type=module', '-e',
      `import { runPipeline } from ${JSON.stringify(import.meta.resolve('../lib/pipeline.ts'))};\n` +
        `const r = await runPipeline({ source: ${JSON.stringify(server.url)}, dataDir: 'data', preset: 'smoke', train: false });\n` +
        'process.stdout.write(JSON.stringify(r.steps.map((s) => s.skipped)));',
    ], { cwd: home, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let errors = '';
    child.stdout.on('data', (chunk: Buffer) => void (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => void (errors += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, errors);
    assert.deepEqual(JSON.parse(out), [true, true, true]);
    assert.equal(server.requests.length, 1, 'downloaded once');
    // The whole data folder moved (mounted elsewhere, say): found by its path relative to the labelled folder.
    const moved = join(tmp, 'cwd-b', 'data');
    await mkdir(join(tmp, 'cwd-b'), { recursive: true });
    await rename(dataDir, moved);
    const there = await runPipeline({ source: server.url, dataDir: moved, preset: 'smoke', train: false });
    assert.deepEqual(there.steps.map((s) => s.skipped), [true, true, true]);
    // A summary written before, by a run started in cwd-b: its path relative to that directory, which is not known.
    const movedSummary = join(moved, 'labeled', 'summary.json');
    const before: Record<string, unknown> = { ...written.source, path: join('data', 'downloads', 'data.zip') };
    delete before.absolute;
    delete before.fromOut;
    await writeFile(movedSummary, JSON.stringify({ ...written, source: before }));
    const old = await runPipeline({ source: server.url, dataDir: moved, preset: 'smoke', train: false });
    assert.deepEqual(old.steps.map((s) => s.skipped), [true, true, true]);
    assert.equal(server.requests.length, 1, 'no request');
    // Another archive is still refused, the older summary's path named as it was recorded.
    const otherZip = join(tmp, 'cwd-other.zip');
    await writeFile(otherZip, (await datasetZip({ perClass: { train: 3, test: 1 } })).zip);
    const labeled = join(moved, 'labeled');
    await assert.rejects(runPipeline({ source: otherZip, dataDir: moved, preset: 'smoke', train: false }), {
      name: 'LabelError',
      message: `"${labeled}" was made from "${join('data', 'downloads', 'data.zip')}", not from "${otherZip}": choose another --data-dir, or remove "${labeled}" to relabel`,
    });
  } finally {
    await server.close();
  }
});

test('run --remote reads a re-zipped archive under another top folder, and names an archive without the dataset', async () => {
  const files = await datasetFiles({ prefix: 'Chest_XRay_224', perClass: { train: 2, test: 1 } });
  const server = await startFileServer({ data: buildZip(files.map((f) => ({ name: f.path, data: f.data }))) });
  try {
    const r = await runPipeline({ source: server.url, remote: true, dataDir: join(tmp, 'rezipped-data'), preset: 'smoke', train: false });
    assert.equal(r.remote?.files, files.length);
    assert.equal(r.cache.index.images.length, 9);
  } finally {
    await server.close();
  }
  const other = await startFileServer({ data: buildZip([{ name: 'photos/cat.jpeg', data: randomBytes(100) }, { name: 'README.txt', data: Buffer.from('no x-rays') }]) });
  try {
    await assert.rejects(runPipeline({ source: other.url, remote: true, dataDir: join(tmp, 'no-dataset-data'), preset: 'smoke', train: false }), {
      name: 'ArchiveError',
      message:
        `the archive "${other.url}" holds no chest X-ray entries (a chest_xray/ folder as in ChestXRay2017.zip and ZhangLabData.zip, ` +
        'or {train,test}/{NORMAL,PNEUMONIA}/ folders; 2 other entries): nothing to relabel; check the URL',
    });
  } finally {
    await other.close();
  }
});

test('defaultPreset: PNEUMOTYPE_PRESET is checked (tiny is smoke), an unknown one refused by name', () => {
  const was = process.env.PNEUMOTYPE_PRESET;
  try {
    process.env.PNEUMOTYPE_PRESET = 'tiny';
    assert.equal(defaultPreset(), 'smoke');
    process.env.PNEUMOTYPE_PRESET = 'bogus';
    assert.throws(() => defaultPreset(), {
      name: 'ConfigError',
      message: 'PNEUMOTYPE_PRESET="bogus" is not one of smoke (or tiny), cpu, gpu: set it to one of them, or unset it',
    });
  } finally {
    if (was === undefined) delete process.env.PNEUMOTYPE_PRESET;
    else process.env.PNEUMOTYPE_PRESET = was;
  }
});
