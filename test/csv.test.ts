import assert from 'node:assert/strict';
import { test } from 'node:test';
import { csvRowOf, parseCsv, toCsv } from '../lib/csv.js';

test('toCsv quotes what needs quoting and parseCsv reads it back', () => {
  const rows = [
    { file: 'a,b.jpeg', note: 'say "hi"', n: 3 },
    { file: 'line\nbreak', note: '', n: 0 },
  ];
  const text = toCsv(['file', 'note', 'n'], rows);
  assert.equal(text, 'file,note,n\n"a,b.jpeg","say ""hi""",3\n"line\nbreak",,0\n');
  assert.deepEqual(parseCsv(text), [
    { file: 'a,b.jpeg', note: 'say "hi"', n: '3' },
    { file: 'line\nbreak', note: '', n: '0' },
  ]);
  assert.deepEqual(parseCsv('a,b\r\n1,2\r\n'), [{ a: '1', b: '2' }]);
});

test('parseCsv names the file and row of malformed input', () => {
  assert.throws(() => parseCsv('a,b\n1\n', 'm.csv'), { name: 'ConfigError', message: 'row 2 of "m.csv" has 1 fields, expected 2 (a, b)' });
  assert.throws(() => parseCsv('a\n"open', 'm.csv'), { message: 'unterminated quoted field in "m.csv"' });
});

test('parseCsv strips a UTF-8 byte-order mark (a CSV saved from Excel): the first column keeps its name', async () => {
  assert.deepEqual(parseCsv('\uFEFFfile,derived_from\r\nperson1_bacteria_1.jpeg,full\r\n'), [{ file: 'person1_bacteria_1.jpeg', derived_from: 'full' }]);
  // Only the mark that opens the file: one inside a field is data.
  assert.deepEqual(parseCsv('a\n\uFEFFx\n'), [{ a: '\uFEFFx' }]);
  const { readGroups } = await import('../lib/balance.js');
  const { parsePredictionsCsv } = await import('../lib/plots.js');
  const { mkdtemp, rm, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 'pneumotype-csv-'));
  try {
    const csv = join(dir, 'groups.csv');
    await writeFile(csv, '\uFEFFfile,derived_from\r\nperson1_bacteria_1.jpeg,full\r\n');
    assert.deepEqual(await readGroups({ csv, column: 'derived_from' }), new Map([['person1_bacteria_1.jpeg', 'full']]));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const predictions = '\uFEFFfile,patientId,trueLabel,predictedLabel,normal,bacteria,virus\r\ntest/normal/IM-1.jpeg,IM-1,normal,normal,0.8,0.1,0.1\r\n';
  assert.equal(parsePredictionsCsv(predictions, 'p.csv')[0]?.file, 'test/normal/IM-1.jpeg');
});

test('parseCsv numbers rows by the line of the file they start on: blank lines and quoted newlines count', () => {
  assert.throws(() => parseCsv('a,b\n\n\n1,2,3\n', 'x.csv'), { name: 'ConfigError', message: 'row 4 of "x.csv" has 3 fields, expected 2 (a, b)' });
  assert.throws(() => parseCsv('a,b\r\n"x\r\ny",1\r\n\r\n3\r\n', 'x.csv'), { message: 'row 5 of "x.csv" has 1 fields, expected 2 (a, b)' });
  assert.throws(() => parseCsv('\uFEFFa,b\r1,2\r\r3\r', 'x.csv'), { message: 'row 4 of "x.csv" has 1 fields, expected 2 (a, b)' });
  const rows = parseCsv('a,b\n1,2\n\n"x\ny",3\n4,5');
  assert.deepEqual(rows.map(csvRowOf), [2, 4, 6]);
  assert.equal(csvRowOf({ a: '1' }), undefined);
});
