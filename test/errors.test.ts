import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ArchiveError, ConfigError, PneumotypeError, quote } from '../lib/errors.js';

test('errors carry a code, a path and a cause, and are PneumotypeErrors', () => {
  const cause = new Error('low level');
  const err = new ArchiveError('entry "../x" escapes the target folder', { entry: '../x', path: 'a.zip', cause });
  assert.ok(err instanceof PneumotypeError);
  assert.equal(err.name, 'ArchiveError');
  assert.equal(err.code, 'ERR_ARCHIVE');
  assert.equal(err.entry, '../x');
  assert.equal(err.path, 'a.zip');
  assert.equal(err.cause, cause);
  assert.equal(new ConfigError('bad').cause, undefined);
});

test('quote renders strings in double quotes and other values as JSON', () => {
  assert.equal(quote('a"b'), '"a\\"b"');
  assert.equal(quote(3), '3');
  assert.equal(quote(undefined), 'undefined');
  assert.equal(quote({ a: 1 }), '{"a":1}');
});
