import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LabelError } from '../lib/errors.js';
import { datasetEntryFilter, parseName, planRelabel } from '../lib/labels.js';

test('parseName reads labels and patient ids from the dataset names', () => {
  assert.deepEqual(parseName('PNEUMONIA', 'person1000_bacteria_2931.jpeg'), { patientId: 'person1000', patientParsed: true, label: 'bacteria' });
  assert.deepEqual(parseName('PNEUMONIA', 'person1000_virus_1681.jpeg'), { patientId: 'person1000', patientParsed: true, label: 'virus' });
  assert.deepEqual(parseName('PNEUMONIA', 'person447_virus_921_1.jpeg'), { patientId: 'person447', patientParsed: true, label: 'virus' });
  assert.deepEqual(parseName('NORMAL', 'IM-0115-0001.jpeg'), { label: 'normal', patientId: 'IM-0115', patientParsed: true });
  assert.deepEqual(parseName('NORMAL', 'NORMAL2-IM-0927-0001.jpeg'), { label: 'normal', patientId: 'NORMAL2-IM-0927', patientParsed: true });
  assert.deepEqual(parseName('NORMAL', 'scan 7.png'), { label: 'normal', patientId: 'scan 7', patientParsed: false });
  assert.equal(parseName('PNEUMONIA', 'person5_1.jpeg').problem, 'names neither bacteria nor virus; expected personN_bacteria_M or personN_virus_M');
  assert.equal(parseName('PNEUMONIA', 'person5_bacteria_virus_1.jpeg').problem, 'names both bacteria and virus');
  // One child, whatever the case of the name or the folder it is in; the label from whole words of the name.
  assert.deepEqual(parseName('PNEUMONIA', 'PERSON31_BACTERIA_9.JPG'), { patientId: 'person31', patientParsed: true, label: 'bacteria' });
  assert.deepEqual(parseName('NORMAL', 'person31_normal_1.jpeg'), { label: 'normal', patientId: 'person31', patientParsed: true });
  assert.deepEqual(parseName('NORMAL', 'im-0115-0002.jpeg'), { label: 'normal', patientId: 'IM-0115', patientParsed: true });
  assert.deepEqual(parseName('PNEUMONIA', 'bacteria_1.jpeg'), { patientId: 'bacteria_1', patientParsed: false, label: 'bacteria' });
  assert.deepEqual(parseName('PNEUMONIA', 'child 4 - virus (2).png'), { patientId: 'child 4', patientParsed: false, label: 'virus' });
  assert.equal(parseName('PNEUMONIA', 'person5_bacterial_1.jpeg').label, undefined, 'whole words only');
});

const files = [
  'chest_xray/train/NORMAL/IM-0115-0001.jpeg',
  'chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg',
  'chest_xray/train/PNEUMONIA/person1_virus_2.jpeg',
  'chest_xray/test/NORMAL/NORMAL2-IM-0001-0001.jpeg',
  'chest_xray/val/PNEUMONIA/person9_virus_3.jpeg',
  'chest_xray/.DS_Store',
  '__MACOSX/chest_xray/train/NORMAL/._IM-0115-0001.jpeg',
  'chest_xray/README.txt',
];

test('planRelabel maps the layout to split/label/name and reports junk and ignored files', () => {
  const plan = planRelabel({ files, source: 'fixture.zip' });
  assert.equal(plan.root, 'chest_xray');
  assert.deepEqual(plan.images.map((i) => i.dest), [
    'test/normal/NORMAL2-IM-0001-0001.jpeg',
    'train/bacteria/person1_bacteria_1.jpeg',
    'train/normal/IM-0115-0001.jpeg',
    'train/virus/person1_virus_2.jpeg',
    'val/virus/person9_virus_3.jpeg',
  ]);
  assert.deepEqual(plan.junk, ['chest_xray/.DS_Store', '__MACOSX/chest_xray/train/NORMAL/._IM-0115-0001.jpeg']);
  assert.deepEqual(plan.ignored, [{ source: 'chest_xray/README.txt', reason: 'outside the {train,test,val}/{NORMAL,PNEUMONIA}/ layout' }]);
});

test('split and class folders are read in any case (Train/Normal, TEST/pneumonia), as the README says', () => {
  const plan = planRelabel({
    files: ['chest_xray/Train/Normal/IM-0115-0001.jpeg', 'chest_xray/TEST/pneumonia/person1_virus_2.jpeg', 'chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg'],
    source: 'mixed-case.zip',
  });
  assert.deepEqual(plan.images.map((i) => [i.source, i.dest]), [
    ['chest_xray/TEST/pneumonia/person1_virus_2.jpeg', 'test/virus/person1_virus_2.jpeg'],
    ['chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg', 'train/bacteria/person1_bacteria_1.jpeg'],
    ['chest_xray/Train/Normal/IM-0115-0001.jpeg', 'train/normal/IM-0115-0001.jpeg'],
  ]);
  assert.deepEqual(plan.ignored, []);
});

test('folders named like the properties of an object (constructor, __proto__) are no splits: left alone, no crash', () => {
  const plan = planRelabel({ files: [...files, 'chest_xray/constructor/NORMAL/IM-0002-0001.jpeg', 'chest_xray/__proto__/PNEUMONIA/person2_virus_1.jpeg'], source: 'fixture.zip' });
  assert.equal(plan.images.length, 5);
  assert.deepEqual(plan.ignored.map((i) => i.source).sort(), ['chest_xray/README.txt', 'chest_xray/__proto__/PNEUMONIA/person2_virus_1.jpeg', 'chest_xray/constructor/NORMAL/IM-0002-0001.jpeg']);
  assert.equal(datasetEntryFilter('x/__proto__/NORMAL/a.jpeg'), false);
  assert.equal(datasetEntryFilter('x/toString/NORMAL/a.jpeg'), false);
});

test('planRelabel uses the largest copy when the archive nests a second one (Kaggle)', () => {
  const plan = planRelabel({ files: [...files, 'chest_xray/chest_xray/train/NORMAL/IM-0115-0001.jpeg'], source: 'kaggle.zip' });
  assert.equal(plan.root, 'chest_xray');
  assert.deepEqual(plan.ignored.at(-1), {
    source: 'chest_xray/chest_xray/train/NORMAL/IM-0115-0001.jpeg',
    reason: 'another copy of the dataset (root "chest_xray/chest_xray"; using "chest_xray")',
  });
});

test('planRelabel leaves v3\'s OCT scans alone, though they outnumber the chest X-rays', () => {
  const oct = ['CellData/OCT/train/NORMAL/NORMAL-1-1.jpeg', 'CellData/OCT/test/NORMAL/NORMAL-2-1.jpeg', 'CellData/oct/train/NORMAL/NORMAL-3-1.jpeg'];
  const chest = ['CellData/chest_xray/test/PNEUMONIA/person1_virus_6.jpeg', 'CellData/chest_xray/test/NORMAL/IM-0001-0001.jpeg'];
  const plan = planRelabel({ files: [...chest, ...oct], source: 'ZhangLabData' });
  assert.equal(plan.root, 'CellData/chest_xray');
  assert.deepEqual(plan.images.map((i) => i.dest), ['test/normal/IM-0001-0001.jpeg', 'test/virus/person1_virus_6.jpeg']);
  assert.deepEqual(plan.ignored, oct.map((source) => ({ source, reason: 'an OCT scan (ZhangLabData\'s OCT/ half), not a chest X-ray' })));
});

test('planRelabel lists every unlabelled pneumonia name, or sets them aside with allowUnknown', () => {
  const bad = [...files, 'chest_xray/train/PNEUMONIA/person2_3.jpeg', 'chest_xray/test/PNEUMONIA/person4_bacteria_virus_5.jpeg'];
  assert.throws(
    () => planRelabel({ files: bad, source: 'fixture.zip' }),
    (err: unknown) => {
      assert.ok(err instanceof LabelError);
      assert.equal(
        err.message,
        '2 file(s) under PNEUMONIA/ in "fixture.zip" carry no single label (expected _bacteria_ or _virus_ in the name); ' +
          'use --allow-unknown to set them aside in rejected/:\n' +
          '  chest_xray/train/PNEUMONIA/person2_3.jpeg (names neither bacteria nor virus; expected personN_bacteria_M or personN_virus_M)\n' +
          '  chest_xray/test/PNEUMONIA/person4_bacteria_virus_5.jpeg (names both bacteria and virus)',
      );
      assert.deepEqual(err.files, ['chest_xray/train/PNEUMONIA/person2_3.jpeg', 'chest_xray/test/PNEUMONIA/person4_bacteria_virus_5.jpeg']);
      return true;
    },
  );
  const plan = planRelabel({ files: bad, source: 'fixture.zip', allowUnknown: true });
  assert.deepEqual(plan.rejected.map((r) => r.dest), ['rejected/train/person2_3.jpeg', 'rejected/test/person4_bacteria_virus_5.jpeg']);
  assert.equal(plan.images.length, 5);
});

test('planRelabel refuses a source without the dataset layout', () => {
  assert.throws(() => planRelabel({ files: ['a/b.jpeg', 'c.txt'], source: 'elsewhere' }), {
    name: 'LabelError',
    message:
      'no train/ or test/ folders with NORMAL/ and PNEUMONIA/ inside were found in "elsewhere" (2 files looked at): ' +
      'expected the ChestXRay2017 layout chest_xray/{train,test}/{NORMAL,PNEUMONIA}/',
  });
});

test('planRelabel refuses a relabelled folder, and a layout without NORMAL/ or without PNEUMONIA/', () => {
  // relabel's own output: normal/ reads as NORMAL/ (any case), bacteria/ and virus/ fit no class folder.
  const labelled = ['manifest.csv', 'summary.json', 'train/normal/IM-0115-0001.jpeg', 'train/bacteria/person1_bacteria_1.jpeg', 'test/virus/person9_virus_3.jpeg'];
  const already = (signs: string): string =>
    `"data/labeled" is already relabelled (it holds ${signs}): expected the original layout {train,test}/{NORMAL,PNEUMONIA}/; ` +
    'relabel the downloaded archive or its extracted folder instead, or use this folder as the labelled dataset as it is';
  assert.throws(() => planRelabel({ files: labelled, source: 'data/labeled' }), {
    name: 'LabelError',
    message: already('{split}/{normal,bacteria,virus}/ folders and a manifest.csv'),
  });
  assert.throws(() => planRelabel({ files: labelled.slice(2), source: 'data/labeled' }), { name: 'LabelError', message: already('{split}/{normal,bacteria,virus}/ folders') });
  assert.throws(() => planRelabel({ files: ['manifest.csv', 'train/normal/IM-0115-0001.jpeg'], source: 'data/labeled' }), { name: 'LabelError', message: already('a manifest.csv') });
  // Without normal images at all: no folder fits the layout, still named for what it is.
  assert.throws(() => planRelabel({ files: ['train/virus/person9_virus_3.jpeg'], source: 'data/labeled' }), { name: 'LabelError', message: already('{split}/{normal,bacteria,virus}/ folders') });

  const expected = 'expected both NORMAL/ and PNEUMONIA/ in {train,test}/, as in the ChestXRay2017 layout chest_xray/{train,test}/{NORMAL,PNEUMONIA}/';
  const normalOnly = files.filter((f) => !f.includes('/PNEUMONIA/'));
  assert.throws(() => planRelabel({ files: normalOnly, source: 'half.zip' }), {
    name: 'LabelError',
    message: `"half.zip" has NORMAL/ folders but no PNEUMONIA/ folder in "chest_xray": ${expected}`,
  });
  assert.throws(() => planRelabel({ files: ['train/PNEUMONIA/person1_virus_2.jpeg'], source: 'half' }), {
    name: 'LabelError',
    message: `"half" has PNEUMONIA/ folders but no NORMAL/ folder: ${expected}`,
  });
});

test('OCT/ is v3\'s OCT half only where ZhangLabData has it; elsewhere an ordinary folder, and the refusal counts what was set aside', () => {
  // A folder of October scans: the dataset, not OCT.
  const october = ['scans/Oct/train/NORMAL/IM-0001-0001.jpeg', 'scans/Oct/train/PNEUMONIA/person1_virus_6.jpeg'];
  assert.deepEqual(october.map(datasetEntryFilter), [true, true]);
  const plan = planRelabel({ files: october, source: '/home/me/xray-2024' });
  assert.equal(plan.root, 'scans/Oct');
  assert.deepEqual(plan.images.map((i) => i.dest), ['train/normal/IM-0001-0001.jpeg', 'train/virus/person1_virus_6.jpeg']);
  // Where v3 has it: in CellData/, at the top, beside a chest_xray/ folder (only a whole listing shows that).
  assert.deepEqual(['ZhangLabData/CellData/OCT/train/NORMAL/NORMAL-1-1.jpeg', 'OCT/test/NORMAL/NORMAL-2-1.jpeg'].map(datasetEntryFilter), [false, false]);
  const beside = planRelabel({ files: ['v3/OCT/train/NORMAL/NORMAL-1-1.jpeg', 'v3/chest_xray/train/NORMAL/IM-0001-0001.jpeg', 'v3/chest_xray/train/PNEUMONIA/person1_virus_6.jpeg'], source: 'v3' });
  assert.deepEqual(beside.ignored, [{ source: 'v3/OCT/train/NORMAL/NORMAL-1-1.jpeg', reason: 'an OCT scan (ZhangLabData\'s OCT/ half), not a chest X-ray' }]);
  assert.throws(() => planRelabel({ files: ['CellData/OCT/train/NORMAL/NORMAL-1-1.jpeg', 'CellData/OCT/test/NORMAL/NORMAL-2-1.jpeg', 'notes.txt'], source: 'oct.zip' }), {
    name: 'LabelError',
    message:
      'no train/ or test/ folders with NORMAL/ and PNEUMONIA/ inside were found in "oct.zip" (3 files looked at; 2 of them set aside as OCT scans, ' +
      'being in an OCT/ folder where ZhangLabData has its OCT half: at the top, in CellData/ or beside chest_xray/): ' +
      'expected the ChestXRay2017 layout chest_xray/{train,test}/{NORMAL,PNEUMONIA}/',
  });
});
