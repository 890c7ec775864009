// Evaluate and predict with a model trained on the fixture: every field of the report, CSV, layouts, bad images.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, cp, link, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import AdmZip from 'adm-zip';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import { evaluateModel, evaluationEntryFilter, evaluationSummary, loadModel, metricsByGroup, predict, splitCaveats } from '../lib/evaluate.js';
import { relabel } from '../lib/relabel.js';
import { loadTf } from '../lib/tf.js';
import { historyIsOfCard, type EpochRecord, type ModelCard } from '../lib/train.js';
import { datasetFiles } from './helpers/fixtures.js';
import { trainFixtureModel } from './helpers/fixture-model.js';

let tmp: string;
let labeled: string;
let modelDir: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-evaluate-'));
  ({ labeled, modelDir } = await trainFixtureModel(tmp, { train: 12, test: 4 }));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('evaluate prints every field, with patient-bootstrap intervals, and writes the predictions CSV', async () => {
  const tf = loadTf();
  const before = tf.memory().numTensors;
  const r = await evaluateModel({ model: modelDir, data: labeled, split: 'test', bootstrap: 200, out: join(tmp, 'eval.json'), predictions: join(tmp, 'pred.csv') });
  assert.equal(tf.memory().numTensors, before);
  assert.deepEqual(Object.keys(r), ['split', 'model', 'weightsSha256', 'data', 'imagesDir', 'n', 'accuracy', 'balancedAccuracy', 'macroF1', 'perClass', 'confusion', 'auc', 'binary', 'calibration', 'bootstrap', 'failed']);
  assert.equal(r.n, 12);
  assert.equal(r.imagesDir, labeled);
  assert.equal(r.weightsSha256, createHash('sha256').update(await readFile(join(modelDir, 'weights.bin'))).digest('hex'));
  // A relative --data: the images' folder is saved absolute, so a report made from another folder finds them.
  const relativeData = relative(process.cwd(), labeled);
  const rel = await evaluateModel({ model: modelDir, data: relativeData, split: 'test', bootstrap: 0 });
  assert.deepEqual([rel.data, rel.imagesDir], [relativeData, labeled]);
  for (const c of ['normal', 'bacteria', 'virus'] as const) {
    assert.deepEqual(Object.keys(r.perClass[c]), ['precision', 'recall', 'f1', 'support']);
    assert.equal(r.perClass[c].support, 4);
  }
  // Four normal patients, but two of bacteria and two of virus: a resample lacks either about one time in ten, too
  // often for an interval (MIN_DEFINED_SHARE), so their AUCs have none.
  assert.ok(r.auc.normal.low <= r.auc.normal.value && r.auc.normal.value <= r.auc.normal.high);
  assert.deepEqual([r.auc.virus.low, r.auc.virus.high, r.auc.bacteria.low, r.auc.bacteria.high], [NaN, NaN, NaN, NaN]);
  assert.deepEqual(Object.keys(r.binary), ['normalVsPneumonia', 'bacteriaVsVirus']);
  assert.deepEqual(Object.keys(r.binary.normalVsPneumonia), ['accuracy', 'sensitivity', 'specificity', 'auc', 'n']);
  assert.equal(r.binary.bacteriaVsVirus.n, 8);
  assert.equal(r.confusion.flat().reduce((a, b) => a + b, 0), 12);
  assert.deepEqual(r.bootstrap, { resamples: 200, seed: 42, confidence: 0.95, unit: 'patient', minDefinedShare: 0.95 });
  assert.deepEqual(JSON.parse(await readFile(join(tmp, 'eval.json'), 'utf8')).n, 12);
  const csv = (await readFile(join(tmp, 'pred.csv'), 'utf8')).trim().split('\n');
  assert.equal(csv[0], 'file,patientId,trueLabel,predictedLabel,normal,bacteria,virus');
  assert.equal(csv.length, 13);
});

test('evaluate the validation split (re-carved from the manifest) and folders without a manifest', async () => {
  const val = await evaluateModel({ model: modelDir, data: labeled, split: 'val', bootstrap: 0 });
  assert.ok(val.n > 0 && val.n < 36);
  // The split chose the model's epoch: said in the JSON and in the summary line; the test split says nothing of it.
  const card = JSON.parse(await readFile(join(modelDir, 'pneumotype.json'), 'utf8')) as ModelCard;
  const { training } = card;
  assert.ok(training.epochs > 1);
  assert.deepEqual(val.caveats, [
    `the validation split chose this model's epoch (${training.epoch} of ${training.epochs}, the best validation macro-F1), so its scores are optimistic; ` +
      'an untouched test split is the unbiased measure',
  ]);
  assert.match(evaluationSummary(val), /^val: accuracy \d\.\d{3}, macro-F1 \d\.\d{3}, optimistic: the model was tuned on this split$/);
  // A folder with only test/{normal,bacteria,virus}/, as a user might lay out new images.
  const plain = join(tmp, 'plain');
  await cp(join(labeled, 'test'), join(plain, 'test'), { recursive: true });
  assert.equal((await evaluateModel({ model: modelDir, data: plain, bootstrap: 0 })).n, 12);
  // The raw archive layout (NORMAL/PNEUMONIA), never relabelled.
  assert.equal((await evaluateModel({ model: modelDir, data: join(tmp, 'src'), bootstrap: 0 })).n, 12);
  // The default folder, missing: most likely never made, and said so.
  const cwd = process.cwd();
  process.chdir(tmp);
  try {
    await assert.rejects(evaluateModel({ model: modelDir, bootstrap: 0 }), {
      name: 'ConfigError',
      message: /^--data "data\/labeled" does not exist \(the default, where relabel and run write the labelled dataset: relabel first, or give --data\): expected a labelled folder/,
    });
  } finally {
    process.chdir(cwd);
  }
  await assert.rejects(evaluateModel({ model: modelDir, data: plain, split: 'val' }), {
    name: 'ConfigError',
    message: `--split val needs the manifest.csv that relabel writes, and "${join(plain, 'manifest.csv')}" is missing`,
  });
  await assert.rejects(evaluateModel({ model: join(tmp, 'nowhere'), data: labeled }), {
    name: 'CacheError',
    message: `the model folder "${join(tmp, 'nowhere')}" does not exist: expected a folder that pneumotype train wrote (pneumotype.json, model.json, weights.bin)`,
  });
  await assert.rejects(evaluateModel({ model: plain, data: labeled }), {
    name: 'CacheError',
    message: `"${plain}" is not a pneumotype model folder: "${join(plain, 'pneumotype.json')}" is missing (train one with \`pneumotype train\`)`,
  });
});

test('splitCaveats: the epoch chosen on the validation split, a temperature fitted on the scored split', () => {
  const figures = { ece: 0.1, brier: 0.3, logLoss: 0.5 };
  const card = {
    training: { epoch: 58, epochs: 60 },
    calibration: { temperature: 1.3877, split: 'val', images: 523, before: figures, after: figures, crossFitted: { ...figures, ece: 0.026 } },
  } as unknown as ModelCard;
  const temperature = 'the temperature (1.388) was fitted on these 523 images, so their calibration figures may be optimistic (cross-fitted by patient, the unbiased measure: expected calibration error 0.026, Brier score 0.300, log loss 0.500)';
  assert.equal(splitCaveats(card, 'val').length, 2);
  assert.equal(splitCaveats(card, 'val')[1], temperature);
  assert.deepEqual(splitCaveats(card, 'test'), []);
  // One epoch chose nothing; a temperature fitted on the test split makes the test figures optimistic too.
  const once = { ...card, training: { epoch: 1, epochs: 1 }, calibration: { ...card.calibration, split: 'test' } } as unknown as ModelCard;
  assert.deepEqual(splitCaveats(once, 'val'), []);
  assert.deepEqual(splitCaveats(once, 'test'), [temperature]);
});

test('evaluate reads the test split alone, a zip (train/ never extracted), and names what it expected', async () => {
  // The test split extracted on its own: NORMAL/ and PNEUMONIA/ at the top, or the three label folders.
  const alone = join(tmp, 'alone');
  await cp(join(tmp, 'src', 'chest_xray', 'test'), alone, { recursive: true });
  assert.equal((await evaluateModel({ model: modelDir, data: alone, bootstrap: 0 })).n, 12);
  const labels = join(tmp, 'labels-alone');
  await cp(join(labeled, 'test'), labels, { recursive: true });
  assert.equal((await evaluateModel({ model: modelDir, data: labels, bootstrap: 0 })).n, 12);
  // The archive itself: only its test entries are extracted, to extractedDir.
  const zip = new AdmZip();
  for (const f of await datasetFiles({ perClass: { train: 12, test: 4 } })) zip.addFile(f.path, f.data);
  const archive = join(tmp, 'ChestXRay2017.zip');
  await writeFile(archive, zip.toBuffer());
  const extracted = join(tmp, 'extracted');
  const r = await evaluateModel({ model: modelDir, data: archive, bootstrap: 0, extractedDir: extracted });
  assert.equal(r.n, 12);
  // The paths of the predictions and of "failed" are relative to the extraction folder, which the result names.
  assert.deepEqual([r.data, r.imagesDir], [archive, extracted]);
  assert.deepEqual(await readdir(join(extracted, 'chest_xray')), ['test']);
  assert.equal(evaluationEntryFilter('CellData/OCT/test/CNV/x.jpeg'), false);
  assert.equal(evaluationEntryFilter('CellData/chest_xray/test/NORMAL/x.jpeg'), true);
  assert.equal(evaluationEntryFilter('OCT/test/NORMAL/x.jpeg'), false, "v3's CellData zipped again");
  assert.equal(evaluationEntryFilter('scans/Oct/test/NORMAL/IM-0001-0001.jpeg'), true, 'a folder named Oct elsewhere is no OCT half');
  assert.equal(evaluationEntryFilter('chest_xray/train/NORMAL/x.jpeg'), false);
  const expected =
    'expected a labelled folder (manifest.csv from pneumotype relabel), a folder with test/{normal,bacteria,virus}/, ' +
    'an archive layout chest_xray/test/{NORMAL,PNEUMONIA}/ or its zip, or one split\'s own NORMAL/ and PNEUMONIA/ ' +
    '(or normal/, bacteria/, virus/) folders';
  const nowhere = join(tmp, 'nowhere');
  await assert.rejects(evaluateModel({ model: modelDir, data: nowhere }), { name: 'ConfigError', message: `--data "${nowhere}" does not exist: ${expected}` });
  const trainOnly = join(tmp, 'train-only');
  await cp(join(tmp, 'src', 'chest_xray', 'train'), join(trainOnly, 'chest_xray', 'train'), { recursive: true });
  await assert.rejects(evaluateModel({ model: modelDir, data: trainOnly }), { name: 'ConfigError', message: `no test images found in "${trainOnly}": ${expected}` });
});

test('evaluate scores every test image whatever the folders\' case, links, junk or v3\'s OCT half, or says which it cannot', async () => {
  const score = async (data: string): Promise<number[][]> => (await evaluateModel({ model: modelDir, data, bootstrap: 0 })).confusion;
  const all = await score(labeled);
  const copy = async (name: string, from: string, to: string): Promise<string> => {
    await cp(join(tmp, from), join(tmp, name, to), { recursive: true });
    return join(tmp, name);
  };
  // Class and split folders in another case than the archive's or relabel's.
  const upper = await copy('upper', 'labeled/test/normal', 'Test/NORMAL');
  await cp(join(labeled, 'test', 'bacteria'), join(upper, 'Test', 'Bacteria'), { recursive: true });
  await cp(join(labeled, 'test', 'virus'), join(upper, 'Test', 'VIRUS'), { recursive: true });
  assert.deepEqual(await score(upper), all);
  const lower = await copy('lower', 'src/chest_xray/test/NORMAL', 'test/normal');
  await cp(join(tmp, 'src', 'chest_xray', 'test', 'PNEUMONIA'), join(lower, 'test', 'pneumonia'), { recursive: true });
  assert.deepEqual(await score(lower), all);
  // A class folder that is a symbolic link, and macOS's junk beside the images.
  const linked = await copy('linked', 'src/chest_xray/test/PNEUMONIA', 'chest_xray/test/PNEUMONIA');
  await symlink(join(tmp, 'src', 'chest_xray', 'test', 'NORMAL'), join(linked, 'chest_xray', 'test', 'NORMAL'));
  await writeFile(join(linked, 'chest_xray', 'test', 'PNEUMONIA', '.DS_Store'), 'Bud1');
  await mkdir(join(linked, '__MACOSX', 'chest_xray', 'test', 'NORMAL'), { recursive: true });
  await writeFile(join(linked, '__MACOSX', 'chest_xray', 'test', 'NORMAL', '._IM-0001-0001.jpeg'), 'Mac OS X');
  const junk = await copy('junk', 'labeled/test', 'test');
  await writeFile(join(junk, 'test', 'virus', '.DS_Store'), 'Bud1');
  assert.deepEqual(await score(linked), all);
  assert.deepEqual(await score(junk), all);
  // v3 unzipped: CellData/OCT/{train,test}/NORMAL/ fits the layout too and outnumbers the chest X-rays.
  const v3 = await copy('v3', 'src/chest_xray', 'CellData/chest_xray');
  await cp(join(tmp, 'src', 'chest_xray', 'train'), join(v3, 'CellData', 'OCT', 'train'), { recursive: true });
  await cp(join(tmp, 'src', 'chest_xray', 'test', 'NORMAL'), join(v3, 'CellData', 'OCT', 'test', 'NORMAL'), { recursive: true });
  assert.deepEqual(await score(v3), all);

  // What cannot be scored is an error, never a smaller n.
  const odd = await copy('odd', 'src/chest_xray/test', 'test');
  await mkdir(join(odd, 'test', 'OTHER'));
  await writeFile(join(odd, 'test', 'OTHER', 'x.jpeg'), 'any');
  await assert.rejects(evaluateModel({ model: modelDir, data: odd }), {
    name: 'ConfigError',
    message: `1 test image(s) in "${odd}" sit in no class folder: "test/OTHER/x.jpeg"; expected test/{NORMAL,PNEUMONIA}/ or test/{normal,bacteria,virus}/`,
  });
  const mixed = await copy('mixed', 'labeled/test', 'test');
  await cp(join(tmp, 'src', 'chest_xray', 'test', 'PNEUMONIA'), join(mixed, 'test', 'PNEUMONIA'), { recursive: true });
  await assert.rejects(evaluateModel({ model: modelDir, data: mixed }), {
    name: 'ConfigError',
    message: `the test images in "${mixed}" sit in the class folders "PNEUMONIA", "bacteria", "normal", "virus": expected ` +
      'normal/, bacteria/ and virus/ (labelled) or NORMAL/ and PNEUMONIA/ (as in the archive), not a mix',
  });
  const unnamed = await copy('unnamed', 'src/chest_xray/test', '.');
  await writeFile(join(unnamed, 'PNEUMONIA', 'person7_3.jpeg'), await readFile(join(labeled, 'test', 'virus', (await readdir(join(labeled, 'test', 'virus')))[0] ?? '')));
  await assert.rejects(evaluateModel({ model: modelDir, data: unnamed }), {
    name: 'LabelError',
    message: `1 test image(s) under PNEUMONIA/ in "${unnamed}" carry no single label (expected _bacteria_ or _virus_ in the name), ` +
      'so they cannot be scored; rename them or move them out:\n  PNEUMONIA/person7_3.jpeg (names neither bacteria nor virus; expected personN_bacteria_M or personN_virus_M)',
  });
  const archive = join(tmp, 'any.zip');
  await writeFile(archive, 'PK');
  await assert.rejects(evaluateModel({ model: modelDir, data: archive, split: 'val', extractedDir: join(tmp, 'never') }), {
    name: 'ConfigError',
    message: `--split val needs the manifest.csv that relabel writes, and "${archive}" is an archive: relabel it first (pneumotype relabel --from ${archive})`,
  });
  assert.equal(existsSync(join(tmp, 'never')), false);
});

test('an image changed since relabel is left out and named, not scored under its old label', async () => {
  const copy = join(tmp, 'labeled-changed');
  await cp(labeled, copy, { recursive: true });
  const rows = (await readFile(join(copy, 'manifest.csv'), 'utf8')).split('\n');
  const victim = rows.find((r) => r.startsWith('test,virus,'))?.split(',')[2] ?? '';
  const stranger = join(copy, 'test', 'normal', (await readdir(join(copy, 'test', 'normal')))[0] ?? '');
  await rm(join(copy, victim));
  await cp(stranger, join(copy, victim));
  const r = await evaluateModel({ model: modelDir, data: copy, bootstrap: 0 });
  assert.equal(r.n, 11);
  assert.equal(r.failed.length, 1);
  assert.equal(r.failed[0]?.file, victim);
  assert.match(r.failed[0]?.reason ?? '', /^changed since relabel: SHA-256 [0-9a-f]{12}…, manifest\.csv has [0-9a-f]{12}…$/);
});

test('no test image goes unsaid: one relabel could not read, one added since, a dangling link; a labelled folder zipped from outside', async () => {
  // Relabelled with a zero-byte image: its manifest row (width 0) is decoded afresh and named in `failed`.
  const src = join(tmp, 'src-unread');
  await cp(join(tmp, 'src'), src, { recursive: true });
  await writeFile(join(src, 'chest_xray', 'test', 'NORMAL', 'IM-9011-0001.jpeg'), '');
  const out = join(tmp, 'labeled-unread');
  await relabel({ from: src, out });
  // An image put into test/ after relabel, and a link that leads nowhere: scored they are not, but named.
  const virus = join(out, 'test', 'virus');
  await cp(join(virus, (await readdir(virus))[0] ?? ''), join(virus, 'person9999_virus_1.jpeg'));
  await symlink(join(tmp, 'gone.jpeg'), join(out, 'test', 'normal', 'IM-9012-0001.jpeg'));
  const r = await evaluateModel({ model: modelDir, data: out, bootstrap: 0 });
  assert.equal(r.n, 12);
  assert.deepEqual(r.failed.map((f) => f.file), ['test/normal/IM-9011-0001.jpeg']);
  assert.deepEqual(r.warnings, [
    `"${join(out, 'test', 'normal/IM-9012-0001.jpeg')}" was left out: a symbolic link that leads nowhere`,
    `1 image(s) in "${join(out, 'test')}" are not in "${join(out, 'manifest.csv')}" and were not scored: "test/virus/person9999_virus_1.jpeg"; relabel the archive again to include them`,
  ]);
  // Without a manifest, a link that leads nowhere is named too.
  const plain = join(tmp, 'plain-dangling');
  await cp(join(labeled, 'test'), join(plain, 'test'), { recursive: true });
  await symlink(join(tmp, 'gone.jpeg'), join(plain, 'test', 'virus', 'person9998_virus_1.jpeg'));
  await mkdir(join(plain, 'train', 'virus'), { recursive: true }); // never scored: its link is no loss
  await symlink(join(tmp, 'gone.jpeg'), join(plain, 'train', 'virus', 'person9997_virus_1.jpeg'));
  const p = await evaluateModel({ model: modelDir, data: plain, bootstrap: 0 });
  assert.equal(p.n, 12);
  assert.deepEqual(p.warnings, [`"${join(plain, 'test/virus/person9998_virus_1.jpeg')}" was left out: a symbolic link that leads nowhere`]);
  // A labelled folder zipped from outside (`zip -r lab.zip lab`): its test/ one folder down is found.
  const zip = new AdmZip();
  zip.addLocalFolder(labeled, 'lab');
  const archive = join(tmp, 'lab.zip');
  await writeFile(archive, zip.toBuffer());
  const z = await evaluateModel({ model: modelDir, data: archive, bootstrap: 0, extractedDir: join(tmp, 'lab-extracted') });
  assert.equal(z.n, 12);
  assert.deepEqual(z.confusion, (await evaluateModel({ model: modelDir, data: labeled, bootstrap: 0 })).confusion);
  assert.ok(z.failed.length === 0 && z.warnings === undefined);
});

test('a labelled folder of the train split alone points to --split val; a training run points to its model', async () => {
  const trainOnly = join(tmp, 'labeled-train-only');
  await cp(labeled, trainOnly, { recursive: true });
  await rm(join(trainOnly, 'test'), { recursive: true });
  const rows = (await readFile(join(trainOnly, 'manifest.csv'), 'utf8')).split('\n');
  await writeFile(join(trainOnly, 'manifest.csv'), rows.filter((r) => !r.startsWith('test,')).join('\n'));
  await assert.rejects(evaluateModel({ model: modelDir, data: trainOnly, bootstrap: 0 }), {
    name: 'ConfigError',
    message: `"${trainOnly}" holds no test images: its manifest.csv lists no test split. Score the validation split carved from it (--split val), ` +
      'or give the test split with --data (its archive, the extracted folder, or a folder with test/{normal,bacteria,virus}/)',
  });
  assert.ok((await evaluateModel({ model: modelDir, data: trainOnly, split: 'val', bootstrap: 0 })).n > 0);
  // The other way round: a labelled folder without train images has no validation split, whatever val/ it holds.
  const testOnly = join(tmp, 'labeled-test-only');
  await cp(labeled, testOnly, { recursive: true });
  await writeFile(join(testOnly, 'manifest.csv'), rows.filter((r) => !r.startsWith('train,')).join('\n'));
  await assert.rejects(evaluateModel({ model: modelDir, data: testOnly, split: 'val', bootstrap: 0 }), {
    name: 'ConfigError',
    message: `no val images found in "${testOnly}": the validation split is carved by patient from its train split, as the model was trained ` +
      "(a val/ folder, as in Kaggle's copy, is not it)",
  });
  const runDir = join(tmp, 'run');
  await assert.rejects(loadModel(runDir), { name: 'CacheError', message: `"${runDir}" is a training run, not a model folder: its model is "${join(runDir, 'model')}"` });
});

test('evaluate refuses an output path it could not write before it scores any image', async () => {
  const folder = join(tmp, 'an-output-folder');
  await mkdir(folder, { recursive: true });
  const file = join(tmp, 'an-output-file');
  await writeFile(file, 'x');
  let progressed = 0;
  const onProgress = (): void => void progressed++;
  await assert.rejects(evaluateModel({ model: modelDir, data: labeled, bootstrap: 0, out: folder, onProgress }), {
    name: 'OutputError',
    message: `"${folder}" is a folder: expected the path of a file to write`,
  });
  await assert.rejects(evaluateModel({ model: modelDir, data: labeled, bootstrap: 0, predictions: join(file, 'p.csv'), onProgress }), {
    name: 'OutputError',
    message: `"${join(file, 'p.csv')}" cannot be written: "${file}" is a file, not a folder`,
  });
  assert.equal(progressed, 0);
});

/**
 * A folder this process cannot create anything in: a fresh one made read-only, or, for root (who writes anywhere),
 * /sys, where even root may not make folders; undefined when neither holds here.
 */
async function unwritableFolder(parent: string): Promise<{ dir: string; restore: () => Promise<void> } | undefined> {
  if (process.getuid?.() !== 0) {
    const dir = join(parent, 'read-only');
    await mkdir(dir);
    await chmod(dir, 0o555);
    return { dir, restore: () => chmod(dir, 0o755) };
  }
  const probe = join('/sys', 'pneumotype-probe');
  const refused = await mkdir(probe).then(
    async () => {
      await rm(probe, { recursive: true });
      return false;
    },
    (err: unknown) => ['EACCES', 'EPERM', 'EROFS'].includes(String((err as { code?: unknown }).code)),
  );
  return refused ? { dir: '/sys', restore: async () => {} } : undefined;
}

test('a zip cannot be extracted where the working directory is read-only: the error says where else', async (t) => {
  const ro = await unwritableFolder(tmp);
  if (!ro) return t.skip('no folder here refuses this process a new folder');
  const zip = new AdmZip();
  for (const f of await datasetFiles({ perClass: { train: 0, test: 2 } })) zip.addFile(f.path, f.data);
  const archive = join(tmp, 'small.zip');
  await writeFile(archive, zip.toBuffer());
  try {
    const target = join(ro.dir, 'pneumotype-data', 'extracted');
    await assert.rejects(evaluateModel({ model: modelDir, data: archive, bootstrap: 0, extractedDir: target }), (err: unknown) => {
      assert.ok(err instanceof Error && err.name === 'ConfigError', String(err));
      assert.match(err.message, new RegExp(`^"${archive.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}" cannot be extracted into "${target.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}" \\((EACCES|EPERM|EROFS): .*\\): give --extracted \\(extractedDir\\) a folder whose parent you can write to$`));
      return true;
    });
  } finally {
    await ro.restore();
  }
});

test('predict gives a label and three probabilities per image, and an error line for a bad one', async () => {
  const m = await loadModel(modelDir);
  try {
    await mkdir(join(tmp, 'bad'), { recursive: true });
    await writeFile(join(tmp, 'bad', 'note.jpeg'), 'not an image');
    const good = join(labeled, 'test', 'normal');
    const first = join(good, (await readdir(good))[0] ?? '');
    const out = await predict(m, [first, join(tmp, 'bad', 'note.jpeg'), { name: 'upload', data: await readFile(first) }]);
    assert.equal(out.length, 3);
    const [a, b, c] = out;
    assert.ok(a && 'label' in a && c && 'label' in c);
    assert.deepEqual(Object.keys(a.probabilities), ['normal', 'bacteria', 'virus']);
    assert.ok(Math.abs(a.probabilities.normal + a.probabilities.bacteria + a.probabilities.virus - 1) < 1e-5);
    assert.deepEqual(a.probabilities, c.probabilities);
    assert.ok(b && 'error' in b);
    assert.equal(b.error, `"${join(tmp, 'bad', 'note.jpeg')}": not a decodable image (unsupported or unrecognised format)`);
    // A long list goes in chunks of 256 decoded images; the results keep the inputs' order.
    const upload = { name: 'upload', data: await readFile(first) };
    const bad = { name: 'bad', data: Buffer.from('not an image') };
    // Each input's bytes are read through a getter, and the model's passes are counted: the first pass comes after
    // exactly the first chunk's 256 inputs were read, not all 600.
    let read = 0;
    const readBeforePass: number[] = [];
    const counted = (input: { name: string; data: Buffer }): { name: string; data: Buffer } => ({
      name: input.name,
      get data() {
        read += 1;
        return input.data;
      },
    });
    const modelPredict = m.model.predict.bind(m.model);
    m.model.predict = (...args: Parameters<typeof modelPredict>) => {
      readBeforePass.push(read);
      return modelPredict(...args);
    };
    const many = await predict(m, Array.from({ length: 600 }, (_, i) => counted(i % 7 === 3 ? bad : upload)), { batchSize: 256 });
    m.model.predict = modelPredict;
    assert.equal(read, 600);
    assert.deepEqual(readBeforePass, [256, 512, 600]);
    assert.equal(many.length, 600);
    many.forEach((r, i) => assert.equal('error' in r, i % 7 === 3, `result ${i}`));
    const again = many.find((r) => 'label' in r);
    assert.ok(again && 'label' in again && again.label === c.label);
    for (const k of ['normal', 'bacteria', 'virus'] as const) assert.ok(Math.abs(again.probabilities[k] - c.probabilities[k]) < 1e-5, k);
    for (const [batchSize, shown] of [[0, '0'], [-1, '-1'], [Number.NaN, 'NaN'], [2.5, '2.5']] as const) {
      await assert.rejects(predict(m, [first], { batchSize }), { name: 'ConfigError', message: `batchSize ${shown} is not valid: expected an integer of at least 1` });
    }
  } finally {
    m.dispose();
  }
});

test('predict reads a few images at a time: 400 files under a limit of 96 open files give no error line', { skip: process.platform === 'win32' && 'ulimit is a POSIX shell builtin' }, async () => {
  const dir = join(tmp, 'many');
  await mkdir(dir, { recursive: true });
  const good = join(labeled, 'test', 'normal');
  const first = join(good, (await readdir(good))[0] ?? '');
  for (let i = 0; i < 400; i++) await link(first, join(dir, `c${i}.jpeg`));
  const script = join(tmp, 'many.mts');
  await writeFile(
    script,
    `import { loadModel, predict } from ${JSON.stringify(join(process.cwd(), 'lib', 'evaluate.ts'))};\n` +
      `const m = await loadModel(${JSON.stringify(modelDir)});\n` +
      `const files = Array.from({ length: 400 }, (_, i) => ${JSON.stringify(dir)} + '/c' + i + '.jpeg');\n` +
      `const out = await predict(m, files, process.argv[2] ? { concurrency: Number(process.argv[2]) } : {});\n` +
      "console.log(JSON.stringify(out.filter((r) => 'error' in r).map((r) => r.error)));\n",
  );
  const run = (concurrency: string): string[] => {
    const r = spawnSync('bash', ['-c', `ulimit -n 96 && exec "$0" --import tsx "$1" ${concurrency}`, process.execPath, script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '') as string[];
  };
  assert.deepEqual(run(''), []);
  // All at once, as predict did before: the same files fail for want of file descriptors.
  assert.match(run('400')[0] ?? '', /cannot be read \(EMFILE: too many open files/);
});

test('a damaged model card is a CacheError naming it, not a crash', async () => {
  const card = JSON.parse(await readFile(join(modelDir, 'pneumotype.json'), 'utf8')) as Record<string, unknown>;
  const cases: Array<[string, string]> = [
    ['{not json', 'cannot be read as JSON (Expected property name or \'}\' in JSON at position 1): the model folder is damaged; train or copy it again'],
    ['null', 'is not a pneumotype model card for the classes normal, bacteria, virus'],
    [JSON.stringify({ ...card, classes: undefined }), 'is not a pneumotype model card for the classes normal, bacteria, virus'],
    [JSON.stringify({ ...card, classes: 'normal,bacteria,virus' }), 'is not a pneumotype model card for the classes normal, bacteria, virus'],
    [JSON.stringify({ ...card, imageSize: '64' }), 'gives the input size "64": expected a whole number of pixels'],
  ];
  for (const [i, [text, message]] of cases.entries()) {
    const dir = join(tmp, `bad-card-${i}`);
    await cp(modelDir, dir, { recursive: true });
    await writeFile(join(dir, 'pneumotype.json'), text);
    await assert.rejects(loadModel(dir), { name: 'CacheError', message: `${JSON.stringify(join(dir, 'pneumotype.json'))} ${message}` });
  }
});

test('a card that does not fit its network, or that records no training, is named before any image is scored', async () => {
  const card = JSON.parse(await readFile(join(modelDir, 'pneumotype.json'), 'utf8')) as ModelCard;
  const sized = join(tmp, 'card-64');
  await cp(modelDir, sized, { recursive: true });
  await writeFile(join(sized, 'pneumotype.json'), JSON.stringify({ ...card, imageSize: 64 }));
  await assert.rejects(loadModel(sized), {
    name: 'CacheError',
    message: `"${join(sized, 'model.json')}" takes [null,32,32,1] and gives [null,3], but "${join(sized, 'pneumotype.json')}" says [null,64,64,1] and [null,3]: ` +
      'the model folder is mixed up; train or copy it again',
  });
  const bare = join(tmp, 'card-bare');
  await cp(modelDir, bare, { recursive: true });
  await writeFile(join(bare, 'pneumotype.json'), JSON.stringify({ format: card.format, version: card.version, classes: card.classes, imageSize: card.imageSize }));
  assert.equal((await evaluateModel({ model: bare, data: labeled, bootstrap: 0 })).n, 12, 'the test split needs no training record');
  await assert.rejects(evaluateModel({ model: bare, data: labeled, split: 'val' }), {
    name: 'CacheError',
    message: `"${join(bare, 'pneumotype.json')}" records no training configuration (valFraction, seed), so its validation split cannot be carved again: use --split test`,
  });
});

test('a validation split carved from another manifest is scored with a warning; unreadable images only: each named', async () => {
  // Other data: one training image fewer, so another manifest (and maybe other validation patients).
  const other = join(tmp, 'labeled-other');
  await cp(labeled, other, { recursive: true });
  const rows = (await readFile(join(other, 'manifest.csv'), 'utf8')).split('\n');
  const dropped = rows.findIndex((r) => r.startsWith('train,bacteria,'));
  await writeFile(join(other, 'manifest.csv'), rows.filter((_, i) => i !== dropped).join('\n'));
  const r = await evaluateModel({ model: modelDir, data: other, split: 'val', bootstrap: 0 });
  assert.equal(r.warnings?.length, 2);
  assert.match(r.warnings?.[0] ?? '', new RegExp(`^the validation split is carved from "${join(other, 'manifest.csv').replace(/[/.]/g, '\\$&')}" \\(SHA-256 [0-9a-f]{12}…\\), not from the manifest the model was trained on \\([0-9a-f]{12}…\\): unless the same images were only re-encoded, it may hold images the model trained on, and its scores would be too good$`));
  // And it does: the model's thumbnails of its training images know them again, each named.
  const seen = r.seenInTraining ?? [];
  assert.ok(seen.length > 0 && seen.every((f) => f.startsWith('train/')), JSON.stringify(seen));
  assert.equal(r.warnings?.[1], `${seen.length} of the ${r.n} images are the model's own training images, or copies of them (${JSON.stringify(seen[0])}${seen.length > 1 ? `, and ${seen.length - 1} more: listed in "seenInTraining"` : ''}): their scores say little of new images`);
  const own = await evaluateModel({ model: modelDir, data: labeled, split: 'val', bootstrap: 0 });
  assert.deepEqual([own.warnings, own.seenInTraining], [undefined, undefined]);
  // Every test image unreadable: no scores, and the files are named with their reasons. A note beside them is no image.
  const broken = join(tmp, 'broken');
  for (const c of ['normal', 'bacteria', 'virus']) {
    await mkdir(join(broken, 'test', c), { recursive: true });
    await writeFile(join(broken, 'test', c, `${c}-1.jpeg`), 'not a jpeg');
    await writeFile(join(broken, 'test', c, 'readme.txt'), 'notes');
  }
  await assert.rejects(evaluateModel({ model: modelDir, data: broken, bootstrap: 0 }), (err: unknown) => {
    assert.ok(err instanceof Error && err.name === 'ImageError', String(err));
    const lines = err.message.split('\n');
    assert.equal(lines[0], `none of the 3 test image(s) in "${broken}" could be read:`);
    assert.deepEqual(lines.slice(1).map((l) => l.split(':')[0]), ['  test/bacteria/bacteria-1.jpeg', '  test/normal/normal-1.jpeg', '  test/virus/virus-1.jpeg']);
    return true;
  });
});

test('a grouping CSV that cannot be read is refused before any image is scored', async () => {
  const missing = join(tmp, 'no-such-groups.csv');
  await assert.rejects(evaluateModel({ model: join(tmp, 'no-such-model'), data: labeled, groups: { csv: missing, column: 'derived_from' } }), {
    name: 'ConfigError',
    message: new RegExp(`^the grouping CSV "${missing}" cannot be read \\(ENOENT`),
  });
});

test('metrics break down by a grouping CSV keyed by file name', async () => {
  const rows = ['file,derived_from'];
  const { readManifest } = await import('../lib/manifest.js');
  for (const [i, r] of (await readManifest(labeled)).filter((x) => x.split === 'test').entries()) rows.push(`${r.file.split('/').at(-1)},${i % 2 === 0 ? 'full-res' : 'resized'}`);
  await writeFile(join(tmp, 'groups.csv'), `${rows.join('\n')}\n`);
  const r = await evaluateModel({ model: modelDir, data: labeled, bootstrap: 0, groups: { csv: join(tmp, 'groups.csv'), column: 'derived_from' } });
  assert.deepEqual(Object.keys(r.byGroup ?? {}), ['full-res', 'resized']);
  assert.equal((r.byGroup?.['full-res']?.n ?? 0) + (r.byGroup?.resized?.n ?? 0), 12);
  assert.deepEqual(Object.keys(r.byGroup?.resized ?? {}), ['n', 'accuracy', 'balancedAccuracy', 'macroF1', 'recall', 'support', 'bacteriaVsVirusAuc']);
  // Bacteria-versus-virus AUC within each group, by hand: virus shares 0.4 and 0.9 against bacteria 0.2 and 0.6 rank
  // 3 of 4 pairs right; a group without virus images has none.
  await writeFile(join(tmp, 'groups-auc.csv'), 'file,derived_from\nb1.jpeg,one\nb2.jpeg,one\nv1.jpeg,one\nv2.jpeg,one\nn1.jpeg,one\nb3.jpeg,two\n');
  const byGroup = await metricsByGroup(
    [
      { file: 'train/bacteria/b1.jpeg', trueIndex: 1, probs: [0, 0.8, 0.2] },
      { file: 'train/bacteria/b2.jpeg', trueIndex: 1, probs: [0.5, 0.2, 0.3] },
      { file: 'train/virus/v1.jpeg', trueIndex: 2, probs: [0, 0.6, 0.4] },
      { file: 'train/virus/v2.jpeg', trueIndex: 2, probs: [0.8, 0.02, 0.18] },
      { file: 'train/normal/n1.jpeg', trueIndex: 0, probs: [0, 0, 1] },
      { file: 'train/bacteria/b3.jpeg', trueIndex: 1, probs: [0, 1, 0] },
    ],
    { csv: join(tmp, 'groups-auc.csv'), column: 'derived_from' },
  );
  assert.equal(byGroup.one?.bacteriaVsVirusAuc, 0.75);
  assert.equal(byGroup.two?.bacteriaVsVirusAuc, null);
  // A class with no image in the group has no recall (null), not 0.
  assert.deepEqual(byGroup.two?.recall, { normal: null, bacteria: 1, virus: null });
  assert.deepEqual(byGroup.one?.recall, { normal: 0, bacteria: 0.5, virus: 0 });
  await assert.rejects(evaluateModel({ model: modelDir, data: labeled, bootstrap: 0, groups: { csv: join(tmp, 'groups.csv'), column: 'pipeline' } }), {
    name: 'ConfigError',
    message: `"${join(tmp, 'groups.csv')}" has no column "pipeline" (columns: file, derived_from)`,
  });
});

test('the model card renders data, architecture, training, metrics with intervals and limits', async () => {
  const { writeModelCard } = await import('../lib/model-card.js');
  const evaluation = await evaluateModel({ model: modelDir, data: labeled, split: 'val', bootstrap: 50 });
  const out = await writeModelCard({ modelDir, history: join(tmp, 'run', 'history.json'), evaluation, extras: { hardware: 'a test machine' } });
  const text = await readFile(out, 'utf8');
  assert.match(text, /^# pneumotype default model\n/);
  // A history cut short, or no model card: named, with the file.
  await writeFile(join(tmp, 'history-cut.json'), '[{"epoch": 1, "lo');
  await assert.rejects(writeModelCard({ modelDir, history: join(tmp, 'history-cut.json'), evaluation }), (err: unknown) => {
    assert.ok(err instanceof Error && err.name === 'CacheError');
    assert.match(err.message, new RegExp(`^"${join(tmp, 'history-cut.json').replace(/[/.-]/g, '\\$&')}" cannot be read as a run's history \\(.*\\): expected the history.json that train writes$`));
    return true;
  });
  const nowhere = join(tmp, 'nowhere', 'pneumotype.json');
  await assert.rejects(writeModelCard({ modelDir: join(tmp, 'nowhere'), history: join(tmp, 'run', 'history.json'), evaluation }), {
    name: 'CacheError',
    message: `"${nowhere}" cannot be read as a model card (ENOENT: no such file or directory, open '${nowhere}'): the run folder is damaged`,
  });
  assert.match(text, /Research and teaching only\. Not a medical device/);
  assert.match(text, /Grayscale, squashed to 32x32/);
  assert.match(text, /`tiny`, width 8, 24,939 parameters/);
  assert.match(text, /minutes on a test machine\./);
  assert.match(text, /\| accuracy \| \d+\.\d % \[\d+\.\d %, \d+\.\d %\] \|/);
  assert.match(text, /\| calibration: expected calibration error \/ Brier score \/ log loss \| \d+\.\d % \[\d+\.\d %, \d+\.\d %\] \/ \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \/ \d\.\d{3} \[/);
  assert.match(text, /trained\n {2}without augmentation against them/);
  assert.doesNotMatch(text, /The same recipe again/, 'a run with its own epochs and rates has no preset to name');
  // With a preset's recipe, the card names the command that trains it again.
  const { renderModelCard } = await import('../lib/model-card.js');
  const { resolveConfig } = await import('../lib/config.js');
  const card = JSON.parse(await readFile(join(modelDir, 'pneumotype.json'), 'utf8')) as ModelCard;
  const history = JSON.parse(await readFile(join(tmp, 'run', 'history.json'), 'utf8')) as EpochRecord[];
  // The epochs the run went through (from its history), and the one whose weights these are (the card's).
  const minutes = (history.reduce((sum, e) => sum + e.seconds, 0) / 60).toFixed(1);
  assert.ok(text.includes(`\n- ${history.length} of ${card.training.epochs} epochs${history.length < card.training.epochs ? ' (stopped early)' : ''}, ` +
    `the best validation macro-F1 at epoch ${card.training.epoch} (these weights), ${minutes} minutes on a test machine.\n`), text);
  const again = renderModelCard({ ...card, training: { ...card.training, config: resolveConfig('smoke', { augmentWorkers: 2 }) } }, history, evaluation);
  const manifest = card.data.manifestSha256.slice(0, 12);
  assert.ok(again.includes('\n- The same recipe again: `npx pneumotype train --data data/labeled --out runs/NAME --preset smoke --augment none`' +
    `${card.calibration ? ', then `npx pneumotype calibrate --model runs/NAME/model --data data/labeled`' : ''}, on a labelled folder ` +
    `(\`pneumotype relabel\`) whose manifest.csv has SHA-256 ${manifest}… (these data).\n`), again);
  // A history.json of a rerun (other seconds than the card's run): the card's own time to its epoch, not the rerun's.
  const rerun = renderModelCard(card, history.map((e) => ({ ...e, seconds: e.seconds + 100 })), evaluation);
  assert.ok(rerun.includes(`(these weights), ${(card.training.seconds / 60).toFixed(1)} minutes to the chosen epoch on `), rerun);
  assert.ok(historyIsOfCard(history, card.training) && !historyIsOfCard([], card.training));
  assert.match(text, /- The official test split is held out: this project has never scored it \(it is scored independently\)\. The figures\n/);
  assert.doesNotMatch(again, /anti-aliased/);
  // The shipped model's card points to its evaluation saved beside it (scripts/ship-model.ts writes both).
  assert.doesNotMatch(text, /evaluation\.json/);
  assert.ok(renderModelCard(card, history, evaluation, { evaluationSaved: true }).includes('\n\nThese figures, whole and machine-readable, are in ' +
    '`evaluation.json` beside this card (the output of `pneumotype evaluate\n--split val`), with one row per image in `predictions.csv`; ' +
    '`pneumotype report --run` on this folder draws them.\n'));
  const antialiased = renderModelCard({ ...card, model: { ...card.model, name: 'resnet', antialias: true } }, history, evaluation);
  assert.match(antialiased, /\n- `resnet`, width \d+, anti-aliased downsampling \(a fixed binomial blur before each subsampling after the stem\), /);
  assert.doesNotMatch(again, /standardised/);
  const standardized = renderModelCard({ ...card, model: { ...card.model, standardize: true } }, history, evaluation);
  assert.match(standardized, /\n- `tiny`, width \d+, each image standardised over its own pixels first \(zero mean, unit variance\), /);
  assert.match(text, /trained from scratch \(no ImageNet weights\)/);
  const frozen = renderModelCard({ ...card, training: { ...card.training, initFrom: 'models/mobilenet_v2', freeze: true } }, history, evaluation);
  assert.match(frozen, /\n- The pretrained model `models\/mobilenet_v2` with a new 3-class head \(gray input repeated to its channels\),\n {2}24,939 parameters \(24,699 trainable\), \d+\.\d{3} GFLOPs per image: its layers frozen, the head trained\.\n/);
  assert.match(frozen, /; L2 [\d.e-]+ \(on the new head\); /);
  const unknown = renderModelCard({ ...card, model: { ...card.model, summary: { ...card.model.summary, flops: Number.NaN } }, training: { ...card.training, initFrom: 'models/nested', freeze: true } }, history, evaluation);
  assert.match(unknown, /\(24,699 trainable\), unknown FLOPs per image: /);
  assert.doesNotMatch(frozen, /trained from scratch|`tiny`, width/);
  const tuned = renderModelCard({ ...card, training: { ...card.training, initFrom: 'models/mobilenet_v2', freeze: false, initRange: [-1, 1] } }, history, evaluation);
  assert.match(tuned, /\(gray input repeated to its channels, pixels mapped onto \[-1, 1\]\),\n {2}24,939 parameters \(24,699 trainable\), \d+\.\d{3} GFLOPs per image: fine-tuned \(layers the pretrained model marks frozen stay frozen\)\.\n/);
  const whole = renderModelCard({ ...card, training: { ...card.training, initFrom: 'models/mobilenet_v2', freeze: false, unfreeze: true } }, history, evaluation);
  assert.match(whole, /\(gray input repeated to its channels\),\n {2}24,939 parameters \(24,699 trainable\), \d+\.\d{3} GFLOPs per image: fine-tuned whole\.\n/);
  // A group without images of a class has no recall for it: a dash, not 0.0 %.
  const group = { n: 4, accuracy: 0.75, balancedAccuracy: 0.75, macroF1: 0.7, recall: { normal: 1, bacteria: 0, virus: 0.5 }, support: { normal: 2, bacteria: 0, virus: 2 }, bacteriaVsVirusAuc: null };
  const grouped = renderModelCard(card, history, { ...evaluation, byGroup: { '227 copies': group } });
  assert.ok(grouped.includes('| 227 copies | 4 | 75.0 % | 100.0 % (2) / — (0) / 50.0 % (2) | — |'), grouped);
});
