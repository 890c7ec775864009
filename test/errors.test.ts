import assert from 'node:assert/strict';
import { test } from 'node:test';
import { format, inspect } from 'node:util';
import { ArchiveError, ConfigError, PneumotypeError, quote } from '../lib/errors.js';
import type {
  BinaryReport, CacheFailure, CacheImage, CalibrationFigures, ClassCounts, ClassReport, ErrorCode, ErrorDetails, EvaluatePredictionsOptions,
  EvaluationSplit, FailedImage, GroupingSource, NameInfo, PipelineStep, PredictOptions, ResolvedSource, SplitRow, UploadedFile,
  UploadFailure, ZipListing,
} from '../lib/index.js';

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

test('every error class of the public API has its own code, and ErrorCode lists exactly those codes', async () => {
  const api = await import('../lib/index.js');
  const made: PneumotypeError[] = [
    new api.ConfigError('m'), new api.UsageError('m'), new api.FetchError('m', { url: 'http://x/' }),
    new api.IntegrityError('m', { expected: 'a', actual: 'b' }), new api.ArchiveError('m', {}), new api.LabelError('m'),
    new api.ImageError('m'), new api.CacheError('m'), new api.OutputError('m'), new api.AugmentError('m'),
    new api.BackendError('m'), new api.BusyError('m'), new api.TrainingError('m'),
    new api.UploadError('m', { bucket: 'b', reason: 'failed' }),
  ];
  // The type's members, written out: a code added to a class but not to ErrorCode fails to compile above (the
  // constructor takes an ErrorCode), and one listed here but thrown by no class fails below.
  const listed: Record<ErrorCode, true> = {
    ERR_CONFIG: true, ERR_FETCH: true, ERR_INTEGRITY: true, ERR_ARCHIVE: true, ERR_LABEL: true, ERR_IMAGE: true,
    ERR_CACHE: true, ERR_OUTPUT: true, ERR_AUGMENT: true, ERR_BACKEND: true, ERR_BUSY: true, ERR_TRAINING: true,
    ERR_UPLOAD: true,
  };
  const exported = Object.values(api).filter((v) => typeof v === 'function' && v.prototype instanceof PneumotypeError);
  assert.equal(exported.length, made.length, 'an exported error class is missing from this test');
  assert.deepEqual([...new Set(made.map((e) => e.code))].sort(), Object.keys(listed).sort());
});

// Compile-time: the types a strict caller names for the options and results of the main operations are exported.
export type NamedByCallers = [
  ErrorCode, ErrorDetails, EvaluationSplit, ClassCounts, FailedImage, PredictOptions, PipelineStep, GroupingSource,
  CacheImage, CacheFailure, ClassReport, BinaryReport, CalibrationFigures, UploadedFile, UploadFailure,
  EvaluatePredictionsOptions, SplitRow, NameInfo, ResolvedSource, ZipListing,
];
