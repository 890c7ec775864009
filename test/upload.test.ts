import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { inspect } from 'node:util';
import { S3Client } from '@aws-sdk/client-s3';
import { CreateMultipartUploadCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { ConfigError, IntegrityError, LabelError } from '../lib/errors.js';
import { readManifest, writeManifest } from '../lib/manifest.js';
import type { Progress } from '../lib/progress.js';
import { relabel } from '../lib/relabel.js';
import {
  MIN_PART_SIZE,
  UPLOAD_MANIFEST_NAME,
  UploadError,
  bucketRegionFrom,
  checkBucketRegion,
  checkUploadOptions,
  normalizePrefix,
  objectKey,
  planUpload,
  upload,
  type LocalFile,
  type RemoteObject,
  type UploadManifest,
} from '../lib/upload.js';
import { datasetFiles, makeJpeg, writeTree } from './helpers/fixtures.js';
import { withEnv } from './helpers/env.js';
import { startS3Server, type S3Server } from './helpers/s3-server.js';

// The SDK warns once that it will need Node 22 from 2027; it says nothing about this test.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const BUCKET = 'pneumotype-test';
const SECRET = 'pneumotype-test-secret-0f9e8d7c6b5a';
let tmp: string;
let s3: S3Server;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-upload-'));
  s3 = await startS3Server({ buckets: [BUCKET], secretAccessKey: SECRET });
});
after(async () => {
  await s3.close();
  await rm(tmp, { recursive: true, force: true });
});

/** A labelled folder made by relabel from a tiny generated tree: 9 images, manifest.csv, summary.json. */
async function labelled(name: string, options: { unlabeled?: boolean } = {}): Promise<string> {
  const src = join(tmp, `${name}-src`);
  const out = join(tmp, `${name}-labeled`);
  await writeTree(src, await datasetFiles({ perClass: { train: 2, test: 1 }, ...(options.unlabeled ? { unlabeled: true } : {}) }));
  await relabel({ from: src, out, ...(options.unlabeled ? { allowUnknown: true } : {}) });
  return out;
}

/** The dataset files the upload must send, relative to the folder, in upload order. */
async function expectedFiles(dir: string, extra: readonly string[] = []): Promise<string[]> {
  return [...(await readManifest(dir)).map((r) => r.file), ...extra, 'manifest.csv', 'summary.json'];
}

const md5 = (b: Buffer | string): string => createHash('md5').update(b).digest('hex');
const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

async function manifestObject(server: S3Server, prefix: string): Promise<{ text: string; json: UploadManifest } | undefined> {
  const data = await server.getObject(BUCKET, objectKey(prefix, UPLOAD_MANIFEST_NAME));
  if (data === undefined) return undefined;
  const text = data.toString('utf8');
  return { text, json: JSON.parse(text) as UploadManifest };
}

/** Asserts that every file is in the bucket with the same bytes. */
async function assertObjectsEqual(server: S3Server, dir: string, prefix: string, files: readonly string[]): Promise<void> {
  for (const file of files) {
    const local = await readFile(join(dir, file));
    const remote = await server.getObject(BUCKET, objectKey(prefix, file));
    assert.ok(remote, `${file} is in the bucket`);
    assert.ok(remote.equals(local), `${file}: same bytes`);
  }
}

function assertNoSecret(value: unknown): void {
  const text = typeof value === 'string' ? value : inspect(value, { depth: Infinity, showHidden: false, customInspect: false });
  assert.ok(!text.includes(SECRET), 'the secret key appears nowhere');
}

test('upload sends every file, compared object by object, writes the manifest object last; a re-run sends nothing', async () => {
  const dir = await labelled('full');
  const files = await expectedFiles(dir);
  assert.equal(files.length, 11);
  const events: Progress[] = [];
  const r = await upload({ data: dir, bucket: BUCKET, prefix: 'full', region: 'us-east-1', client: s3.client(), onProgress: (p) => events.push(p) });

  const locals = await Promise.all(files.map((f) => readFile(join(dir, f))));
  const total = locals.reduce((a, b) => a + b.length, 0);
  assert.deepEqual(
    { uploaded: r.uploaded, skipped: r.skipped, bytes: r.bytes, skippedBytes: r.skippedBytes, totalBytes: r.totalBytes, manifestWritten: r.manifestWritten, otherObjects: r.otherObjects },
    { uploaded: 11, skipped: 0, bytes: total, skippedBytes: 0, totalBytes: total, manifestWritten: true, otherObjects: 0 },
  );
  assert.equal(r.region, undefined, 's3rver reports no region');
  assert.equal(r.manifestKey, 'full/_pneumotype-upload.json');
  assert.deepEqual(await s3.listKeys(BUCKET, 'full/'), [...files.map((f) => `full/${f}`), 'full/_pneumotype-upload.json'].sort());
  await assertObjectsEqual(s3, dir, 'full', files);
  assert.deepEqual(await s3.headMetadata(BUCKET, `full/${files[0]}`), { md5: md5(locals[0] as Buffer), sha256: sha256(locals[0] as Buffer) });

  // The manifest object lists every file with its hashes, plus the dataset's counts.
  const m = await manifestObject(s3, 'full');
  assert.ok(m);
  assert.deepEqual(
    m.json.files.map((f) => ({ key: f.key, file: f.file, bytes: f.bytes, md5: f.md5, sha256: f.sha256 })),
    files.map((f, i) => ({ key: `full/${f}`, file: f, bytes: (locals[i] as Buffer).length, md5: md5(locals[i] as Buffer), sha256: sha256(locals[i] as Buffer) })),
  );
  assert.ok(m.json.files.every((f) => !Number.isNaN(Date.parse(f.completedAt))));
  const summary = JSON.parse(await readFile(join(dir, 'summary.json'), 'utf8')) as { counts: unknown; patients: unknown };
  assert.deepEqual(
    { format: m.json.format, version: m.json.version, bucket: m.json.bucket, prefix: m.json.prefix, region: m.json.region, totals: m.json.totals, summary: m.json.summary },
    { format: 'pneumotype-upload', version: 1, bucket: BUCKET, prefix: 'full', region: 'us-east-1', totals: { files: 11, bytes: total }, summary: { counts: summary.counts, patients: summary.patients } },
  );
  assert.deepEqual(m.json, r.manifest);
  assertNoSecret(m.text);
  assertNoSecret(r);

  // Written last: no object write after the manifest object's.
  const writes = s3.requests.filter((q) => q.key.startsWith('full/') && (q.operation === 'PutObject' || q.operation === 'CompleteMultipartUpload'));
  assert.equal(writes.length, 12);
  assert.equal(writes.at(-1)?.key, 'full/_pneumotype-upload.json');

  const uploadEvents = events.filter((e) => e.stage === 'upload');
  assert.ok(uploadEvents.length > 0 && uploadEvents.every((e) => e.unit === 'bytes' && e.total === total));
  assert.equal(uploadEvents.at(-1)?.done, total);
  assert.ok(events.some((e) => e.stage === 'hash'));

  // Again: everything is there with the same MD5; nothing is written, the manifest object is kept.
  const before = s3.requests.length;
  const again = await upload({ data: dir, bucket: BUCKET, prefix: 'full', region: 'us-east-1', client: s3.client() });
  assert.deepEqual({ uploaded: again.uploaded, skipped: again.skipped, bytes: again.bytes, skippedBytes: again.skippedBytes, manifestWritten: again.manifestWritten }, {
    uploaded: 0, skipped: 11, bytes: 0, skippedBytes: total, manifestWritten: false,
  });
  assert.deepEqual(again.manifest, m.json);
  const later = s3.requests.slice(before).map((q) => q.operation);
  assert.ok(!later.some((op) => ['PutObject', 'UploadPart', 'CreateMultipartUpload', 'DeleteObject'].includes(op)), later.join(' '));
});

test('a listing in pages (IsTruncated, continuation tokens) is read to its last page', async () => {
  const paged = await startS3Server({ buckets: [BUCKET], secretAccessKey: SECRET, listPageSize: 4 });
  try {
    const dir = await labelled('paged');
    const first = await upload({ data: dir, bucket: BUCKET, prefix: 'paged', region: 'us-east-1', client: paged.client() });
    assert.equal(first.uploaded, 11);
    // One more object, last in key order, so that it comes on the last of 4 pages (13 keys, 4 a page).
    await paged.client().send(new PutObjectCommand({ Bucket: BUCKET, Key: 'paged/zz-notes.txt', Body: 'kept' }));
    const before = paged.requests.length;
    const again = await upload({ data: dir, bucket: BUCKET, prefix: 'paged', region: 'us-east-1', client: paged.client() });
    assert.deepEqual(
      { uploaded: again.uploaded, skipped: again.skipped, manifestWritten: again.manifestWritten, otherObjects: again.otherObjects },
      { uploaded: 0, skipped: 11, manifestWritten: false, otherObjects: 1 },
    );
    const lists = paged.requests.slice(before).filter((q) => q.operation === 'ListObjects');
    assert.deepEqual(lists.map((q) => q.query.includes('continuation-token=')), [false, true, true, true]);
    assert.deepEqual(await paged.listKeys(BUCKET, 'paged/'), [...(await expectedFiles(dir)).map((f) => `paged/${f}`), 'paged/_pneumotype-upload.json', 'paged/zz-notes.txt'].sort());
  } finally {
    await paged.close();
  }
});

test('an upload aborted part-way leaves no manifest object; the re-run uploads only the rest', async () => {
  const dir = await labelled('resume');
  const files = await expectedFiles(dir);
  const controller = new AbortController();
  let written = 0;
  s3.onObjectWritten = (_bucket, key) => {
    if (key.startsWith('resume/') && ++written === 3) controller.abort(new Error('stopped by the test'));
  };
  try {
    await assert.rejects(
      upload({ data: dir, bucket: BUCKET, prefix: 'resume', region: 'us-east-1', client: s3.client(), concurrency: 1, signal: controller.signal }),
      (err: unknown) => {
        assert.ok(err instanceof UploadError);
        assert.equal(err.reason, 'aborted');
        assert.equal(err.code, 'ERR_UPLOAD');
        assert.equal(
          err.message,
          'upload to "s3://pneumotype-test/resume/" was aborted: run it again to upload the rest ' +
            '("s3://pneumotype-test/resume/_pneumotype-upload.json" is written only when every file is there)',
        );
        return true;
      },
    );
  } finally {
    s3.onObjectWritten = undefined;
  }
  const present = await s3.listKeys(BUCKET, 'resume/');
  // One file at a time: the abort came as the third object was completed, before the fourth started.
  assert.deepEqual(present, files.slice(0, 3).map((f) => `resume/${f}`).sort());
  assert.equal(await manifestObject(s3, 'resume'), undefined);

  const before = s3.requests.length;
  const r = await upload({ data: dir, bucket: BUCKET, prefix: 'resume', region: 'us-east-1', client: s3.client(), concurrency: 2 });
  assert.equal(r.skipped, 3);
  assert.equal(r.uploaded, files.length - 3);
  const put = s3.requests.slice(before).filter((q) => q.operation === 'PutObject').map((q) => q.key);
  assert.deepEqual(put.slice(0, -1).sort(), files.slice(3).map((f) => `resume/${f}`).sort());
  assert.equal(put.at(-1), 'resume/_pneumotype-upload.json');
  await assertObjectsEqual(s3, dir, 'resume', files);
  assert.equal((await manifestObject(s3, 'resume'))?.json.files.length, files.length);
});

test('a changed local file is refused until the manifest says so, then re-uploaded with manifest.csv only', async () => {
  const dir = await labelled('changed');
  const files = await expectedFiles(dir);
  await upload({ data: dir, bucket: BUCKET, prefix: 'changed', region: 'us-east-1', client: s3.client() });
  const rows = await readManifest(dir);
  const target = rows.find((row) => row.label === 'normal' && row.split === 'train');
  assert.ok(target);
  const fresh = await makeJpeg({ seed: 4242 });
  await rm(join(dir, target.file)); // a hard link to the source: replace it, do not write through it
  await writeFile(join(dir, target.file), fresh);

  // The folder no longer matches its manifest.csv: refused before anything is written.
  await assert.rejects(upload({ data: dir, bucket: BUCKET, prefix: 'changed', region: 'us-east-1', client: s3.client() }), (err: unknown) => {
    assert.ok(err instanceof IntegrityError);
    assert.equal(
      err.message,
      `"${target.file}" in "${dir}" does not match manifest.csv (${fresh.length} bytes, sha256 ${sha256(fresh)}; the manifest says ` +
        `${target.bytes} bytes, sha256 ${target.sha256}): the labelled folder changed after relabel; run \`pneumotype relabel\` again`,
    );
    return true;
  });
  assert.ok(await manifestObject(s3, 'changed'));

  // As a new relabel would: the manifest row follows the file.
  await writeManifest(dir, rows.map((row) => (row.file === target.file ? { ...row, bytes: fresh.length, sha256: sha256(fresh) } : row)));
  const before = s3.requests.length;
  const r = await upload({ data: dir, bucket: BUCKET, prefix: 'changed', region: 'us-east-1', client: s3.client() });
  assert.deepEqual({ uploaded: r.uploaded, skipped: r.skipped, bytes: r.bytes }, {
    uploaded: 2, skipped: 9, bytes: fresh.length + (await readFile(join(dir, 'manifest.csv'))).length,
  });
  const ops = s3.requests.slice(before).filter((q) => ['PutObject', 'DeleteObject'].includes(q.operation)).map((q) => `${q.operation} ${q.key}`);
  // The old manifest object goes before the first file changes, the new one comes last.
  assert.equal(ops[0], 'DeleteObject changed/_pneumotype-upload.json');
  assert.deepEqual(ops.slice(1, -1).sort(), [`PutObject changed/${target.file}`, 'PutObject changed/manifest.csv'].sort());
  assert.equal(ops.at(-1), 'PutObject changed/_pneumotype-upload.json');
  await assertObjectsEqual(s3, dir, 'changed', files);
  const listed = (await manifestObject(s3, 'changed'))?.json.files.find((f) => f.file === target.file);
  assert.equal(listed?.md5, md5(fresh));
});

test('a file larger than the part size goes multipart; rejected/ is uploaded; x-amz-meta-md5 is stored', async () => {
  const dir = await labelled('multi', { unlabeled: true });
  const big = randomBytes(11 * 1024 * 1024);
  await writeFile(join(dir, 'rejected/train/large-scan.jpeg'), big);
  const rejected = ['rejected/train/large-scan.jpeg', 'rejected/train/person950_9501.jpeg', 'rejected/train/person951_bacteria_virus_9502.jpeg'];
  const files = await expectedFiles(dir, rejected);
  const r = await upload({ data: dir, bucket: BUCKET, prefix: 'multi', region: 'us-east-1', client: s3.client(), partSize: MIN_PART_SIZE });
  assert.equal(r.uploaded, files.length);
  assert.deepEqual(r.manifest.files.map((f) => f.file), files);
  const ops = s3.requests.filter((q) => q.key === 'multi/rejected/train/large-scan.jpeg').map((q) => q.operation);
  assert.deepEqual(ops, ['CreateMultipartUpload', 'UploadPart', 'UploadPart', 'UploadPart', 'CompleteMultipartUpload']);
  await assertObjectsEqual(s3, dir, 'multi', files);
  assert.deepEqual(await s3.headMetadata(BUCKET, 'multi/rejected/train/large-scan.jpeg'), { md5: md5(big), sha256: sha256(big) });
  const again = await upload({ data: dir, bucket: BUCKET, prefix: 'multi', region: 'us-east-1', client: s3.client(), partSize: MIN_PART_SIZE });
  assert.deepEqual({ uploaded: again.uploaded, skipped: again.skipped }, { uploaded: 0, skipped: files.length });
});

test('an endpoint option works with the default credential chain (environment) and path-style addressing', async () => {
  const dir = await labelled('env');
  const none = join(tmp, 'no-such-aws-file');
  const isolated = { AWS_CONFIG_FILE: none, AWS_SHARED_CREDENTIALS_FILE: none, AWS_PROFILE: undefined, AWS_REGION: undefined, AWS_DEFAULT_REGION: undefined };
  await withEnv({ ...isolated, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: SECRET }, async () => {
    const r = await upload({ data: dir, bucket: BUCKET, prefix: 'env', region: 'us-east-1', endpoint: s3.endpoint });
    assert.equal(r.uploaded, 11);
    await assertObjectsEqual(s3, dir, 'env', await expectedFiles(dir));
    // No region anywhere: refused before any request.
    await assert.rejects(upload({ data: dir, bucket: BUCKET, prefix: 'env', endpoint: s3.endpoint }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, 'no AWS region for bucket "pneumotype-test": pass --region (the region the model is deployed to) or set AWS_REGION');
      return true;
    });
    // The region from the environment, as the SDK's chain reads it.
    await withEnv({ AWS_REGION: 'us-east-1' }, async () => {
      const again = await upload({ data: dir, bucket: BUCKET, prefix: 'env', endpoint: s3.endpoint });
      assert.equal(again.skipped, 11);
    });
  });
  // A wrong secret from the same chain: the server's signature check refuses it.
  await withEnv({ ...isolated, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: 'not-the-secret' }, async () => {
    await assert.rejects(upload({ data: dir, bucket: BUCKET, prefix: 'env2', region: 'us-east-1', endpoint: s3.endpoint }), (err: unknown) => {
      assert.ok(err instanceof UploadError);
      assert.equal(err.reason, 'credentials');
      assert.ok(err.message.includes(`: the access key ID "${s3.accessKeyId}" (from AWS_ACCESS_KEY_ID) was refused; `), err.message);
      assert.ok(!inspect(err, { depth: Infinity, customInspect: false }).includes('not-the-secret'));
      return true;
    });
  });
});

test('an endpoint that accepts connections and never answers fails after the request timeout, not never', async () => {
  const dir = await labelled('silent');
  let connections = 0;
  const silent = createServer(() => {}).on('connection', () => (connections += 1)).listen(0, '127.0.0.1');
  await once(silent, 'listening');
  const endpoint = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  const none = join(tmp, 'no-such-aws-file');
  try {
    await withEnv({ AWS_CONFIG_FILE: none, AWS_SHARED_CREDENTIALS_FILE: none, AWS_PROFILE: undefined, AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y' }, async () => {
      await assert.rejects(upload({ data: dir, bucket: BUCKET, region: 'us-east-1', endpoint, requestTimeoutMs: 200 }), (err: unknown) => {
        assert.ok(err instanceof UploadError, String(err));
        assert.match(err.message, new RegExp(`^no answer from the S3 endpoint "${endpoint}" checking bucket "s3://pneumotype-test/" \\(TimeoutError: .*200 ms requestTimeout.*\\): check --endpoint \\(or AWS_ENDPOINT_URL_S3\\) and that the server is running$`));
        return true;
      });
      // One request and its retries (the SDK's 3 attempts), not three requests' worth: the setup is what is wrong.
      assert.equal(connections, 3);
      // The same endpoint from the environment, as the SDK reads it: named too.
      await withEnv({ AWS_ENDPOINT_URL_S3: endpoint }, async () => {
        await assert.rejects(upload({ data: dir, bucket: BUCKET, region: 'us-east-1', requestTimeoutMs: 200 }), (err: unknown) =>
          err instanceof UploadError && err.message.startsWith(`no answer from the S3 endpoint "${endpoint}" checking bucket `));
      });
      await assert.rejects(upload({ data: dir, bucket: BUCKET, region: 'us-east-1', endpoint: 'http://127.0.0.1:1' }), (err: unknown) => {
        assert.ok(err instanceof UploadError, String(err));
        assert.match(err.message, /^no answer from the S3 endpoint "http:\/\/127\.0\.0\.1:1" checking bucket "s3:\/\/pneumotype-test\/" \(.*ECONNREFUSED.*\): check --endpoint \(or AWS_ENDPOINT_URL_S3\) and that the server is running$/);
        return true;
      });
    });
    // The command, stopped by Ctrl-C or SIGTERM (`docker stop`) while it waits: an interrupt's status (130, 143) and
    // how to go on, as run and train do.
    for (const [signal, status] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      const cli = spawn(process.execPath, [resolve('bin/pneumotype.js'), 'upload', '--data', dir, '--bucket', BUCKET, '--region', 'us-east-1', '--endpoint', endpoint, '--quiet'], {
        env: { ...process.env, AWS_CONFIG_FILE: none, AWS_SHARED_CREDENTIALS_FILE: none, AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y' },
      });
      let stderr = '';
      cli.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      await once(silent, 'connection');
      cli.kill(signal);
      const [code] = (await once(cli, 'exit')) as [number | null];
      assert.equal(code, status, `${signal}: ${stderr}`);
      assert.equal(stderr, `\npneumotype upload: upload to "s3://${BUCKET}/" was aborted: run it again to upload the rest ("s3://${BUCKET}/_pneumotype-upload.json" is written only when every file is there)\n`);
    }
  } finally {
    silent.close();
  }
});

test('a file that changes after hashing is never completed in the bucket under the old MD5', async () => {
  const dir = await labelled('racing');
  const first = (await readManifest(dir))[0];
  assert.ok(first);
  const path = join(dir, first.file);
  const original = await readFile(path);
  const altered = Buffer.from(original);
  altered[altered.length - 3] = (altered[altered.length - 3] ?? 0) ^ 0xff; // same size, other bytes
  let swapped = false;
  const onProgress = (p: Progress): void => {
    // Hashing done, upload not started: the file changes under the upload's feet (replaced, not written through).
    if (p.stage === 'hash' && p.done === p.total && !swapped) {
      swapped = true;
      rmSync(path);
      writeFileSync(path, altered);
    }
  };
  await assert.rejects(
    upload({ data: dir, bucket: BUCKET, prefix: 'racing', region: 'us-east-1', client: s3.client(), concurrency: 1, onProgress }),
    (err: unknown) => {
      assert.ok(err instanceof IntegrityError);
      assert.equal(
        err.message,
        `"${path}" changed while it was uploaded (${altered.length} bytes, MD5 ${md5(altered)}; hashed as ${original.length} bytes, ` +
          `MD5 ${md5(original)}): nothing was completed for it; run the upload again`,
      );
      return true;
    },
  );
  assert.ok(swapped);
  assert.deepEqual(await s3.listKeys(BUCKET, 'racing/'), []);
  // A file deleted after hashing: a local error, not a server that did not answer.
  writeFileSync(path, original);
  let deleted = false;
  const onHashed = (p: Progress): void => {
    if (p.stage === 'hash' && p.done === p.total && !deleted) {
      deleted = true;
      rmSync(path);
    }
  };
  await assert.rejects(
    upload({ data: dir, bucket: BUCKET, prefix: 'racing2', region: 'us-east-1', client: s3.client(), concurrency: 1, onProgress: onHashed }),
    (err: unknown) => {
      assert.ok(err instanceof LabelError, String(err));
      assert.equal(err.path, path);
      assert.match(err.message, new RegExp(`^cannot read "${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}" to upload it as "s3://${BUCKET}/racing2/${first.file}" \\(ENOENT: .*\\): the labelled folder changed after the upload hashed it; put the file back or run \`pneumotype relabel\` again; the upload is incomplete`));
      return true;
    },
  );
  assert.ok(deleted);
});

test('a missing bucket is a clear error naming the bucket, the endpoint and what to do', async () => {
  const dir = await labelled('nobucket');
  await assert.rejects(upload({ data: dir, bucket: 'no-such-bucket', region: 'us-east-1', client: s3.client() }), (err: unknown) => {
    assert.ok(err instanceof UploadError);
    assert.equal(err.reason, 'no-bucket');
    assert.equal(err.bucket, 'no-such-bucket');
    assert.equal(err.message, `bucket "no-such-bucket" does not exist (endpoint "${s3.endpoint}"): create it in "us-east-1" first or pass another --bucket`);
    assert.equal((err.cause as { name?: string }).name, 'NoSuchBucket', 'the listing\'s answer: S3 names the missing bucket');
    return true;
  });
});

test('an endpoint that is a web server but not S3: the missing bucket says so', async () => {
  const dir = await labelled('notS3');
  const web = createHttpServer((_req, res) => res.writeHead(404, { 'content-type': 'text/html' }).end('<html>Not Found</html>')).listen(0, '127.0.0.1');
  await once(web, 'listening');
  const endpoint = `http://127.0.0.1:${(web.address() as AddressInfo).port}`;
  const none = join(tmp, 'no-such-aws-file');
  try {
    await withEnv({ AWS_CONFIG_FILE: none, AWS_SHARED_CREDENTIALS_FILE: none, AWS_PROFILE: undefined, AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y' }, async () => {
      await assert.rejects(upload({ data: dir, bucket: BUCKET, region: 'us-east-1', endpoint }), (err: unknown) => {
        assert.ok(err instanceof UploadError, String(err));
        assert.equal(err.message, `bucket "${BUCKET}" does not exist (endpoint "${endpoint}"): create it in "us-east-1" first or pass another --bucket; the endpoint answered 404 without S3's NoSuchBucket: is it an S3 server?`);
        return true;
      });
    });
  } finally {
    web.close();
  }
});

test('wrong credentials: an unknown access key (s3rver) and a wrong secret (signature check) are refused without leaking', async () => {
  const dir = await labelled('creds');
  await assert.rejects(
    upload({ data: dir, bucket: BUCKET, prefix: 'creds', region: 'us-east-1', client: s3.client({ accessKeyId: 'AKIANOTAKEY', secretAccessKey: SECRET }) }),
    (err: unknown) => {
      assert.ok(err instanceof UploadError);
      assert.equal(err.reason, 'credentials');
      assert.equal(
        err.message,
        'S3 rejected the credentials for bucket "pneumotype-test" (InvalidAccessKeyId: The AWS Access Key Id you provided does not exist ' +
          'in our records.): the access key ID "AKIANOTAKEY" (the client passed in) was refused; check AWS_ACCESS_KEY_ID and ' +
          "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (the SDK's default credential chain)",
      );
      assert.equal((err.cause as { name?: string }).name, 'InvalidAccessKeyId');
      assertNoSecret(err);
      return true;
    },
  );
  const wrongSecret = 'wrong-secret-6b5a4f3e2d1c';
  await assert.rejects(
    upload({ data: dir, bucket: BUCKET, prefix: 'creds', region: 'us-east-1', client: s3.client({ secretAccessKey: wrongSecret }) }),
    (err: unknown) => {
      assert.ok(err instanceof UploadError);
      assert.equal(
        err.message,
        'S3 rejected the credentials for bucket "pneumotype-test" (SignatureDoesNotMatch: The request signature we calculated does not ' +
          `match the signature you provided. Check your key and signing method.): the access key ID "${s3.accessKeyId}" (the client passed in) ` +
          "was refused; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (the SDK's default credential chain)",
      );
      assert.ok(!inspect(err, { depth: Infinity, customInspect: false }).includes(wrongSecret));
      return true;
    },
  );
  assert.deepEqual(await s3.listKeys(BUCKET, 'creds/'), []);
});

test("S3's echo of the signed request (signature, string to sign, canonical request with the session token) stays out of the error, PNEUMOTYPE_DEBUG too", async () => {
  const dir = await labelled('echo');
  const [signature, token] = ['5ee0c0de'.repeat(8), 'SESSIONTOKENSECRET123'];
  // What real S3 answers a request signed with a wrong secret: the error body echoes what it expected to be signed.
  const body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match ' +
    `the signature you provided. Check your key and signing method.</Message><AWSAccessKeyId>AKIAECHO</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256 ${signature}</StringToSign>` +
    `<SignatureProvided>${signature}</SignatureProvided><StringToSignBytes>41 57 53</StringToSignBytes><CanonicalRequest>GET /\nx-amz-security-token:${token}</CanonicalRequest>` +
    '<CanonicalRequestBytes>47 45 54</CanonicalRequestBytes><RequestId>R</RequestId><HostId>H</HostId></Error>';
  const fake = createHttpServer((req, res) => {
    res.writeHead(403, { 'content-type': 'application/xml' });
    res.end(req.method === 'HEAD' ? undefined : body);
  }).listen(0, '127.0.0.1');
  await once(fake, 'listening');
  const endpoint = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
  try {
    await withEnv({ PNEUMOTYPE_DEBUG: '1' }, async () => {
      await assert.rejects(
        upload({ data: dir, bucket: BUCKET, region: 'us-east-1', endpoint, client: new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'AKIAECHO', secretAccessKey: SECRET, sessionToken: token } }) }),
        (err: unknown) => {
          assert.ok(err instanceof UploadError, String(err));
          assert.equal(err.reason, 'credentials');
          assert.equal((err.cause as { name?: string }).name, 'SignatureDoesNotMatch');
          for (const shown of [inspect(err), inspect(err, { depth: 6, showHidden: true }), inspect(err, { depth: Infinity, customInspect: false, showHidden: true })]) {
            assert.ok(!shown.includes(token) && !shown.includes(signature), shown);
          }
          return true;
        },
      );
    });
  } finally {
    fake.close();
  }
});

test('a denied write stops the upload with the key and the permission it needs; no manifest object', async () => {
  const server = await startS3Server({ buckets: [BUCKET], denyWrite: (_bucket, key) => key.includes('/virus/') });
  try {
    const dir = await labelled('denied');
    const firstVirus = (await readManifest(dir)).find((row) => row.label === 'virus');
    assert.ok(firstVirus);
    await assert.rejects(
      upload({ data: dir, bucket: BUCKET, prefix: 'denied', region: 'us-east-1', client: server.client(), concurrency: 1 }),
      (err: unknown) => {
        assert.ok(err instanceof UploadError);
        assert.equal(err.reason, 'denied');
        assert.equal(err.key, `denied/${firstVirus.file}`);
        assert.equal(
          err.message,
          `access denied writing "s3://pneumotype-test/denied/${firstVirus.file}" (AccessDenied: Access Denied): the credentials need ` +
            's3:PutObject on "arn:aws:s3:::pneumotype-test/denied/*"; grant it or use another --bucket or --prefix; the upload is ' +
            'incomplete ("s3://pneumotype-test/denied/_pneumotype-upload.json" is written only after every file): run it again to resume',
        );
        assert.equal((err.cause as { name?: string }).name, 'AccessDenied');
        return true;
      },
    );
    const keys = await server.listKeys(BUCKET, 'denied/');
    assert.ok(!keys.includes('denied/_pneumotype-upload.json'));
    assert.ok(!keys.some((k) => k.includes('/virus/')));
    // A caller whose users set environment variables (the notebooks) gets them named instead of the CLI's flags.
    const settingNames = { bucket: 'MY_BUCKET', prefix: 'MY_PREFIX', region: 'MY_REGION', endpoint: 'MY_ENDPOINT', concurrency: 'MY_CONCURRENCY', relabel: 'my relabel' };
    await assert.rejects(
      upload({ data: dir, bucket: BUCKET, prefix: 'denied', region: 'us-east-1', client: server.client(), concurrency: 1, settingNames }),
      (err: unknown) => {
        assert.ok(err instanceof UploadError);
        assert.match(err.message, /; grant it or use another bucket or prefix \(MY_BUCKET, MY_PREFIX\); the upload is incomplete/);
        return true;
      },
    );
    assert.throws(() => checkUploadOptions({ bucket: BUCKET, concurrency: 0, settingNames }), {
      message: 'concurrency 0 is not a positive integer: set MY_CONCURRENCY=4 or so',
    });
    assert.throws(() => checkUploadOptions({ bucket: 'Bad_Bucket', settingNames }), {
      message: 'bucket "Bad_Bucket" is not a valid S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit): set MY_BUCKET=NAME',
    });
  } finally {
    await server.close();
  }
});

test('a failed upload leaves no incomplete multipart upload, whenever the failure comes; a re-run aborts what a killed one left', async () => {
  // manifest.csv is refused; the first file in rejected/ is 12 MiB, three parts of 5 MiB: multipart, and in flight then.
  let deny = true;
  let gate: Promise<void> = Promise.resolve();
  const server = await startS3Server({
    buckets: [BUCKET],
    secretAccessKey: SECRET,
    denyWrite: async (_bucket, key) => {
      if (!deny || !key.endsWith('/manifest.csv')) return false;
      await gate;
      return true;
    },
  });
  const dir = await labelled('orphans', { unlabeled: true });
  await writeFile(join(dir, 'rejected/train/aaa-large.jpeg'), randomBytes(12 * 1024 * 1024));
  const message = (prefix: string): string =>
    `access denied writing "s3://pneumotype-test/${prefix}/manifest.csv" (AccessDenied: Access Denied): the credentials need ` +
    `s3:PutObject on "arn:aws:s3:::pneumotype-test/${prefix}/*"; grant it or use another --bucket or --prefix; the upload is ` +
    `incomplete ("s3://pneumotype-test/${prefix}/_pneumotype-upload.json" is written only after every file): run it again to resume`;
  /**
   * Holds the large file's first reply of `operation` (S3 has acted, the client does not know yet); manifest.csv is
   * refused only then, and the reply goes once the client gave up on it (or after 0.5 s, when it waits for it).
   */
  const holdUntilDenied = (prefix: string, operation: string): (() => boolean) => {
    let holding: () => void = () => undefined;
    gate = Promise.race([new Promise<void>((resolve) => (holding = resolve)), delay(5000, undefined, { ref: false })]);
    let held = false;
    server.beforeReply = async (q, clientGone) => {
      if (held || q.operation !== operation || q.key !== `${prefix}/rejected/train/aaa-large.jpeg`) return;
      held = true;
      holding();
      await Promise.race([clientGone, delay(500, undefined, { ref: false })]);
    };
    return () => held;
  };
  const largeOps = (prefix: string): string[] => server.requests.filter((q) => q.key === `${prefix}/rejected/train/aaa-large.jpeg`).map((q) => q.operation);
  try {
    // 1. The failure comes while CreateMultipartUpload is on its way back: S3 created the upload; its UploadId must
    // still be learnt, and the upload aborted, before upload() rejects.
    const held1 = holdUntilDenied('orphans1', 'CreateMultipartUpload');
    await assert.rejects(
      upload({ data: dir, bucket: BUCKET, prefix: 'orphans1', region: 'us-east-1', client: server.client(), partSize: MIN_PART_SIZE, concurrency: 4 }),
      (err: unknown) => {
        assert.ok(err instanceof UploadError);
        assert.equal(err.reason, 'denied');
        assert.equal(err.message, message('orphans1'));
        return true;
      },
    );
    assert.ok(held1());
    assert.deepEqual(server.incompleteUploads(BUCKET), []);
    assert.deepEqual(largeOps('orphans1'), ['CreateMultipartUpload', 'AbortMultipartUpload']);

    // 2. The failure comes while a part is on its way, with the client upload() makes and destroys (an endpoint): the
    // abort was sent and answered before upload() rejected, not in the background after.
    const held2 = holdUntilDenied('orphans2', 'UploadPart');
    const none = join(tmp, 'no-such-aws-file');
    await withEnv({ AWS_CONFIG_FILE: none, AWS_SHARED_CREDENTIALS_FILE: none, AWS_PROFILE: undefined, AWS_ACCESS_KEY_ID: server.accessKeyId, AWS_SECRET_ACCESS_KEY: SECRET }, async () => {
      await assert.rejects(
        upload({ data: dir, bucket: BUCKET, prefix: 'orphans2', region: 'us-east-1', endpoint: server.endpoint, partSize: MIN_PART_SIZE, concurrency: 4 }),
        { name: 'UploadError', message: message('orphans2') },
      );
    });
    assert.ok(held2());
    assert.deepEqual(server.incompleteUploads(BUCKET), []);
    // (A part request the client dropped may still reach the server after the abort: it is answered NoSuchUpload.)
    assert.ok(largeOps('orphans2').includes('AbortMultipartUpload'));
    server.beforeReply = undefined;

    // 2b. The caller aborts after the denial, while upload() is still cleaning up (a part's answer held until the
    // client gives up on it): the denial is reported, not "aborted: run it again", which would only fail the same way.
    const caller = new AbortController();
    let stillHolding = false;
    let partHeld: () => void = () => undefined;
    // manifest.csv is refused once a part is held (or after 5 s, as in case 1: never a hang).
    gate = Promise.race([new Promise<void>((resolve) => (partHeld = resolve)), delay(5000, undefined, { ref: false })]);
    server.beforeReply = async (q, clientGone) => {
      if (stillHolding || q.operation !== 'UploadPart' || q.key !== 'orphans2b/rejected/train/aaa-large.jpeg') return;
      stillHolding = true;
      partHeld();
      await Promise.race([clientGone, delay(5000, undefined, { ref: false })]); // never a hang, whatever the client does
      caller.abort('the user pressed stop');
    };
    await assert.rejects(
      upload({ data: dir, bucket: BUCKET, prefix: 'orphans2b', region: 'us-east-1', client: server.client(), partSize: MIN_PART_SIZE, concurrency: 4, signal: caller.signal }),
      { name: 'UploadError', reason: 'denied', message: message('orphans2b') },
    );
    assert.ok(stillHolding && caller.signal.aborted);
    server.beforeReply = undefined;

    // 3. What a killed run left (no abort ever sent): the next run aborts it, and leaves other keys' uploads alone.
    deny = false;
    const admin = server.client();
    for (const key of ['orphans3/rejected/train/aaa-large.jpeg', 'orphans3/summary.json', 'orphans3/not-ours.bin', 'elsewhere/summary.json']) {
      await admin.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
    }
    const events: Progress[] = [];
    const r = await upload({ data: dir, bucket: BUCKET, prefix: 'orphans3', region: 'us-east-1', client: server.client(), partSize: MIN_PART_SIZE, onProgress: (p) => events.push(p) });
    assert.equal(r.uploaded, 14);
    assert.deepEqual(server.incompleteUploads(BUCKET).map((u) => u.key), ['elsewhere/summary.json', 'orphans3/not-ours.bin']);
    assert.ok(events.some((e) => e.message === '2 incomplete multipart upload(s) left by an earlier run aborted'), inspect(events.map((e) => e.message)));
  } finally {
    server.beforeReply = undefined;
    await server.close();
  }
});

test('the bucket region is checked before anything is written, from a redirect or from HeadBucket', async () => {
  const server = await startS3Server({ buckets: [BUCKET], region: 'eu-west-1' });
  const message =
    'bucket "pneumotype-test" is in "eu-west-1" but the upload targets "us-east-1": the narrative keeps data in the region the ' +
    'model is deployed to; pass --region eu-west-1 or use another bucket';
  try {
    const dir = await labelled('region');
    // Signed for us-east-1: S3 answers HeadBucket with a 301 naming the bucket's region.
    await assert.rejects(upload({ data: dir, bucket: BUCKET, region: 'us-east-1', client: server.client({ region: 'us-east-1' }) }), (err: unknown) => {
      assert.ok(err instanceof UploadError);
      assert.equal(err.reason, 'region');
      assert.equal(err.message, message);
      return true;
    });
    // A client signing for the bucket's region, but the upload targets another: HeadBucket's x-amz-bucket-region.
    await assert.rejects(upload({ data: dir, bucket: BUCKET, region: 'us-east-1', client: server.client({ region: 'eu-west-1' }) }), { message });
    assert.deepEqual(await server.listKeys(BUCKET), []);
    assert.ok(!server.requests.some((q) => q.operation === 'PutObject'));

    const r = await upload({ data: dir, bucket: BUCKET, prefix: 'ok', region: 'eu-west-1', client: server.client({ region: 'eu-west-1' }) });
    assert.equal(r.region, 'eu-west-1');
    assert.equal(r.manifest.region, 'eu-west-1');
    assert.equal(r.uploaded, 11);
  } finally {
    await server.close();
  }
});

test('checkBucketRegion and bucketRegionFrom compare regions as S3 names them', () => {
  assert.equal(bucketRegionFrom(''), 'us-east-1');
  assert.equal(bucketRegionFrom(undefined), 'us-east-1');
  assert.equal(bucketRegionFrom('EU'), 'eu-west-1');
  assert.equal(bucketRegionFrom('ap-south-1'), 'ap-south-1');
  checkBucketRegion({ bucket: 'scans', bucketRegion: 'eu-west-1', targetRegion: 'eu-west-1' });
  checkBucketRegion({ bucket: 'scans', bucketRegion: undefined, targetRegion: 'eu-west-1' });
  assert.throws(() => checkBucketRegion({ bucket: 'scans', bucketRegion: 'us-west-2', targetRegion: 'eu-central-1' }), {
    name: 'UploadError',
    message:
      'bucket "scans" is in "us-west-2" but the upload targets "eu-central-1": the narrative keeps data in the region the model is ' +
      'deployed to; pass --region us-west-2 or use another bucket',
  });
});

test('planUpload skips same size and MD5 (ETag or x-amz-meta-md5), verifies other ETags, uploads the rest', () => {
  const file = (name: string, bytes: number, m: string): LocalFile => ({ file: name, path: `/x/${name}`, bytes, md5: m, sha256: 's' });
  const a = file('a.jpeg', 10, 'aaaa');
  const b = file('b.jpeg', 20, 'bbbb');
  const c = file('c.jpeg', 30, 'cccc');
  const d = file('d.jpeg', 40, 'dddd');
  const e = file('e.jpeg', 50, 'eeee');
  const f = file('f.jpeg', 60, 'ffff');
  const remote = new Map<string, RemoteObject>([
    ['p/a.jpeg', { key: 'p/a.jpeg', bytes: 10, etag: 'aaaa', lastModified: undefined }],
    ['p/b.jpeg', { key: 'p/b.jpeg', bytes: 21, etag: 'bbbb', lastModified: undefined }],
    ['p/c.jpeg', { key: 'p/c.jpeg', bytes: 30, etag: '0123-2', lastModified: undefined }],
    ['p/d.jpeg', { key: 'p/d.jpeg', bytes: 40, etag: '0123-2', lastModified: undefined, md5: 'dddd' }],
    ['p/e.jpeg', { key: 'p/e.jpeg', bytes: 50, etag: '0123-2', lastModified: undefined, md5: 'old!' }],
  ]);
  const plan = planUpload({ prefix: 'p', files: [a, b, c, d, e, f], remote });
  assert.deepEqual(plan.upload.map((x) => x.file), ['b.jpeg', 'e.jpeg', 'f.jpeg']);
  assert.deepEqual(plan.skip.map((x) => x.local.file), ['a.jpeg', 'd.jpeg']);
  assert.deepEqual(plan.verify.map((x) => x.local.file), ['c.jpeg']);
  // A single-part ETag that is not the MD5: HeadObject decides. Without SSE-KMS that ETag is the content's MD5, so an
  // x-amz-meta-md5 claiming otherwise is not believed; with SSE-KMS the ETag says nothing and the metadata decides.
  const hex = (ch: string): string => ch.repeat(32);
  const g = file('g.jpeg', 70, hex('1'));
  const h = file('h.jpeg', 80, hex('2'));
  const i = file('i.jpeg', 90, hex('3'));
  const headed = planUpload({
    prefix: 'p',
    files: [g, h, i],
    remote: new Map<string, RemoteObject>([
      ['p/g.jpeg', { key: 'p/g.jpeg', bytes: 70, etag: hex('9'), lastModified: undefined, md5: hex('1'), encryption: 'AES256' }],
      ['p/h.jpeg', { key: 'p/h.jpeg', bytes: 80, etag: hex('9'), lastModified: undefined, md5: hex('2'), encryption: 'aws:kms' }],
      ['p/i.jpeg', { key: 'p/i.jpeg', bytes: 90, etag: hex('9'), lastModified: undefined }],
    ]),
  });
  assert.deepEqual([headed.upload.map((x) => x.file), headed.skip.map((x) => x.local.file), headed.verify.map((x) => x.local.file)], [['g.jpeg'], ['h.jpeg'], ['i.jpeg']]);
  assert.equal(objectKey('', 'manifest.csv'), 'manifest.csv');
  assert.equal(normalizePrefix('/datasets/chest-xray/'), 'datasets/chest-xray');
});

test('bad options and a missing dataset are refused before any request', async () => {
  const client = s3.client();
  const before = s3.requests.length;
  const dir = join(tmp, 'nothing-here');
  const cases: [Parameters<typeof upload>[0], string][] = [
    [{ bucket: 'No_Such', client },
      'bucket "No_Such" is not a valid S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a ' +
        'letter or digit): pass --bucket NAME'],
    [{ bucket: BUCKET, client, prefix: 'a/../b' }, 'prefix "a/../b" has an empty, "." or ".." segment or a backslash: pass --prefix like "datasets/chest-xray"'],
    [{ bucket: BUCKET, client, partSize: 1024 * 1024 }, "part size 1048576 is outside S3's limits for multipart parts (5242880 to 5368709120 bytes, 5 MiB to 5 GiB)"],
    [{ bucket: BUCKET, client, concurrency: 0 }, 'concurrency 0 is not a positive integer: pass --concurrency 4 or so'],
    [{ bucket: BUCKET, endpoint: 'ftp://user:pw@example.test/' }, 'endpoint "ftp://example.test" is not an http(s) URL: pass --endpoint like "http://127.0.0.1:9000"'],
  ];
  for (const [options, message] of cases) {
    await assert.rejects(upload({ data: dir, ...options }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, message);
      return true;
    });
  }
  await assert.rejects(upload({ data: dir, bucket: BUCKET, region: 'us-east-1', client }), (err: unknown) => {
    assert.ok(err instanceof LabelError);
    assert.equal(err.message, `no manifest at "${join(dir, 'manifest.csv')}": run \`pneumotype relabel\` first`);
    return true;
  });
  assert.equal(s3.requests.length, before);
});

test('checkUploadOptions takes every AWS region name shape, and any plain name at an endpoint of its own', () => {
  for (const region of ['us-east-1', 'eu-central-2', 'ap-southeast-5', 'il-central-1', 'us-gov-west-1', 'cn-northwest-1', 'us-isob-east-1', 'eusc-de-east-1']) {
    assert.deepEqual(checkUploadOptions({ data: 'd', bucket: 'my-bucket', region }), { prefix: '', concurrency: 4, partSize: 8 * 1024 * 1024 }, region);
  }
  for (const region of ['', 'US-EAST-1', 'us-east', 'useast1', 'us_east_1', 'eu-west-1 ']) {
    assert.throws(() => checkUploadOptions({ data: 'd', bucket: 'my-bucket', region }), {
      name: 'ConfigError',
      message: `region ${JSON.stringify(region)} is not an AWS region name: pass --region like "eu-west-1"`,
    });
  }
  // MinIO, Ceph and the like: regions named as their operators like, but never empty.
  assert.equal(checkUploadOptions({ data: 'd', bucket: 'my-bucket', region: 'garage', endpoint: 'http://127.0.0.1:9000' }).prefix, '');
  assert.throws(() => checkUploadOptions({ data: 'd', bucket: 'my-bucket', region: '', endpoint: 'http://127.0.0.1:9000' }), {
    name: 'ConfigError',
    message: 'region "" is not a region name: pass --region like "eu-west-1"',
  });
  // The endpoint may come from the environment, as the SDK reads it (unless told to ignore it).
  const saved = { s3: process.env.AWS_ENDPOINT_URL_S3, ignore: process.env.AWS_IGNORE_CONFIGURED_ENDPOINT_URLS };
  try {
    process.env.AWS_ENDPOINT_URL_S3 = 'http://127.0.0.1:9000';
    assert.equal(checkUploadOptions({ data: 'd', bucket: 'my-bucket', region: 'garage' }).prefix, '');
    process.env.AWS_IGNORE_CONFIGURED_ENDPOINT_URLS = 'true';
    assert.throws(() => checkUploadOptions({ data: 'd', bucket: 'my-bucket', region: 'garage' }), {
      name: 'ConfigError',
      message: 'region "garage" is not an AWS region name: pass --region like "eu-west-1"',
    });
  } finally {
    for (const [name, value] of [['AWS_ENDPOINT_URL_S3', saved.s3], ['AWS_IGNORE_CONFIGURED_ENDPOINT_URLS', saved.ignore]] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
});
