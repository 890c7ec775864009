import assert from 'node:assert/strict';
import AdmZip from 'adm-zip';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { SOURCES } from '../lib/config.js';
import { ArchiveError, BusyError, ConfigError, FetchError, IntegrityError } from '../lib/errors.js';
import { backoffDelay, fetchDataset, isCertificateError, maskUserInfo, obtainDataset, parseRetryAfter, proxyFor, resolveSource, sameUrl, shownUrl } from '../lib/fetch.js';
import type { Progress } from '../lib/progress.js';
import { sendLongBody, startFileServer } from './helpers/http-server.js';

/** A real zip of about `bytes` bytes (one stored entry of random bytes): downloads are checked to be zip archives. */
function zipOf(bytes: number): Buffer {
  const zip = new AdmZip();
  zip.addFile('chest_xray/blob.bin', randomBytes(bytes));
  const entry = zip.getEntry('chest_xray/blob.bin');
  if (entry) entry.header.method = 0;
  return zip.toBuffer();
}
const DATA = zipOf(300_000);
const OTHER = zipOf(280_000);
const hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const FAST = { backoffMs: 1, timeoutMs: 5_000 } as const;

let root: string;
let n = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'pneumotype-fetch-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});
async function freshDir(): Promise<string> {
  const dir = join(root, `t${n++}`);
  await mkdir(dir);
  return dir;
}

test('fresh download: saved under the URL name, hashed, recorded, no leftovers, monotonic progress', async () => {
  const server = await startFileServer({ data: DATA });
  try {
    const outDir = await freshDir();
    const events: Progress[] = [];
    const r = await fetchDataset({ outDir, env: { PNEUMOTYPE_SOURCE: server.url }, onProgress: (p) => events.push(p), ...FAST });
    assert.deepEqual(r, {
      path: join(outDir, 'data.zip'),
      bytes: DATA.length,
      sha256: hex(DATA),
      source: server.url,
      url: server.url,
      resumed: false,
      downloaded: true,
    });
    assert.deepEqual(await readFile(r.path), DATA);
    assert.equal(await readFile(`${r.path}.sha256`, 'utf8'), `${hex(DATA)}  data.zip\n# source: ${server.url}\n`);
    assert.deepEqual((await readdir(outDir)).sort(), ['data.zip', 'data.zip.sha256']);
    assert.equal(server.requests.length, 1);
    assert.equal(server.requests[0]?.range, undefined);
    assert.ok(events.length >= 2);
    for (let i = 1; i < events.length; i++) assert.ok((events[i]?.done ?? 0) >= (events[i - 1]?.done ?? 0), 'done never decreases');
    const last = events.at(-1);
    assert.equal(last?.stage, 'fetch');
    assert.equal(last?.unit, 'bytes');
    assert.equal(last?.done, DATA.length);
    assert.equal(last?.total, DATA.length);
  } finally {
    await server.close();
  }
});

test('a cut connection is resumed with Range + If-Range and the file is byte-identical', async () => {
  const server = await startFileServer({ data: DATA, cutAfterBytes: 100_000, etag: '"abc"' });
  try {
    const outDir = await freshDir();
    const events: Progress[] = [];
    const r = await fetchDataset({ source: server.url, outDir, fileName: 'x.zip', onProgress: (p) => events.push(p), ...FAST });
    assert.equal(r.resumed, true);
    assert.equal(r.path, join(outDir, 'x.zip'));
    assert.deepEqual(await readFile(r.path), DATA);
    assert.equal(r.sha256, hex(DATA));
    assert.equal(server.requests.length, 2);
    const second = server.requests[1];
    assert.match(second?.range ?? '', /^bytes=[1-9]\d*-$/);
    assert.equal(second?.ifRange, '"abc"');
    assert.ok(events.some((e) => e.message?.startsWith('retry 1 of 5 in ')));
    assert.ok(events.some((e) => e.message?.startsWith('resuming at ')));
    assert.deepEqual((await readdir(outDir)).sort(), ['x.zip', 'x.zip.sha256']);
  } finally {
    await server.close();
  }
});

test('a later run resumes the .part left by a failed one (hashing what is on disk first)', async () => {
  const server = await startFileServer({ data: DATA, cutAfterBytes: 120_000 });
  try {
    const outDir = await freshDir();
    const part = join(outDir, 'data.zip.part');
    await assert.rejects(fetchDataset({ source: server.url, outDir, retries: 0, ...FAST }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.match(err.message, new RegExp(`^Download of "${server.url}" failed after 1 attempt: .+; the partial file "${part}" is kept for resuming$`));
      return true;
    });
    const sidecar = JSON.parse(await readFile(`${part}.json`, 'utf8')) as Record<string, unknown>;
    assert.equal(sidecar.url, server.url);
    assert.equal(sidecar.total, DATA.length);
    assert.equal(typeof sidecar.etag, 'string');
    const r = await fetchDataset({ source: server.url, outDir, sha256: hex(DATA), ...FAST });
    assert.equal(r.resumed, true);
    assert.equal(r.downloaded, true);
    assert.deepEqual(await readFile(r.path), DATA);
    assert.match(server.requests[1]?.range ?? '', /^bytes=[1-9]\d*-$/);
  } finally {
    await server.close();
  }
});

test('a server that ignores Range: the download restarts from zero', async () => {
  const server = await startFileServer({ data: DATA, cutAfterBytes: 100_000, ignoreRange: true });
  try {
    const outDir = await freshDir();
    const events: Progress[] = [];
    const r = await fetchDataset({ source: server.url, outDir, onProgress: (p) => events.push(p), ...FAST });
    assert.equal(r.resumed, false);
    assert.deepEqual(await readFile(r.path), DATA);
    assert.ok(server.requests[1]?.range !== undefined, 'a Range request was tried');
    assert.ok(events.some((e) => e.message === 'the server ignored the Range request; restarting from zero'));
  } finally {
    await server.close();
  }
});

test('a file changed on the server between runs (new ETag): restart from zero with the new content', async () => {
  const server = await startFileServer({ data: DATA, cutAfterBytes: 100_000, etag: '"one"' });
  try {
    const outDir = await freshDir();
    await assert.rejects(fetchDataset({ source: server.url, outDir, retries: 0, ...FAST }), FetchError);
    server.setData(OTHER, '"two"');
    const events: Progress[] = [];
    const r = await fetchDataset({ source: server.url, outDir, onProgress: (p) => events.push(p), ...FAST });
    assert.equal(r.resumed, false);
    assert.deepEqual(await readFile(r.path), OTHER);
    assert.equal(server.requests[1]?.ifRange, '"one"');
    assert.ok(events.some((e) => e.message === 'the file changed on the server (ETag "one" is now "two"); restarting from zero'));
  } finally {
    await server.close();
  }
});

test('503s are retried with backoff (Retry-After honoured) until the download succeeds', async () => {
  const server = await startFileServer({ data: DATA, failFirst: 2 });
  try {
    const outDir = await freshDir();
    const events: Progress[] = [];
    const r = await fetchDataset({ source: server.url, outDir, onProgress: (p) => events.push(p), ...FAST });
    assert.deepEqual(await readFile(r.path), DATA);
    assert.equal(server.requests.length, 3);
    assert.deepEqual(
      events.filter((e) => e.message?.startsWith('retry')).map((e) => e.message?.replace(/ in \d+ ms/, '')),
      ['retry 1 of 5: HTTP 503 Service Unavailable', 'retry 2 of 5: HTTP 503 Service Unavailable'],
    );
  } finally {
    await server.close();
  }
});

test('retries run out: FetchError with the last status; no partial file, none named', async () => {
  const server = await startFileServer({ data: DATA, failFirst: 10 });
  try {
    const outDir = await freshDir();
    const part = join(outDir, 'data.zip.part');
    await assert.rejects(fetchDataset({ source: server.url, outDir, retries: 2, ...FAST }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.equal(
        err.message,
        `Download of "${server.url}" failed after 3 attempts: HTTP 503 Service Unavailable`,
      );
      assert.equal(err.status, 503);
      return true;
    });
    assert.equal(server.requests.length, 3);
    assert.equal(existsSync(part), false);
  } finally {
    await server.close();
  }
});

test('a stalled connection times out and is resumed', async () => {
  const server = await startFileServer({ data: DATA, stallAfterBytes: 50_000 });
  try {
    const outDir = await freshDir();
    const events: Progress[] = [];
    const r = await fetchDataset({ source: server.url, outDir, onProgress: (p) => events.push(p), backoffMs: 1, timeoutMs: 200 });
    assert.deepEqual(await readFile(r.path), DATA);
    assert.equal(r.resumed, true);
    assert.ok(events.some((e) => /^retry 1 of 5 in \d+ ms: no data for 200 ms$/.test(e.message ?? '')));
  } finally {
    await server.close();
  }
});

test('404 is a FetchError at once, with status and URL', async () => {
  const server = await startFileServer({ data: DATA });
  try {
    const outDir = await freshDir();
    const url = `${server.origin}/missing.zip`;
    await assert.rejects(fetchDataset({ source: url, outDir, ...FAST }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.equal(err.message, `Cannot download "${url}": the server answered HTTP 404 Not Found`);
      assert.equal(err.status, 404);
      assert.equal(err.url, url);
      return true;
    });
    assert.equal(server.requests.length, 1);
  } finally {
    await server.close();
  }
});

test('SHA-256 mismatch: IntegrityError naming both digests, the download kept as NAME.bad', async () => {
  const server = await startFileServer({ data: DATA });
  try {
    const outDir = await freshDir();
    const wrong = 'a'.repeat(64);
    const bad = join(outDir, 'data.zip.bad');
    await assert.rejects(fetchDataset({ source: server.url, outDir, sha256: wrong, ...FAST }), (err: unknown) => {
      assert.ok(err instanceof IntegrityError);
      assert.equal(err.message, `SHA-256 of "${server.url}" is ${hex(DATA)}, expected ${wrong}; the download was kept as "${bad}"`);
      assert.equal(err.expected, wrong);
      assert.equal(err.actual, hex(DATA));
      return true;
    });
    assert.deepEqual(await readFile(bad), DATA);
    assert.deepEqual(await readdir(outDir), ['data.zip.bad']);
  } finally {
    await server.close();
  }
});

test('a second call finds the verified file and makes no request', async () => {
  const server = await startFileServer({ data: DATA });
  try {
    const outDir = await freshDir();
    const first = await fetchDataset({ source: server.url, outDir, ...FAST });
    const count = server.requests.length;
    const second = await fetchDataset({ source: server.url, outDir, ...FAST });
    const third = await fetchDataset({ source: server.url, outDir, sha256: hex(DATA).toUpperCase(), ...FAST });
    assert.equal(server.requests.length, count);
    for (const r of [second, third]) {
      assert.equal(r.downloaded, false);
      assert.equal(r.path, first.path);
      assert.equal(r.sha256, first.sha256);
      assert.equal(r.bytes, DATA.length);
    }
  } finally {
    await server.close();
  }
});

test('an existing file that no longer matches its recorded SHA-256 is moved aside and downloaded again', async () => {
  const server = await startFileServer({ data: DATA });
  try {
    const outDir = await freshDir();
    const path = join(outDir, 'data.zip');
    const corrupt = Buffer.from(DATA);
    corrupt[1000] = (corrupt[1000] ?? 0) ^ 0xff;
    await writeFile(path, corrupt);
    await writeFile(`${path}.sha256`, `${hex(DATA)}  data.zip\n`);
    const events: Progress[] = [];
    const r = await fetchDataset({ source: server.url, outDir, onProgress: (p) => events.push(p), ...FAST });
    assert.equal(r.downloaded, true);
    assert.deepEqual(await readFile(path), DATA);
    assert.deepEqual(await readFile(`${path}.bad`), corrupt);
    assert.ok(events.some((e) => e.message === `existing data.zip has SHA-256 ${hex(corrupt)}, expected ${hex(DATA)}; moved to ${path}.bad, downloading again`));
  } finally {
    await server.close();
  }
});

test('an existing file that matches its record but not the --sha256 given is an error: nothing is moved or downloaded', async () => {
  const server = await startFileServer({ data: DATA });
  try {
    const outDir = await freshDir();
    const path = join(outDir, 'data.zip');
    await writeFile(path, DATA);
    await writeFile(`${path}.sha256`, `${hex(DATA)}  data.zip\n`);
    const wrong = 'ab'.repeat(32);
    await assert.rejects(fetchDataset({ source: server.url, outDir, sha256: wrong, ...FAST }), {
      name: 'IntegrityError',
      message: `"${path}" has SHA-256 ${hex(DATA)}, as recorded when it was downloaded, not the ${wrong} asked for: ` +
        'check the expected digest, or move the file away to download it again; nothing was changed',
    });
    assert.equal(server.requests.length, 0);
    assert.deepEqual((await readdir(outDir)).sort(), ['data.zip', 'data.zip.sha256']);
  } finally {
    await server.close();
  }
});

test('an existing file never verified (no record) that is cut short is moved aside and downloaded again', async () => {
  const server = await startFileServer({ data: DATA });
  try {
    const outDir = await freshDir();
    const path = join(outDir, 'data.zip');
    const cut = DATA.subarray(0, 100_000);
    await writeFile(path, cut);
    const events: Progress[] = [];
    const r = await fetchDataset({ source: server.url, outDir, onProgress: (p) => events.push(p), ...FAST });
    assert.equal(r.downloaded, true);
    assert.deepEqual(await readFile(path), DATA);
    assert.deepEqual(await readFile(`${path}.bad`), cut);
    assert.ok(events.some((e) => e.message === `existing data.zip (97.7 KiB, never verified) does not end as a zip archive does; moved to ${path}.bad, downloading again`), JSON.stringify(events.map((e) => e.message)));
    // A whole one without a record is verified and recorded, not downloaded.
    await rm(`${path}.sha256`);
    const again = await fetchDataset({ source: server.url, outDir, ...FAST });
    assert.equal(again.downloaded, false);
    assert.equal(server.requests.length, 1);
    assert.equal(await readFile(`${path}.sha256`, 'utf8'), `${hex(DATA)}  data.zip\n# source: ${server.url}\n`);
  } finally {
    await server.close();
  }
});

test('a file-backed server streams from disk and resumes like a buffer-backed one', async () => {
  const dir = await freshDir();
  const file = join(dir, 'ZhangLabData.zip');
  await writeFile(file, DATA);
  const server = await startFileServer({ file, cutAfterBytes: 70_000 });
  try {
    const r = await fetchDataset({ source: server.url, outDir: join(dir, 'out'), ...FAST });
    assert.equal(r.path, join(dir, 'out', 'ZhangLabData.zip'));
    assert.equal(r.resumed, true);
    assert.deepEqual(await readFile(r.path), DATA);
    assert.deepEqual(await readFile(file), DATA);
  } finally {
    await server.close();
  }
});

test('a complete .part answered with 416 is verified and finished without downloading again', async () => {
  const server = await startFileServer({ data: DATA, etag: '"e1"' });
  try {
    const outDir = await freshDir();
    const part = join(outDir, 'data.zip.part');
    await writeFile(part, DATA);
    await writeFile(`${part}.json`, JSON.stringify({ url: server.url, etag: '"e1"', total: DATA.length }));
    const r = await fetchDataset({ source: server.url, outDir, sha256: hex(DATA), ...FAST });
    assert.equal(r.downloaded, true);
    assert.deepEqual(await readFile(r.path), DATA);
    assert.equal(server.requests.length, 1);
    assert.equal(server.requests[0]?.range, `bytes=${DATA.length}-`);
    assert.equal(server.bytesSent, 0);
    assert.deepEqual((await readdir(outDir)).sort(), ['data.zip', 'data.zip.sha256']);
  } finally {
    await server.close();
  }
});

test('a local path is verified and returned as is', async () => {
  const dir = await freshDir();
  const path = join(dir, 'ChestXRay2017.zip');
  await writeFile(path, DATA);
  const r = await fetchDataset({ source: path, outDir: join(dir, 'out'), sha256: hex(DATA) });
  assert.deepEqual(r, { path, bytes: DATA.length, sha256: hex(DATA), source: path, resumed: false, downloaded: false });
  const wrong = '0'.repeat(64);
  await assert.rejects(fetchDataset({ source: path, sha256: wrong }), (err: unknown) => {
    assert.ok(err instanceof IntegrityError);
    assert.equal(err.message, `SHA-256 of "${path}" is ${hex(DATA)}, expected ${wrong}`);
    return true;
  });
  assert.deepEqual(await readFile(path), DATA);
  assert.deepEqual((await readdir(dir)).sort(), ['ChestXRay2017.zip']);
  await assert.rejects(fetchDataset({ source: dir }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(
      err.message,
      `Dataset source "${dir}" is a folder: fetch takes a zip archive; an extracted copy needs no fetch: give it to \`relabel --from\`, as the source of \`run\` or to \`obtainDataset\` (the notebooks' PNEUMOTYPE_SOURCE), which read it as it is`,
    );
    return true;
  });
  // obtainDataset (the notebooks' first step): a folder as it is, an archive verified as fetchDataset does, from the
  // option or PNEUMOTYPE_SOURCE.
  assert.deepEqual(await obtainDataset({ source: dir }), { kind: 'folder', path: dir, source: dir });
  assert.deepEqual(await obtainDataset({ env: { PNEUMOTYPE_SOURCE: dir } }), { kind: 'folder', path: dir, source: dir });
  assert.deepEqual(await obtainDataset({ source: path }), { kind: 'archive', path, bytes: DATA.length, sha256: hex(DATA), source: path, resumed: false, downloaded: false });
  // Not a zip, or a zip cut short: refused before the hash, the file left as it is.
  for (const [name, bytes] of [['notes.zip', Buffer.from('not a zip\n')], ['tiny.zip', Buffer.from('PK')], ['cut.zip', DATA.subarray(0, 100_000)]] as const) {
    const bad = join(dir, name);
    await writeFile(bad, bytes);
    await assert.rejects(fetchDataset({ source: bad }), (err: unknown) => {
      assert.ok(err instanceof ArchiveError);
      assert.equal(err.message, `Dataset source "${bad}" is not a complete zip archive (it has no end of central directory record: not a zip, or cut short): expected the dataset's zip or a copy in its layout`);
      return true;
    });
    assert.deepEqual(await readFile(bad), bytes);
  }
  // A zip behind a stub (a self-extracting archive) is a zip all the same.
  const stubbed = join(dir, 'stubbed.zip');
  await writeFile(stubbed, Buffer.concat([Buffer.from('#!/bin/sh\nexit 0\n'), DATA]));
  assert.equal((await fetchDataset({ source: stubbed })).bytes, DATA.length + 17);
});

test('bad source strings, SHA-256 values and file names are ConfigErrors', async () => {
  await assert.rejects(fetchDataset({ source: 'v9' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.message, 'Unknown dataset source "v9": expected "v2" or "v3", an http(s) URL, or the path of an existing zip file (run, relabel, evaluate and the notebooks also take an extracted folder)');
    return true;
  });
  // A path that is not there is said to be missing, not an unknown kind of source.
  for (const missing of ['downloads/ChestXRay2017.zip', 'ChestXRay2017.ZIP']) {
    await assert.rejects(fetchDataset({ source: missing }), {
      name: 'ConfigError',
      message: `Dataset source "${missing}" does not exist: expected the path of an existing zip file (run, relabel, evaluate and the notebooks also take an extracted folder), "v2" or "v3", or an http(s) URL`,
    });
  }
  await assert.rejects(fetchDataset({ source: 'v2', sha256: 'xyz' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.message, 'SHA-256 "xyz" is not 64 hexadecimal digits');
    return true;
  });
  await assert.rejects(fetchDataset({ source: 'http://127.0.0.1:9/a.zip', fileName: '../a.zip' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.message, 'File name "../a.zip" is not a plain file name: expected a name without folders');
    return true;
  });
});

test('resolveSource classifies known names, URLs and paths', () => {
  assert.deepEqual(resolveSource('v3'), { kind: 'known', known: SOURCES.v3 });
  assert.deepEqual(resolveSource('https://example.org/a b.zip'), { kind: 'url', url: 'https://example.org/a%20b.zip' });
  assert.deepEqual(resolveSource('.'), { kind: 'path', path: '.' });
  const zipPath = 'the path of an existing zip file (run, relabel, evaluate and the notebooks also take an extracted folder)';
  assert.throws(() => resolveSource('ftp://example.org/a.zip'), {
    name: 'ConfigError',
    message: `Dataset source "ftp://example.org/a.zip" is a ftp: URL: only http(s) URLs are downloaded; expected "v2" or "v3", an http(s) URL, or ${zipPath}`,
  });
  assert.throws(() => resolveSource('s3://user:secret@bucket/a.zip'), {
    name: 'ConfigError',
    message: `Dataset source "s3://***@bucket/a.zip" is a s3: URL: only http(s) URLs are downloaded; expected "v2" or "v3", an http(s) URL, or ${zipPath}`,
  });
  assert.throws(() => resolveSource('toString'), {
    name: 'ConfigError',
    message: `Unknown dataset source "toString": expected "v2" or "v3", an http(s) URL, or ${zipPath}`,
  });
});

test('an aborted signal stops the download with a FetchError (no partial file, none named)', async () => {
  const outDir = await freshDir();
  const url = 'http://127.0.0.1:9/a.zip';
  await assert.rejects(fetchDataset({ source: url, outDir, signal: AbortSignal.abort() }), (err: unknown) => {
    assert.ok(err instanceof FetchError);
    assert.equal(err.message, `Download of "${url}" was aborted`);
    return true;
  });
});

test('proxyFor: scheme variables, lowercase first, loopback and NO_PROXY bypass', () => {
  const env = { HTTPS_PROXY: 'http://proxy:3128', http_proxy: 'proxy2:8080', HTTP_PROXY: 'http://ignored:1' };
  assert.equal(proxyFor('https://data.mendeley.com/x.zip', env), 'http://proxy:3128');
  assert.equal(proxyFor('http://data.mendeley.com/x.zip', env), 'http://proxy2:8080');
  assert.equal(proxyFor('https://a.example/x', { https_proxy: 'http://lower:1', HTTPS_PROXY: 'http://upper:1' }), 'http://lower:1');
  assert.equal(proxyFor('https://a.example/x', { ALL_PROXY: 'http://all:1' }), 'http://all:1');
  assert.equal(proxyFor('https://a.example/x', {}), undefined);
  for (const host of ['127.0.0.1', 'localhost', '[::1]', '127.1.2.3']) {
    assert.equal(proxyFor(`http://${host}:8080/x`, env), undefined, host);
  }
  const cases: Array<[string, string, boolean]> = [
    ['mendeley.com', 'https://data.mendeley.com/x', true],
    ['.mendeley.com', 'https://data.mendeley.com/x', true],
    ['*.mendeley.com', 'https://mendeley.com/x', true],
    ['mendeley.com', 'https://notmendeley.com/x', false],
    ['other.org, data.mendeley.com', 'https://data.mendeley.com/x', true],
    ['data.mendeley.com:443', 'https://data.mendeley.com/x', true],
    ['data.mendeley.com:8443', 'https://data.mendeley.com/x', false],
    ['*', 'https://anything.example/x', true],
    ['', 'https://data.mendeley.com/x', false],
  ];
  for (const [noProxy, url, bypass] of cases) {
    assert.equal(proxyFor(url, { ...env, NO_PROXY: noProxy }) === undefined, bypass, `${noProxy} vs ${url}`);
    assert.equal(proxyFor(url, { ...env, no_proxy: noProxy }) === undefined, bypass, `${noProxy} vs ${url} (lowercase)`);
  }
});

test('backoff doubles with jitter; Retry-After takes seconds or a date', () => {
  assert.equal(backoffDelay(100, 1, () => 0.5), 100);
  assert.equal(backoffDelay(100, 3, () => 0.5), 400);
  assert.equal(backoffDelay(100, 3, () => 0), 200);
  assert.equal(parseRetryAfter('7'), 7000);
  assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6000);
  assert.equal(parseRetryAfter('soon'), undefined);
  assert.equal(parseRetryAfter(null), undefined);
});

test('HTTP_PROXY is honoured: the request goes through a real loopback forward proxy', async () => {
  const server = await startFileServer({ data: DATA });
  const upstream = new URL(server.origin);
  const seen: string[] = [];
  const proxy: Server = createServer((req, res) => {
    seen.push(req.url ?? '');
    const target = new URL(req.url ?? '/');
    const up = request(
      { host: upstream.hostname, port: upstream.port, path: target.pathname, method: req.method, headers: { ...req.headers, host: upstream.host } },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  try {
    const outDir = await freshDir();
    const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    // `.invalid` never resolves: only the proxy can answer for it.
    const url = 'http://dataset.invalid/data.zip';
    const r = await fetchDataset({ source: url, outDir, env: { HTTP_PROXY: proxyUrl }, ...FAST });
    assert.deepEqual(await readFile(r.path), DATA);
    assert.deepEqual(seen, [url]);
    assert.equal(server.requests.length, 1);
  } finally {
    proxy.closeAllConnections();
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
    await server.close();
  }
});

/** A loopback server answering each request with `handle(request number, ...)`; `close()` it in `finally`. */
async function serveWith(
  handle: (n: number, req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void,
): Promise<{ url: string; ranges: (string | undefined)[]; close: () => Promise<void> }> {
  const ranges: (string | undefined)[] = [];
  const server = createServer((req, res) => {
    ranges.push(req.headers.range);
    handle(ranges.length, req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/data.zip`,
    ranges,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Sends `bytes` of `body` as a 200 (or the given status) with these headers, then cuts the connection. */
function sendCut(res: import('node:http').ServerResponse, body: Buffer, bytes: number, headers: Record<string, string | number>, status = 200): void {
  res.writeHead(status, headers);
  // Destroyed a while after the bytes were flushed, so that the client has read and written them all before the cut
  // (50 ms was once too little on a loaded machine: the client had 65,398 of the 100,000 bytes on disk).
  res.write(body.subarray(0, bytes), () => setTimeout(() => res.destroy(), 250));
}

test('an HTML page instead of the archive (a captive portal) is refused; a partial download is kept, a fresh one never written', async () => {
  // Cut after 100,000 bytes; then the network answers every request with its login page.
  const portal = await serveWith((n, _req, res) => {
    if (n === 1) sendCut(res, DATA, 100_000, { 'Content-Length': DATA.length, ETag: '"a"' });
    else res.writeHead(200, { 'Content-Type': 'text/html' }).end('<html><body>Log in to the Wi-Fi</body></html>');
  });
  try {
    const outDir = await freshDir();
    const part = join(outDir, 'data.zip.part');
    await assert.rejects(fetchDataset({ source: portal.url, outDir, retries: 3, ...FAST }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.equal(err.message, `"${portal.url}" answered with an HTML or XML page (it starts with "<html><body>Log in to the Wi-Fi<", ` +
        'Content-Type "text/html"), not a zip archive: a captive portal, ' +
        `a login or an error page? Open the URL in a browser, then run again; the partial file "${part}" (97.7 KiB) is kept`);
      return true;
    });
    assert.deepEqual(await readFile(part), DATA.subarray(0, 100_000));
    assert.deepEqual(portal.ranges, [undefined, 'bytes=100000-']);
  } finally {
    await portal.close();
  }
  // Without a Content-Type: the body's first bytes give it away.
  const page = await serveWith((_n, _req, res) => res.writeHead(200).end('<!DOCTYPE html>\n<html>Access denied</html>'));
  try {
    const outDir = await freshDir();
    await assert.rejects(fetchDataset({ source: page.url, outDir, ...FAST }), {
      message: `"${page.url}" answered with an HTML or XML page (it starts with "<!DOCTYPE html>.<html>Access den"), not a zip archive: ` +
        'a captive portal, a login or an error page? Open the URL in a browser, then run again',
    });
    assert.deepEqual(await readdir(outDir), []);
  } finally {
    await page.close();
  }
});

test('retries run out against a server that cuts every response and cannot resume', async () => {
  const server = await startFileServer({ data: DATA, cutAfterBytes: 100_000, cutTimes: 1_000, ignoreRange: true });
  try {
    const outDir = await freshDir();
    await assert.rejects(fetchDataset({ source: server.url, outDir, retries: 2, ...FAST }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.match(err.message, /^Download of "[^"]+" failed after 3 attempts: the connection (broke|closed) after /);
      return true;
    });
    // The first attempt's progress resets the count; restarting from zero to the same 100,000 bytes does not.
    assert.equal(server.requests.filter((r) => r.method === 'GET').length, 3);
  } finally {
    await server.close();
  }
});

test('a 206 without ETag or Last-Modified keeps the recorded validator: cut twice, resumed twice', async () => {
  const server = await serveWith((n, req, res) => {
    if (n === 1) return sendCut(res, DATA, 100_000, { 'Content-Length': DATA.length, ETag: '"v"' });
    const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    assert.equal(req.headers['if-range'], '"v"');
    const headers = { 'Content-Length': DATA.length - start, 'Content-Range': `bytes ${start}-${DATA.length - 1}/${DATA.length}` };
    if (n === 2) return sendCut(res, DATA.subarray(start), 100_000, headers, 206);
    res.writeHead(206, headers).end(DATA.subarray(start));
  });
  try {
    const r = await fetchDataset({ source: server.url, outDir: await freshDir(), ...FAST });
    assert.deepEqual(await readFile(r.path), DATA);
    assert.equal(r.resumed, true);
    assert.deepEqual(server.ranges, [undefined, 'bytes=100000-', 'bytes=200000-']);
  } finally {
    await server.close();
  }
});

test('a body cut where the server gave no length is resumed, not saved as the archive', async () => {
  const server = await serveWith((n, req, res) => {
    if (n === 1) {
      // No Content-Length and no chunked encoding: the body ends when the connection closes.
      res.socket?.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nETag: "w"\r\nConnection: close\r\n\r\n'), DATA.subarray(0, 120_000)]));
      return;
    }
    const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    res.writeHead(206, { ETag: '"w"', 'Content-Length': DATA.length - start, 'Content-Range': `bytes ${start}-${DATA.length - 1}/${DATA.length}` });
    res.end(DATA.subarray(start));
  });
  try {
    const r = await fetchDataset({ source: server.url, outDir: await freshDir(), ...FAST });
    assert.deepEqual(await readFile(r.path), DATA);
    assert.deepEqual(server.ranges, [undefined, 'bytes=120000-']);
  } finally {
    await server.close();
  }
});

test('a 416 with a new ETag restarts from zero instead of finishing the old bytes', async () => {
  const NEW = zipOf(300_000);
  assert.equal(NEW.length, DATA.length);
  const server = await serveWith((_n, req, res) => {
    if (req.headers.range !== undefined) res.writeHead(416, { ETag: '"new"', 'Content-Range': `bytes */${NEW.length}` }).end();
    else res.writeHead(200, { ETag: '"new"', 'Content-Length': NEW.length }).end(NEW);
  });
  try {
    const outDir = await freshDir();
    const part = join(outDir, 'data.zip.part');
    await writeFile(part, DATA);
    await writeFile(`${part}.json`, JSON.stringify({ url: server.url, etag: '"old"', total: DATA.length }));
    const r = await fetchDataset({ source: server.url, outDir, ...FAST });
    assert.deepEqual(await readFile(r.path), NEW);
    assert.deepEqual(server.ranges, [`bytes=${DATA.length}-`, undefined]);
  } finally {
    await server.close();
  }
});

test('gzip-encoded bodies, redirect loops and a full disk are clear errors at once, not retried', async () => {
  const gzip = await serveWith((_n, _req, res) => res.writeHead(200, { 'Content-Encoding': 'gzip' }).end(DATA));
  try {
    await assert.rejects(fetchDataset({ source: gzip.url, outDir: await freshDir(), ...FAST }), {
      message: `Cannot download "${gzip.url}": the server sent it "gzip"-encoded although "identity" was asked, so its bytes cannot be ` +
        'resumed or verified; download it another way (a browser, `curl --compressed`) and give the file\'s path as the source',
    });
    assert.equal(gzip.ranges.length, 1);
  } finally {
    await gzip.close();
  }
  const loop = await serveWith((_n, _req, res) => res.writeHead(302, { Location: '/data.zip' }).end());
  try {
    await assert.rejects(fetchDataset({ source: loop.url, outDir: await freshDir(), ...FAST }), {
      message: `Cannot download "${loop.url}": maximum redirect reached at: ${loop.url} (a redirect loop?)`,
    });
    assert.equal(loop.ranges.length, 21);
  } finally {
    await loop.close();
  }
  // A .part that is /dev/full: every write fails with ENOSPC.
  if (process.platform === 'linux') {
    const server = await startFileServer({ data: DATA });
    try {
      const outDir = await freshDir();
      const part = join(outDir, 'data.zip.part');
      await symlink('/dev/full', part);
      await assert.rejects(fetchDataset({ source: server.url, outDir, ...FAST }), {
        message: `Cannot write "${part}" (ENOSPC: no space left on device, write): the 0 B downloaded so far are kept; make room and run again to resume`,
      });
      assert.equal(server.requests.length, 1);
    } finally {
      await server.close();
    }
  }
});

test('what the checks must let through: a zip labelled text/html, an empty Content-Encoding, a self-extracting prefix', async () => {
  const prefixed = Buffer.concat([Buffer.from('MZ\x90\x00 a self-extracting stub'), DATA]);
  const server = await serveWith((n, _req, res) => {
    const body = n === 3 ? prefixed : DATA;
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Encoding': n === 2 ? '' : 'identity', 'Content-Length': body.length }).end(body);
  });
  try {
    for (const expected of [DATA, DATA, prefixed]) {
      const r = await fetchDataset({ source: server.url, outDir: await freshDir(), ...FAST });
      assert.deepEqual(await readFile(r.path), expected);
    }
  } finally {
    await server.close();
  }
});

test('an empty body keeps the partial file; a complete body that is no zip is set aside at once, not retried', async () => {
  const empty = await serveWith((n, req, res) => {
    if (n === 1) return sendCut(res, DATA, 100_000, { 'Content-Length': DATA.length, ETag: '"e"' });
    if (n === 2) return void res.writeHead(200, { 'Content-Length': 0 }).end();
    const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    res.writeHead(206, { ETag: '"e"', 'Content-Length': DATA.length - start, 'Content-Range': `bytes ${start}-${DATA.length - 1}/${DATA.length}` }).end(DATA.subarray(start));
  });
  try {
    const r = await fetchDataset({ source: empty.url, outDir: await freshDir(), ...FAST });
    assert.deepEqual(await readFile(r.path), DATA);
    assert.deepEqual(empty.ranges, [undefined, 'bytes=100000-', 'bytes=100000-']);
  } finally {
    await empty.close();
  }
  const trailing = Buffer.concat([DATA, Buffer.alloc(16, 7)]);
  const server = await serveWith((_n, _req, res) => res.writeHead(200, { 'Content-Length': trailing.length }).end(trailing));
  try {
    const outDir = await freshDir();
    const bad = join(outDir, 'data.zip.bad');
    await assert.rejects(fetchDataset({ source: server.url, outDir, ...FAST }), {
      name: 'IntegrityError',
      message: `Download of "${server.url}" is complete (${trailing.length} bytes, the length the server gave) but is not a whole zip archive ` +
        `(no end of central directory record at its end); the file was kept as "${bad}"`,
    });
    assert.deepEqual(await readFile(bad), trailing);
    assert.equal(server.ranges.length, 1);
    // A SHA-256 the user gave, and that matches, vouches for the file.
    const vouched = await fetchDataset({ source: server.url, outDir: await freshDir(), sha256: hex(trailing), ...FAST });
    assert.deepEqual(await readFile(vouched.path), trailing);
  } finally {
    await server.close();
  }
});

test('a partial file of another source is set aside, not wiped, and this one starts from zero without using up the retries of a slow, cutting server', async () => {
  // Every response is cut after 30,000 bytes, but resumes fine: 10 attempts with 3 retries, each one progress.
  const server = await serveWith((_n, req, res) => {
    const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    const headers = { ETag: '"s"', 'Content-Length': DATA.length - start, ...(start > 0 ? { 'Content-Range': `bytes ${start}-${DATA.length - 1}/${DATA.length}` } : {}) };
    sendCut(res, DATA.subarray(start), 30_000, headers, start > 0 ? 206 : 200);
  });
  try {
    const outDir = await freshDir();
    const part = join(outDir, 'data.zip.part');
    const earlier = randomBytes(200_000);
    await writeFile(part, earlier);
    const record = JSON.stringify({ url: 'http://elsewhere.invalid/data.zip', etag: '"x"' });
    await writeFile(`${part}.json`, record);
    await writeFile(`${part}.previous`, 'set aside by an earlier switch of mirrors'); // kept too
    const notes: string[] = [];
    const r = await fetchDataset({ source: server.url, outDir, retries: 3, ...FAST, onProgress: (p) => p.message !== undefined && notes.push(p.message) });
    assert.deepEqual(await readFile(r.path), DATA);
    // The other mirror's 200,000 bytes are kept beside, with their record, under a name of their own, and said so.
    assert.deepEqual(await readFile(`${part}.previous-2`), earlier);
    assert.equal(await readFile(`${part}.previous-2.json`, 'utf8'), record);
    assert.equal(await readFile(`${part}.previous`, 'utf8'), 'set aside by an earlier switch of mirrors');
    assert.ok(notes.includes(`data.zip.part was downloaded from another source ("http://elsewhere.invalid/data.zip"): kept as ${JSON.stringify(`${part}.previous-2`)}; starting this one from zero`), notes.join('\n'));
  } finally {
    await server.close();
  }
});

test('two downloads of the same file at once: one proceeds, the other is a BusyError at once and touches nothing', async () => {
  const server = await startFileServer({ data: DATA });
  try {
    const outDir = await freshDir();
    const options = { outDir, env: { PNEUMOTYPE_SOURCE: server.url }, ...FAST };
    const [a, b] = await Promise.allSettled([fetchDataset(options), fetchDataset(options)]);
    const done = [a, b].filter((r) => r.status === 'fulfilled');
    const refused = [a, b].filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(done.length, 1);
    assert.equal(refused.length, 1);
    const lock = join(outDir, 'data.zip.lock');
    assert.ok(refused[0]?.reason instanceof BusyError);
    assert.equal(
      (refused[0]?.reason as BusyError).message,
      `This process is already downloading data.zip into ${JSON.stringify(outDir)} (lock file ${JSON.stringify(lock)}): wait for that call to finish`,
    );
    assert.equal(server.requests.length, 1, 'the refused call made no request');
    assert.deepEqual(await readFile(join(outDir, 'data.zip')), DATA);
    assert.deepEqual((await readdir(outDir)).sort(), ['data.zip', 'data.zip.sha256'], 'the lock is gone');
  } finally {
    await server.close();
  }
});

test('a download from another URL under the same file name is refused; the archive and its record are left as they are', async () => {
  const v2 = await startFileServer({ data: DATA, path: '/v2/archive.zip' });
  const v3 = await startFileServer({ data: OTHER, path: '/v3/archive.zip' });
  try {
    const outDir = await freshDir();
    const path = join(outDir, 'archive.zip');
    const first = await fetchDataset({ source: v2.url, outDir, ...FAST });
    assert.equal(first.sha256, hex(DATA));
    const record = `${hex(DATA)}  archive.zip\n# source: ${v2.url}\n`;
    assert.equal(await readFile(`${path}.sha256`, 'utf8'), record);
    await assert.rejects(fetchDataset({ source: v3.url, outDir, ...FAST }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.equal(
        err.message,
        `"${path}" was downloaded from "${v2.url}", not from "${v3.url}": choose another downloads folder (--out or --data-dir; PNEUMOTYPE_DATA_DIR in the notebooks), ` +
          `or move "${path}" away to download "${v3.url}"; nothing was changed`,
      );
      assert.equal(err.url, v3.url);
      assert.equal(err.path, path);
      return true;
    });
    assert.equal(v3.requests.length, 0);
    assert.deepEqual(await readFile(path), DATA);
    assert.equal(await readFile(`${path}.sha256`, 'utf8'), record);
    assert.deepEqual((await readdir(outDir)).sort(), ['archive.zip', 'archive.zip.sha256']);
    // The same URL again is still found verified, without a request.
    const again = await fetchDataset({ source: v2.url, outDir, ...FAST });
    assert.equal(again.downloaded, false);
    assert.equal(v2.requests.length, 1);
    // The same file named another way (a fragment, the query's order, a presigned link signed anew): no refusal.
    for (const variant of [`${v2.url}#part`, `${v2.url}?b=2&a=1`, `${v2.url}?a=1&b=2&X-Amz-Signature=new`]) {
      const base = variant.includes('?') ? `${v2.url}?a=1&b=2&X-Amz-Signature=old` : v2.url;
      const dir = await freshDir();
      await fetchDataset({ source: base, outDir: dir, ...FAST });
      assert.equal((await fetchDataset({ source: variant, outDir: dir, ...FAST })).downloaded, false, variant);
    }
    // A digest asked for decides by the content: another URL's copy that matches it is taken, and recorded as from it.
    const pinned = await fetchDataset({ source: v3.url, outDir, sha256: hex(DATA), ...FAST });
    assert.equal(pinned.downloaded, false);
    assert.equal(await readFile(`${path}.sha256`, 'utf8'), `${hex(DATA)}  archive.zip\n# source: ${v3.url}\n`);
    assert.equal(v3.requests.length, 0);
  } finally {
    await v2.close();
    await v3.close();
  }
});

test('a presigned link\'s signature is masked in the errors of a failed download too', async () => {
  const outDir = await freshDir();
  await assert.rejects(fetchDataset({ source: 'http://127.0.0.1:1/a.zip?X-Amz-Signature=SECRETSIG&X-Amz-Credential=SECRETCRED', outDir, retries: 0, backoffMs: 1 }), (err: unknown) => {
    assert.ok(err instanceof FetchError);
    assert.ok(!/SECRET/.test(`${err.message} ${err.url ?? ''}`), err.message);
    assert.match(err.message, /X-Amz-Signature=\*\*\*/);
    return true;
  });
});

test('a host that cannot be reached at all: the error says how to work from a local copy', async () => {
  const outDir = await freshDir();
  const url = 'http://127.0.0.1:1/ChestXRay2017.zip'; // nothing listens on port 1
  await assert.rejects(fetchDataset({ source: url, outDir, retries: 0, backoffMs: 1 }), (err: unknown) => {
    assert.ok(err instanceof FetchError);
    assert.match(err.message, new RegExp(`^Download of "${url}" failed after 1 attempt: .*ECONNREFUSED.*; without network access, give --source \\(or PNEUMOTYPE_SOURCE\\) the path of a copy of the archive \\(run and relabel also take it extracted\\)$`));
    return true;
  });
});

test('sameUrl and shownUrl: the same file whatever the fragment, query order or signature; signatures and passwords shown as ***', () => {
  assert.ok(sameUrl('https://h/a.zip?X-Amz-Signature=1&x=2#f', 'https://***@h/a.zip?x=2&X-Amz-Signature=9'));
  assert.ok(!sameUrl('https://h/download?id=1', 'https://h/download?id=2'));
  assert.ok(!sameUrl('https://h/v2/a.zip', 'https://h/v3/a.zip'));
  // A token, or Azure-looking keys without Azure's signature, may name the file: compared (a token through its digest,
  // so that a record, which shows it masked, still tells two tokens apart).
  assert.ok(!sameUrl('https://h/dl?token=A', 'https://h/dl?token=B'));
  assert.ok(sameUrl('https://h/dl?token=A%2BB', shownUrl('https://h/dl?token=A%2BB')));
  assert.ok(!sameUrl('https://h/dl?token=B', shownUrl('https://h/dl?token=A')));
  assert.equal(shownUrl('https://h/dl?access_token=ghp_SECRET&x=1'), `https://h/dl?access_token=***${createHash('sha256').update('ghp_SECRET').digest('hex').slice(0, 8)}&x=1`);
  assert.equal(maskUserInfo('failed: GET https://h/dl?api_key=k1 (403)'), `failed: GET https://h/dl?api_key=***${createHash('sha256').update('k1').digest('hex').slice(0, 8)} (403)`);
  assert.ok(!sameUrl('https://h/dl?sp=1', 'https://h/dl?sp=2'));
  assert.ok(sameUrl('https://acct.blob.core.windows.net/c/a.zip?sp=r&se=2026-01-01&sv=2022&sr=b&sig=AAA', 'https://acct.blob.core.windows.net/c/a.zip?sp=r&se=2027-01-01&sv=2022&sr=b&sig=BBB'));
  assert.equal(shownUrl('https://al:pw@h/a.zip?X-Amz-Signature=abc&x=1&sig=def'), 'https://***@h/a.zip?X-Amz-Signature=***&x=1&sig=***');
  assert.equal(shownUrl('https://data.mendeley.com/a/ChestXRay2017.zip?dl=1'), 'https://data.mendeley.com/a/ChestXRay2017.zip?dl=1');
});

test('a record made before URLs were recorded is taken as matching and gains the URL; a redirected URL is recorded as requested', async () => {
  const server = await startFileServer({ data: DATA, path: '/files/real.zip' });
  // Like a known source's URL that redirects to a storage host: the name and the record follow the URL as requested.
  const front = await serveWith((_n, _req, res) => res.writeHead(302, { Location: server.url }).end());
  try {
    const outDir = await freshDir();
    const path = join(outDir, 'data.zip');
    const r = await fetchDataset({ source: front.url, outDir, ...FAST });
    assert.equal(r.path, path);
    assert.equal(r.downloaded, true);
    assert.equal(await readFile(`${path}.sha256`, 'utf8'), `${hex(DATA)}  data.zip\n# source: ${front.url}\n`);
    const again = await fetchDataset({ source: front.url, outDir, ...FAST });
    assert.equal(again.downloaded, false);
    assert.equal(front.ranges.length, 1);
    // An old record: digest and name only. Taken as this URL's (it was made before URLs were recorded).
    await writeFile(`${path}.sha256`, `${hex(DATA)}  data.zip\n`);
    const old = await fetchDataset({ source: `${server.origin}/elsewhere/data.zip`, outDir, ...FAST });
    assert.equal(old.downloaded, false);
    assert.equal(await readFile(`${path}.sha256`, 'utf8'), `${hex(DATA)}  data.zip\n# source: ${server.origin}/elsewhere/data.zip\n`);
    assert.equal(server.requests.length, 1);
  } finally {
    await front.close();
    await server.close();
  }
});

test('credentials in the URL go as Basic auth to the same origin only, and are masked in messages, notes, records and the .part.json', async () => {
  const PASS = 'p@ss:wörd';
  const auth = `Basic ${Buffer.from(`alice:${PASS}`).toString('base64')}`;
  const otherSeen: (string | undefined)[] = [];
  const other = await serveWith((_n, req, res) => {
    otherSeen.push(req.headers.authorization);
    res.writeHead(200, { 'Content-Length': DATA.length, ETag: '"o"' }).end(DATA);
  });
  const otherOrigin = new URL(other.url).origin;
  const seen: { path: string; auth: string | undefined }[] = [];
  let gets = 0;
  const server = await serveWith((_n, req, res) => {
    seen.push({ path: req.url ?? '', auth: req.headers.authorization });
    if (req.headers.authorization !== auth) return void res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="data"' }).end();
    if (req.url === '/moved.zip') return void res.writeHead(301, { Location: '/data.zip' }).end();
    if (req.url === '/elsewhere.zip') return void res.writeHead(302, { Location: `${otherOrigin}/data.zip` }).end();
    if (++gets === 1) return sendCut(res, DATA, 100_000, { 'Content-Length': DATA.length, ETag: '"a"' });
    const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    const headers = { ETag: '"a"', 'Content-Length': DATA.length - start, ...(start > 0 ? { 'Content-Range': `bytes ${start}-${DATA.length - 1}/${DATA.length}` } : {}) };
    res.writeHead(start > 0 ? 206 : 200, headers).end(DATA.subarray(start));
  });
  const { host } = new URL(server.url);
  const withCredentials = (path: string, pass = PASS): string => `http://alice:${encodeURIComponent(pass)}@${host}${path}`;
  const shown = (path: string): string => `http://***@${host}${path}`;
  const secret = (text: string): boolean => text.includes('p@ss') || text.includes('p%40ss') || text.includes('alice');
  try {
    const outDir = await freshDir();
    const part = join(outDir, 'data.zip.part');
    const notes: string[] = [];
    await assert.rejects(
      fetchDataset({ source: withCredentials('/data.zip'), outDir, retries: 0, onProgress: (p) => p.message !== undefined && notes.push(p.message), ...FAST }),
      (err: unknown) => {
        assert.ok(err instanceof FetchError);
        assert.match(err.message, new RegExp(`^Download of "http://\\*\\*\\*@${host}/data.zip" failed after 1 attempt: .+; the partial file "${part}" is kept for resuming$`));
        assert.equal(err.url, shown('/data.zip'));
        assert.ok(!secret(err.message), err.message);
        return true;
      },
    );
    const sidecar = JSON.parse(await readFile(`${part}.json`, 'utf8')) as { url: string };
    assert.equal(sidecar.url, shown('/data.zip'));
    const r = await fetchDataset({ source: withCredentials('/data.zip'), outDir, onProgress: (p) => p.message !== undefined && notes.push(p.message), ...FAST });
    assert.equal(r.resumed, true);
    assert.equal(r.url, shown('/data.zip'));
    assert.equal(r.source, shown('/data.zip'));
    assert.deepEqual(await readFile(r.path), DATA);
    assert.equal(await readFile(`${r.path}.sha256`, 'utf8'), `${hex(DATA)}  data.zip\n# source: ${shown('/data.zip')}\n`);
    assert.deepEqual(seen.map((s) => s.auth), [auth, auth]);
    assert.ok(!notes.some(secret), JSON.stringify(notes));
    // A later run with another password (or none) is the same source.
    const plain = await fetchDataset({ source: server.url, outDir, ...FAST });
    assert.equal(plain.downloaded, false);

    // A redirect on the same origin keeps the credentials; one to another origin drops them.
    const moved = await fetchDataset({ source: withCredentials('/moved.zip'), outDir: await freshDir(), ...FAST });
    assert.deepEqual(await readFile(moved.path), DATA);
    assert.deepEqual(seen.slice(2).map((s) => [s.path, s.auth]), [['/moved.zip', auth], ['/data.zip', auth]]);
    const elsewhere = await fetchDataset({ source: withCredentials('/elsewhere.zip'), outDir: await freshDir(), ...FAST });
    assert.deepEqual(await readFile(elsewhere.path), DATA);
    assert.deepEqual(otherSeen, [undefined]);

    // A wrong password: the server's 401 at once, the password nowhere.
    const wrong = withCredentials('/data.zip', 'nope');
    await assert.rejects(fetchDataset({ source: wrong, outDir: await freshDir(), ...FAST }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.equal(err.message, `Cannot download "${shown('/data.zip')}": the server answered HTTP 401 Unauthorized`);
      assert.equal(err.status, 401);
      return true;
    });
    // Nothing on disk holds the password.
    for (const dir of [outDir]) {
      for (const file of await readdir(dir)) assert.ok(!secret(await readFile(join(dir, file), 'latin1')), file);
    }
  } finally {
    await server.close();
    await other.close();
  }
});

test('a TLS certificate error is final, with the NODE_EXTRA_CA_CERTS hint (a self-signed certificate made with openssl)', async (t) => {
  const dir = await freshDir();
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
      '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' });
  } catch {
    t.skip('openssl is not available: isCertificateError is tested on its own below');
    return;
  }
  let handshakes = 0;
  const server = createHttpsServer({ key: await readFile(key), cert: await readFile(cert) }, (_req, res) => res.end('x'));
  server.on('tlsClientError', () => handshakes++);
  server.on('secureConnection', () => handshakes++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/data.zip`;
    const outDir = await freshDir();
    await assert.rejects(fetchDataset({ source: url, outDir, ...FAST }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.equal(
        err.message,
        `Cannot download "${url}": its TLS certificate is not trusted (DEPTH_ZERO_SELF_SIGNED_CERT); if a proxy or firewall on this ` +
          'network inspects TLS (a corporate proxy), give its CA certificate with NODE_EXTRA_CA_CERTS=/path/to/ca.pem and run again',
      );
      assert.equal(err.url, url);
      return true;
    });
    assert.equal(handshakes, 1);
    assert.deepEqual(await readdir(outDir), []);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('isCertificateError: certificate failures are final, network failures are not; a TypeError from the client is final', async () => {
  const codes = ['DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
    'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'ERR_TLS_CERT_ALTNAME_INVALID'];
  for (const code of codes) {
    assert.equal(isCertificateError(Object.assign(new Error('request failed'), { code })), true, code);
    assert.equal(isCertificateError(new Error('through a proxy', { cause: Object.assign(new Error('x'), { code }) })), true, `${code} as a cause`);
  }
  for (const code of ['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPROTO', undefined]) {
    assert.equal(isCertificateError(Object.assign(new Error('x'), { code })), false, String(code));
  }
  assert.equal(isCertificateError(undefined), false);
  let calls = 0;
  const url = 'http://127.0.0.1:9/data.zip';
  const fetch = (async () => {
    calls++;
    throw new TypeError('Invalid URL');
  }) as unknown as typeof import('node-fetch').default;
  await assert.rejects(fetchDataset({ source: url, outDir: await freshDir(), fetch, ...FAST }), (err: unknown) => {
    assert.ok(err instanceof FetchError);
    assert.equal(err.message, `Cannot download "${url}": Invalid URL`);
    return true;
  });
  assert.equal(calls, 1);
});

test('a proxy that is not http(s) (ALL_PROXY=socks5://...) is a ConfigError up front, its password masked', async () => {
  const outDir = join(await freshDir(), 'downloads');
  const url = 'http://dataset.invalid/data.zip';
  for (const [name, value, shown] of [
    ['ALL_PROXY', 'socks5://bob:hunter2@127.0.0.1:1080', 'socks5://***@127.0.0.1:1080'],
    ['http_proxy', 'socks4a://127.0.0.1:1080', 'socks4a://127.0.0.1:1080'],
  ] as const) {
    await assert.rejects(fetchDataset({ source: url, outDir, env: { [name]: value }, ...FAST }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(
        err.message,
        `${name} "${shown}" is a ${value.split(':')[0]}:// proxy: downloads go through http:// and https:// proxies only; set ${name} to an http:// or https:// proxy, or unset it`,
      );
      return true;
    });
  }
  assert.equal(existsSync(outDir), false);
  // http and https proxies, and a loopback target that needs none, pass the check.
  assert.equal(proxyFor(url, { ALL_PROXY: 'https://proxy:3128' }), 'https://proxy:3128');
});

test('aborted while waiting to retry after a cut: the error names the partial file, which is kept', async () => {
  const server = await startFileServer({ data: DATA, cutAfterBytes: 100_000 });
  try {
    const outDir = await freshDir();
    const part = join(outDir, 'data.zip.part');
    const controller = new AbortController();
    // Aborted while waiting to retry after the cut: the 100,000 bytes are kept.
    await assert.rejects(
      fetchDataset({
        source: server.url,
        outDir,
        backoffMs: 60_000,
        timeoutMs: 5_000,
        signal: controller.signal,
        onProgress: (p) => p.message?.startsWith('retry 1 of 5') && controller.abort(),
      }),
      (err: unknown) => {
        assert.ok(err instanceof FetchError);
        assert.equal(err.message, `Download of "${server.url}" was aborted; the partial file "${part}" is kept for resuming`);
        return true;
      },
    );
    assert.deepEqual(await readFile(part), DATA.subarray(0, 100_000));
  } finally {
    await server.close();
  }
});

test('not enough free space for the length the server gives: a FetchError before anything is written', async () => {
  const HUGE = 2 ** 50;
  const free = '[0-9.]+ (B|KiB|MiB|GiB|TiB)';
  const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const fresh = await serveWith((_n, _req, res) => {
    res.writeHead(200, { 'Content-Length': HUGE, ETag: '"h"' });
    res.write(DATA.subarray(0, 65_536));
  });
  try {
    const outDir = await freshDir();
    // maxBytes lifted: 1 PiB is more than any disk, and more than the default limit, which would refuse it first.
    await assert.rejects(fetchDataset({ source: fresh.url, outDir, ...FAST, maxBytes: Number.MAX_SAFE_INTEGER }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.match(err.message, new RegExp(`^${escape(`Not enough free space in "${outDir}" for data.zip: 1024.00 TiB needed (1024.00 TiB still to download and a margin of 64.0 MiB), `)}` +
        `${free}${escape(' free; make room or choose another downloads folder (--out or --data-dir; PNEUMOTYPE_DATA_DIR in the notebooks), then run again')}$`));
      return true;
    });
    assert.equal(fresh.ranges.length, 1);
    assert.deepEqual(await readdir(outDir), []);
  } finally {
    await fresh.close();
  }
  const resumed = await serveWith((_n, req, res) => {
    const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    res.writeHead(206, { 'Content-Length': HUGE - start, 'Content-Range': `bytes ${start}-${HUGE - 1}/${HUGE}`, ETag: '"r"' });
    res.write(DATA.subarray(start, start + 65_536));
  });
  try {
    const outDir = await freshDir();
    const part = join(outDir, 'data.zip.part');
    await writeFile(part, DATA.subarray(0, 100_000));
    await writeFile(`${part}.json`, JSON.stringify({ url: resumed.url, etag: '"r"', total: HUGE }));
    await assert.rejects(fetchDataset({ source: resumed.url, outDir, ...FAST, maxBytes: Number.MAX_SAFE_INTEGER }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.match(err.message, new RegExp(`^${escape(`Not enough free space in "${outDir}" for data.zip: 1024.00 TiB needed (1024.00 TiB still to download and a margin of 64.0 MiB), `)}` +
        `${free}${escape(` free; make room or choose another downloads folder (--out or --data-dir; PNEUMOTYPE_DATA_DIR in the notebooks), then run again; the partial file "${part}" (97.7 KiB) is kept`)}$`));
      return true;
    });
    assert.deepEqual(resumed.ranges, ['bytes=100000-']);
    assert.deepEqual(await readFile(part), DATA.subarray(0, 100_000));
  } finally {
    await resumed.close();
  }
});

test('a host name that does not resolve fails on the first attempt, with the way to work offline; a resolver that is only busy is retried', async () => {
  const url = 'http://dataset.example/data.zip';
  for (const [code, attempts] of [['ENOTFOUND', 1], ['EAI_AGAIN', 3]] as const) {
    let calls = 0;
    const fetch = (async () => {
      calls++;
      throw Object.assign(new Error(`request to ${url} failed, reason: getaddrinfo ${code} dataset.example`), { type: 'system', code, errno: code });
    }) as unknown as typeof import('node-fetch').default;
    await assert.rejects(fetchDataset({ source: url, outDir: await freshDir(), fetch, retries: 2, ...FAST }), (err: unknown) => {
      assert.ok(err instanceof FetchError, String(err));
      assert.match(err.message, new RegExp(`^Download of "${url}" failed after ${attempts} attempts?: .*${code}.*; without network access, give --source \\(or PNEUMOTYPE_SOURCE\\) the path of a copy of the archive \\(run and relabel also take it extracted\\)$`));
      return true;
    });
    assert.equal(calls, attempts, code);
  }
});

test('a download longer than maxBytes is refused: declared, or counted as it arrives without a length; the partial file is kept', async () => {
  const outDir = join(root, 'too-long');
  const zipStart = Buffer.from([0x50, 0x4b, 0x03, 0x04]);
  const server = createServer((req, res) => {
    if (req.url === '/declared.zip') {
      res.writeHead(200, { 'content-length': String(4 * 1024 * 1024) });
      return void res.end(Buffer.concat([zipStart, Buffer.alloc(4 * 1024 * 1024 - 4)]));
    }
    // No length, and no end: 64 KiB chunks until the client goes away (at most 64 MiB, then the end).
    res.writeHead(200, { 'content-type': 'application/zip' });
    res.write(zipStart);
    sendLongBody(res, 64 * 1024 ** 2);
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    await assert.rejects(fetchDataset({ source: `${origin}/declared.zip`, outDir, maxBytes: 1024 * 1024, retries: 0 }), {
      name: 'FetchError',
      message: `"${origin}/declared.zip" declares 4194304 bytes, more than the limit of 1048576 (maxBytes, 1.0 MiB): not a dataset archive, or a larger one than expected; give a higher maxBytes (fetch --max-bytes) to download it`,
    });
    await assert.rejects(fetchDataset({ source: `${origin}/endless.zip`, outDir, maxBytes: 1024 * 1024, retries: 0 }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.match(err.message, new RegExp(`^"${origin.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}/endless\\.zip" sent more than the limit of 1048576 bytes without saying its length \\(maxBytes, 1\\.0 MiB\\): not a dataset archive, or a larger one than expected; give a higher maxBytes \\(fetch --max-bytes\\) to download it; the partial file .* is kept`));
      return true;
    });
    assert.deepEqual((await readdir(outDir)).filter((f) => !f.endsWith('.part') && !f.endsWith('.part.json')), []);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});
