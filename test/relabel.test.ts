import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, symlink, writeFile, mkdir, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import AdmZip from 'adm-zip';
import sharp from 'sharp';
import { LabelError } from '../lib/errors.js';
import { readManifest } from '../lib/manifest.js';
import { relabel } from '../lib/relabel.js';
import { datasetFiles, makeJpeg, writeTree } from './helpers/fixtures.js';
import { withSmallDisk } from './helpers/small-disk.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-relabel-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('relabel links a folder into three classes per split, with manifest, summary and a clean audit', async () => {
  const src = join(tmp, 'a-src');
  const out = join(tmp, 'a-out');
  await writeTree(src, await datasetFiles({ perClass: { train: 4, test: 2, val: 1 }, junk: true, badImages: true }));
  const events: string[] = [];
  const r = await relabel({ from: src, out, onProgress: (p) => events.push(p.stage) });
  assert.equal(r.changed, true);
  const s = r.summary;
  assert.deepEqual(s.counts, {
    train: { normal: 4, bacteria: 6, virus: 5, total: 15 },
    test: { normal: 2, bacteria: 2, virus: 2, total: 6 },
    val: { normal: 1, bacteria: 1, virus: 1, total: 3 },
  });
  assert.deepEqual(s.patients.train, { normal: 4, bacteria: 4, virus: 3, total: 11 });
  assert.equal(s.skipped.junk, 4);
  assert.deepEqual(s.undecodable.map((u) => u.file).sort(), [
    'train/bacteria/person900_bacteria_9001.jpeg',
    'train/bacteria/person901_bacteria_9002.jpeg',
    'train/virus/person902_virus_9003.jpeg',
  ]);
  assert.equal(s.leakage.clean, true);
  assert.equal(s.written.linked + s.written.copied, 24);
  assert.ok(events.includes('relabel'));

  const rows = await readManifest(out);
  assert.equal(rows.length, 24);
  const row = rows.find((x) => x.file === 'train/normal/IM-0100-0001.jpeg');
  assert.deepEqual({ ...row, sha256: row?.sha256.length }, {
    split: 'train', label: 'normal', file: 'train/normal/IM-0100-0001.jpeg', patientId: 'IM-0100',
    bytes: (await stat(join(src, 'chest_xray/train/NORMAL/IM-0100-0001.jpeg'))).size, sha256: 64, width: 40, height: 48, channels: 1,
  });
  // Hard links: same inode as the source, and the source is still there.
  const [a, b] = await Promise.all([stat(join(out, 'train/normal/IM-0100-0001.jpeg')), stat(join(src, 'chest_xray/train/NORMAL/IM-0100-0001.jpeg'))]);
  assert.equal(a.ino, b.ino);
  assert.deepEqual((await readdir(join(out))).sort(), ['manifest.csv', 'summary.json', 'test', 'train', 'val']);

  // A second run over the same source writes nothing.
  const manifestBefore = await stat(join(out, 'manifest.csv'));
  const again = await relabel({ from: src, out });
  assert.equal(again.changed, false);
  assert.equal((await stat(join(out, 'manifest.csv'))).mtimeMs, manifestBefore.mtimeMs);
  assert.deepEqual(again.summary.counts, s.counts);
});

test('relabel refuses a changed source rather than mixing, and an output inside the source', async () => {
  const src = join(tmp, 'b-src');
  const out = join(tmp, 'b-out');
  await writeTree(src, await datasetFiles({ perClass: { train: 2, test: 1 } }));
  await relabel({ from: src, out });
  await writeFile(join(src, 'chest_xray/test/NORMAL/IM-0100-0001.jpeg'), await makeJpeg({ seed: 4242 }));
  await writeFile(join(src, 'chest_xray/test/NORMAL/IM-0777-0001.jpeg'), 'x');
  await assert.rejects(relabel({ from: src, out }), (err: unknown) => {
    assert.ok(err instanceof LabelError);
    assert.equal(
      err.message,
      `"${out}" was made from another source: 2 file(s) differ from "${src}"; choose another --out or remove it first:\n` +
        '  test/normal/IM-0100-0001.jpeg: content changed\n  test/normal/IM-0777-0001.jpeg: new',
    );
    return true;
  });
  await assert.rejects(relabel({ from: src, out: join(src, 'labeled') }), {
    name: 'LabelError',
    message: `the output folder "${join(src, 'labeled')}" is inside the source "${src}": choose another --out`,
  });
  await assert.rejects(relabel({ from: join(tmp, 'nope'), out }), { name: 'LabelError', message: new RegExp(`^relabel source "${join(tmp, 'nope')}" does not exist`) });
});

test('relabel sets unlabelled names aside with allowUnknown and lists them otherwise', async () => {
  const src = join(tmp, 'c-src');
  await writeTree(src, await datasetFiles({ perClass: { train: 1, test: 1 }, unlabeled: true }));
  await assert.rejects(relabel({ from: src, out: join(tmp, 'c-out1') }), { name: 'LabelError', message: /^2 file\(s\) under PNEUMONIA\// });
  const r = await relabel({ from: src, out: join(tmp, 'c-out2'), allowUnknown: true });
  assert.deepEqual(r.summary.rejected.map((x) => x.dest), ['rejected/train/person950_9501.jpeg', 'rejected/train/person951_bacteria_virus_9502.jpeg']);
  assert.ok((await stat(join(tmp, 'c-out2/rejected/train/person950_9501.jpeg'))).isFile());
});

/** A smooth 160 px grayscale JPEG (X-ray-like low frequencies, unlike the fixtures' pixel noise). */
async function smoothJpeg(seed: number, quality = 90): Promise<Buffer> {
  const n = 160;
  const px = Buffer.alloc(n * n);
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) px[y * n + x] = 128 + 60 * Math.sin(x / (9 + seed) + seed) * Math.cos(y / (13 + seed));
  }
  return sharp(px, { raw: { width: n, height: n, channels: 1 } }).toColourspace('b-w').jpeg({ quality }).toBuffer();
}

test('the leakage audit finds identical and re-encoded images shared by train and test', async () => {
  const src = join(tmp, 'd-src');
  await writeTree(src, await datasetFiles({ perClass: { train: 2, test: 1 } }));
  const trainImage = await readFile(join(src, 'chest_xray/train/NORMAL/IM-0100-0001.jpeg'));
  await writeFile(join(src, 'chest_xray/test/NORMAL/IM-0500-0001.jpeg'), trainImage);
  await writeFile(join(src, 'chest_xray/train/PNEUMONIA/person80_virus_80.jpeg'), await smoothJpeg(3));
  await writeFile(join(src, 'chest_xray/test/PNEUMONIA/person70_virus_77.jpeg'), await smoothJpeg(3, 40));
  await writeFile(join(src, 'chest_xray/test/PNEUMONIA/person71_virus_78.jpeg'), await smoothJpeg(7));
  const r = await relabel({ from: src, out: join(tmp, 'd-out') });
  const audit = r.summary.leakage;
  assert.equal(audit.clean, false);
  assert.deepEqual(audit.identicalAcrossSplits.map(({ a, b }) => [a, b].sort()), [['test/normal/IM-0500-0001.jpeg', 'train/normal/IM-0100-0001.jpeg']]);
  assert.deepEqual(audit.nearDuplicatesAcrossSplits.map(({ a, b }) => [a, b].sort()), [['test/virus/person70_virus_77.jpeg', 'train/virus/person80_virus_80.jpeg']]);
});

test('relabel extracts a zip first (chest X-ray entries only) and never touches the archive', async () => {
  const zipPath = join(tmp, 'e.zip');
  const zip = new AdmZip();
  for (const f of await datasetFiles({ prefix: 'CellData/chest_xray', perClass: { train: 2, test: 1 }, junk: true })) zip.addFile(f.path, f.data);
  zip.addFile('CellData/OCT/train/CNV/CNV-1-1.jpeg', Buffer.from('oct'));
  zip.writeZip(zipPath);
  const before = await readFile(zipPath);
  await mkdir(join(tmp, 'e'), { recursive: true });
  const r = await relabel({ from: zipPath, out: join(tmp, 'e/labeled'), extractedDir: join(tmp, 'e/extracted') });
  assert.equal(r.summary.source.kind, 'zip');
  assert.equal(r.summary.source.root, 'CellData/chest_xray');
  assert.equal(r.summary.counts.train?.total, 6);
  assert.equal(r.summary.counts.test?.total, 3);
  assert.equal(r.extract?.excluded, 1);
  assert.deepEqual(await readFile(zipPath), before);
});

test('a zip of the layout under another top folder relabels like the folder would (OCT still left out)', async () => {
  const zipPath = join(tmp, 'f.zip');
  const zip = new AdmZip();
  for (const f of await datasetFiles({ prefix: 'Chest_XRay_224', perClass: { train: 2, test: 1 } })) zip.addFile(f.path, f.data);
  zip.addFile('OCT/train/NORMAL/NORMAL-1-1.jpeg', Buffer.from('oct'));
  zip.writeZip(zipPath);
  await mkdir(join(tmp, 'f'), { recursive: true });
  const r = await relabel({ from: zipPath, out: join(tmp, 'f/labeled'), extractedDir: join(tmp, 'f/extracted') });
  assert.equal(r.summary.source.root, 'Chest_XRay_224');
  assert.equal(r.summary.counts.train?.total, 6);
  assert.equal(r.summary.counts.test?.total, 3);
  assert.equal(r.extract?.excluded, 1, 'the OCT entry is not even extracted');
});

test('relative symbolic links are followed to their files; links that lead nowhere and .part files are named, not dropped', async () => {
  const src = join(tmp, 'g-src');
  const files = await datasetFiles({ perClass: { train: 1, test: 1 } });
  // Every image lives in pool/; the layout holds relative links to it.
  for (const f of files) {
    const pooled = join(src, 'pool', f.path.replaceAll('/', '_'));
    await mkdir(join(src, 'pool'), { recursive: true });
    await writeFile(pooled, f.data);
    await mkdir(join(src, dirname(f.path)), { recursive: true });
    await symlink(relative(join(src, dirname(f.path)), pooled), join(src, f.path));
  }
  await symlink('nowhere.jpeg', join(src, 'chest_xray/train/NORMAL/IM-0900-0001.jpeg'));
  await symlink('loop.jpeg', join(src, 'chest_xray/train/NORMAL/loop.jpeg'));
  await writeFile(join(src, 'chest_xray/train/PNEUMONIA/person9_virus_9.jpeg.part'), 'half a copy');
  const out = join(tmp, 'g-out');
  const r = await relabel({ from: src, out });
  assert.equal(r.summary.counts.train?.total, 3);
  for (const row of await readManifest(out)) {
    const f = files.find((x) => x.path.startsWith(`chest_xray/${row.split}/`) && x.path.endsWith(`/${basename(row.file)}`));
    assert.ok(f, row.file);
    assert.deepEqual(await readFile(join(out, row.file)), f.data, `${row.file} reads through its link`);
  }
  assert.deepEqual(r.summary.skipped.ignored.filter((i) => !i.source.startsWith('pool/')), [
    { source: 'chest_xray/train/NORMAL/IM-0900-0001.jpeg', reason: 'a symbolic link that leads nowhere' },
    { source: 'chest_xray/train/NORMAL/loop.jpeg', reason: 'a symbolic link loop' },
    { source: 'chest_xray/train/PNEUMONIA/person9_virus_9.jpeg.part', reason: 'an unfinished copy (.part)' },
  ]);
});

test('dhash sees an EXIF-rotated image as it is shown, like the same image saved upright', async () => {
  const { dhash, hammingDistance } = await import('../lib/phash.js');
  const upright = await sharp(await makeJpeg({ seed: 5, width: 96, height: 64, pattern: 'bright-left' })).jpeg({ quality: 95 }).toBuffer();
  // Stored turned a quarter the other way, with orientation 6 (rotate 90° clockwise to show): the same picture.
  const stored = await sharp(upright).rotate(-90).withMetadata({ orientation: 6 }).jpeg({ quality: 95 }).toBuffer();
  assert.equal((await sharp(stored).metadata()).orientation, 6);
  assert.ok(hammingDistance(await dhash(upright), await dhash(stored)) <= 10);
});

test('relabel refuses its own output as a source, rather than making a normal-only dataset of it', async () => {
  const src = join(tmp, 'h-src');
  const out = join(tmp, 'h-out');
  await writeTree(src, await datasetFiles({ perClass: { train: 2, test: 1 } }));
  await relabel({ from: src, out });
  await assert.rejects(relabel({ from: out, out: join(tmp, 'h-again') }), {
    name: 'LabelError',
    message:
      `"${out}" is already relabelled (it holds {split}/{normal,bacteria,virus}/ folders and a manifest.csv): expected the original layout ` +
      '{train,test}/{NORMAL,PNEUMONIA}/; relabel the downloaded archive or its extracted folder instead, or use this folder as the labelled dataset as it is',
  });
  assert.equal(existsSync(join(tmp, 'h-again')), false);
});

test('a re-run compares and restores rejected files too: a new unlabelled name is a difference, a deleted one comes back', async () => {
  const src = join(tmp, 'i-src');
  const out = join(tmp, 'i-out');
  await writeTree(src, await datasetFiles({ perClass: { train: 1, test: 1 }, unlabeled: true }));
  await relabel({ from: src, out, allowUnknown: true });
  await rm(join(out, 'rejected/train/person950_9501.jpeg'));
  const restored = await relabel({ from: src, out, allowUnknown: true });
  assert.equal(restored.changed, true);
  assert.deepEqual(await readFile(join(out, 'rejected/train/person950_9501.jpeg')), await readFile(join(src, 'chest_xray/train/PNEUMONIA/person950_9501.jpeg')));
  assert.equal((await relabel({ from: src, out, allowUnknown: true })).changed, false);

  await writeFile(join(src, 'chest_xray/test/PNEUMONIA/person960_9601.jpeg'), await makeJpeg({ seed: 960 }));
  // Replaced, not written through: the output copy is a hard link to the old file.
  await rm(join(src, 'chest_xray/train/PNEUMONIA/person951_bacteria_virus_9502.jpeg'));
  await writeFile(join(src, 'chest_xray/train/PNEUMONIA/person951_bacteria_virus_9502.jpeg'), await makeJpeg({ seed: 4343 }));
  await assert.rejects(relabel({ from: src, out, allowUnknown: true }), {
    name: 'LabelError',
    message:
      `"${out}" was made from another source: 2 file(s) differ from "${src}"; choose another --out or remove it first:\n` +
      '  rejected/test/person960_9601.jpeg: new\n  rejected/train/person951_bacteria_virus_9502.jpeg: content changed',
  });
});

test('relabel refuses an output that an interrupted run from another source left images in, and deletes none of them', async () => {
  const src = join(tmp, 'j-src');
  const out = join(tmp, 'j-out');
  await writeTree(src, await datasetFiles({ perClass: { train: 1, test: 1 } }));
  // An interrupted run over the same source is finished, not refused.
  await relabel({ from: src, out });
  await rm(join(out, 'manifest.csv'));
  await rm(join(out, 'summary.json'));
  assert.equal((await relabel({ from: src, out })).changed, true);

  const stale = ['test/virus/person70_virus_77.jpeg', 'train/normal/IM-0999-0001.jpeg', 'rejected/val/person1_2.jpeg'];
  await rm(join(out, 'manifest.csv'));
  await rm(join(out, 'summary.json'));
  for (const f of stale) {
    await mkdir(dirname(join(out, f)), { recursive: true });
    await writeFile(join(out, f), await makeJpeg({ seed: 77 }));
  }
  await writeFile(join(out, 'train/normal/.DS_Store'), 'Bud1');
  await assert.rejects(relabel({ from: src, out }), (err: unknown) => {
    assert.ok(err instanceof LabelError);
    assert.equal(
      err.message,
      `"${out}" holds 3 image file(s) that "${src}" does not give (left by an interrupted run from another source?); ` +
        'choose another --out or remove it first:\n  rejected/val/person1_2.jpeg\n  test/virus/person70_virus_77.jpeg\n  train/normal/IM-0999-0001.jpeg',
    );
    assert.deepEqual(err.files, [...stale].sort());
    return true;
  });
  for (const f of stale) assert.ok(existsSync(join(out, f)), f);
  assert.equal(existsSync(join(out, 'manifest.csv')), false);
});

test('relabel refuses an extraction folder that is the output folder or overlaps it, before extracting anything', async () => {
  const zipPath = join(tmp, 'k.zip');
  const zip = new AdmZip();
  for (const f of await datasetFiles({ perClass: { train: 1, test: 1 } })) zip.addFile(f.path, f.data);
  zip.writeZip(zipPath);
  const both = join(tmp, 'k', 'both');
  await assert.rejects(relabel({ from: zipPath, out: both, extractedDir: both }), {
    name: 'LabelError',
    message:
      `the output folder "${both}" and the extraction folder "${both}" are the same folder: relabel writes the labelled dataset apart ` +
      'from the extracted archive; choose another --out or --extracted',
  });
  assert.equal(existsSync(both), false, 'nothing extracted');
  const inner = join(both, 'labeled');
  await assert.rejects(relabel({ from: zipPath, out: inner, extractedDir: both }), {
    name: 'LabelError',
    message:
      `the output folder "${inner}" and the extraction folder "${both}" overlap (one is inside the other): relabel writes the labelled ` +
      'dataset apart from the extracted archive; choose another --out or --extracted',
  });
  await assert.rejects(relabel({ from: zipPath, out: both, extractedDir: join(both, 'extracted') }), { name: 'LabelError', message: /overlap \(one is inside the other\)/ });
  assert.equal(existsSync(join(both, 'chest_xray')) || existsSync(join(both, 'extracted')), false, 'nothing extracted');
});

test('readManifest refuses rows with a bad split, label, file or sha256 or missing columns, naming row and value', async () => {
  const dir = join(tmp, 'm');
  await mkdir(dir, { recursive: true });
  const path = join(dir, 'manifest.csv');
  const header = 'split,label,file,patientId,bytes,sha256,width,height,channels';
  const good = `train,normal,train/normal/IM-0100-0001.jpeg,IM-0100,10,${'a'.repeat(64)},40,48,1`;
  const cases: Array<[string, string]> = [
    [`${header}\n${good}\n${good.replace('train,', 'bogus,')}\n`, `row 3 of "${path}": split "bogus" is not one of train, test, val`],
    [`${header}\n${good.replace(',normal,', ',pneumonia,')}\n`, `row 2 of "${path}": label "pneumonia" is not one of normal, bacteria, virus`],
    [`${header}\n${good.replace('a'.repeat(64), 'xyz')}\n`, `row 2 of "${path}": sha256 "xyz" is not a SHA-256; expected 64 lowercase hexadecimal digits`],
    [`${header}\n${good.replace('train/normal/IM-0100-0001.jpeg', '')}\n`, `row 2 of "${path}": file "" is empty; expected a path relative to "${dir}"`],
    [`${header}\n${good.replace('train/normal/IM-0100-0001.jpeg', '../../etc/passwd')}\n`, `row 2 of "${path}": file "../../etc/passwd" points outside "${dir}"; expected a path inside it`],
    [`${header}\n${good.replace('train/normal/IM-0100-0001.jpeg', '/etc/passwd')}\n`, `row 2 of "${path}": file "/etc/passwd" points outside "${dir}"; expected a path inside it`],
    [
      'split,label,patientId,bytes,width,height,channels\ntrain,normal,IM-0100,10,40,48,1\n',
      `row 2 of "${path}" has no file, sha256 columns: expected the columns split, label, file, patientId, bytes, sha256, width, height, channels`,
    ],
  ];
  for (const [text, message] of cases) {
    await writeFile(path, text);
    await assert.rejects(readManifest(dir), { name: 'LabelError', message }, message);
  }
  await writeFile(path, `${header}\n${good}\n`);
  assert.equal((await readManifest(dir))[0]?.sha256, 'a'.repeat(64));
});

test('a damaged summary.json is a LabelError naming it, whether it is not JSON or lacks what relabel reads', async () => {
  const src = join(tmp, 'n-src');
  const out = join(tmp, 'n-out');
  await writeTree(src, await datasetFiles({ perClass: { train: 1, test: 1 } }));
  await relabel({ from: src, out });
  const path = join(out, 'summary.json');
  const good = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  const advice = 'remove it and relabel again to rewrite it (the labelled images are kept)';
  await writeFile(path, '{"version": 1, "source": ');
  let syntax = '';
  try {
    JSON.parse('{"version": 1, "source": ');
  } catch (err) {
    syntax = (err as Error).message;
  }
  await assert.rejects(relabel({ from: src, out }), (err: unknown) => {
    assert.ok(err instanceof LabelError);
    assert.equal(err.message, `the relabel summary "${path}" cannot be read (${syntax}): ${advice}`);
    assert.ok(err.cause instanceof SyntaxError);
    return true;
  });
  const { rejected: _, ...noRejected } = good;
  await writeFile(path, JSON.stringify(noRejected));
  await assert.rejects(relabel({ from: src, out }), { name: 'LabelError', message: `the relabel summary "${path}" is damaged: its rejected is missing (expected a list); ${advice}` });
  await writeFile(path, JSON.stringify({ ...good, rejected: [{ source: 'a.jpeg', dest: 7 }] }));
  await assert.rejects(relabel({ from: src, out }), { name: 'LabelError', message: `the relabel summary "${path}" is damaged: its rejected[0].dest 7 is not a string; ${advice}` });
  await writeFile(path, JSON.stringify({ ...good, source: { kind: 'folder' } }));
  await assert.rejects(relabel({ from: src, out }), { name: 'LabelError', message: `the relabel summary "${path}" is damaged: its source.path is missing (expected a string); ${advice}` });
  // Removed, as the message says: the next relabel finishes the folder again and writes it anew.
  await rm(path);
  const again = await relabel({ from: src, out });
  assert.deepEqual(again.summary.counts, (good as { counts: unknown }).counts);
  assert.equal((await relabel({ from: src, out })).changed, false);
});

test('a file that cannot be placed is a LabelError naming source and destination, with the system error as its cause', async () => {
  const src = join(tmp, 'p-src');
  const out = join(tmp, 'p-out');
  await writeTree(src, await datasetFiles({ perClass: { train: 2, test: 1 } }));
  // A file where the virus folder of the test split has to go: its images cannot be placed there.
  await mkdir(join(out, 'test'), { recursive: true });
  await writeFile(join(out, 'test', 'virus'), 'not a folder');
  const source = join(src, 'chest_xray', 'test', 'PNEUMONIA', 'person60_virus_1005.jpeg');
  const dest = join(out, 'test', 'virus', 'person60_virus_1005.jpeg');
  const before = await readFile(source);
  await assert.rejects(relabel({ from: src, out, concurrency: 1 }), (err: unknown) => {
    assert.ok(err instanceof LabelError);
    const system = `EEXIST: file already exists, mkdir '${join(out, 'test', 'virus')}'`;
    assert.equal(err.message, `"${source}" cannot be placed at "${dest}" (${system})`);
    assert.equal(err.path, dest);
    assert.ok(err.cause instanceof Error);
    assert.equal(err.cause.message, system);
    return true;
  });
  assert.deepEqual(await readFile(source), before, 'the source is untouched');
  assert.equal(await readFile(join(out, 'test', 'virus'), 'utf8'), 'not a folder');
});

test('a copy cut short by a full disk leaves no file under its name and no .part; every placed file is whole (a real tmpfs)', async (t) => {
  const src = join(tmp, 'q-src');
  await writeTree(src, await datasetFiles({ perClass: { train: 4, test: 2 } }));
  const disk = join(tmp, 'q-disk');
  // Another file system: hard links fail (EXDEV) and every image is copied, until the 16 KiB are full.
  const ran = await withSmallDisk(disk, '16k', async () => {
    const out = join(disk, 'labeled');
    await assert.rejects(relabel({ from: src, out, concurrency: 1 }), (err: unknown) => {
      assert.ok(err instanceof LabelError, String(err));
      assert.match(err.message, /^".+" cannot be placed at ".+" \(ENOSPC: no space left on device, write\)$/);
      return true;
    });
    const placed = (await readdir(out, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
    assert.ok(placed.length > 0, 'some images were placed before the disk was full');
    assert.deepEqual(placed.filter((f) => f.endsWith('.part')), [], 'no .part left');
    for (const file of placed) {
      const original = join(src, 'chest_xray', relative(out, file).split('/')[0] ?? '', basename(dirname(file)) === 'normal' ? 'NORMAL' : 'PNEUMONIA', basename(file));
      assert.deepEqual(await readFile(file), await readFile(original), `${relative(out, file)} is whole`);
    }
  });
  if (!ran) t.skip('cannot mount a small tmpfs here');
});
