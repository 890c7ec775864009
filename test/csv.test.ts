import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseCsv, toCsv } from '../lib/csv.js';

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
