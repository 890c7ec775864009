import assert from 'node:assert/strict';
import { test } from 'node:test';
import { format, inspect } from 'node:util';
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

test('shown (console.log, a notebook\'s failed cell) as name, code and message; stack and cause with PNEUMOTYPE_DEBUG', () => {
  const cause = new Error('low level');
  const err = new ConfigError('preset "huge" is not one of smoke, cpu, gpu', { cause });
  const saved = process.env.PNEUMOTYPE_DEBUG;
  try {
    delete process.env.PNEUMOTYPE_DEBUG;
    assert.equal(inspect(err), 'ConfigError [ERR_CONFIG]: preset "huge" is not one of smoke, cpu, gpu');
    assert.equal(format('%o', { err }), '{\n  err: ConfigError [ERR_CONFIG]: preset "huge" is not one of smoke, cpu, gpu\n}');
    assert.ok(err.stack?.includes('errors.test.ts'), 'the stack is still there');
    process.env.PNEUMOTYPE_DEBUG = '1';
    const shown = inspect(err);
    assert.ok(shown.startsWith('ConfigError [ERR_CONFIG]: preset "huge" is not one of smoke, cpu, gpu\n    at '), shown);
    assert.ok(shown.includes('[cause]: Error: low level'), shown);
  } finally {
    if (saved === undefined) delete process.env.PNEUMOTYPE_DEBUG;
    else process.env.PNEUMOTYPE_DEBUG = saved;
  }
});
