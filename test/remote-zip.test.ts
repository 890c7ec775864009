import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import AdmZip from 'adm-zip';
import yauzl from 'yauzl';
import { FetchError, IntegrityError } from '../lib/errors.js';
import type { FetchFn } from '../lib/fetch.js';
import { openHttpRangeReader } from '../lib/http-range.js';
import nodeFetch from 'node-fetch';
import { sendLongBody, startFileServer } from './helpers/http-server.js';

/** A miniature ZhangLabData.zip: big OCT entries around small chest X-ray entries, the central directory at the end. */
function makeArchive(): { zip: Buffer; chest: Map<string, Buffer>; oct: Map<string, Buffer> } {
  const archive = new AdmZip();
  const chest = new Map<string, Buffer>();
  const oct = new Map<string, Buffer>();
  const addOct = (name: string): void => {
    const data = randomBytes(300_000);
    oct.set(name, data);
    archive.addFile(name, data);
  };
  for (let i = 0; i < 4; i++) addOct(`CellData/OCT/test/CNV/CNV-${i}.jpeg`);
  for (let i = 0; i < 12; i++) {
    // Small, partly compressible, like JPEG headers plus noise.
    const data = Buffer.concat([Buffer.alloc(500, i), randomBytes(1500 + i * 100)]);
    const name = `CellData/chest_xray/train/${i % 2 ? 'NORMAL' : 'PNEUMONIA'}/IM-${1000 + i}-0001.jpeg`;
    chest.set(name, data);
    archive.addFile(name, data);
  }
  for (let i = 0; i < 6; i++) addOct(`CellData/OCT/train/DME/DME-${i}.jpeg`);
  return { zip: archive.toBuffer(), chest, oct };
}
const ARCHIVE = makeArchive();

function openZip(reader: yauzl.RandomAccessReader, size: number): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) =>
    yauzl.fromRandomAccessReader(reader, size, { lazyEntries: true, autoClose: false }, (err, zip) => (err ? reject(err) : resolve(zip))),
  );
}

function listEntries(zip: yauzl.ZipFile): Promise<yauzl.Entry[]> {
  return new Promise((resolve, reject) => {
    const entries: yauzl.Entry[] = [];
    zip.on('entry', (e: yauzl.Entry) => {
      entries.push(e);
      zip.readEntry();
    });
    zip.once('end', () => resolve(entries));
    zip.once('error', reject);
    zip.readEntry();
  });
}

function readEntry(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    zip.openReadStream(entry, (err, stream) => {
      if (err) return reject(err);
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.once('end', () => resolve(Buffer.concat(chunks)));
      stream.once('error', reject);
    });
  });
}

test('block options that are no whole number of at least 1 are ConfigErrors, before any request', async () => {
  await assert.rejects(openHttpRangeReader({ url: 'http://127.0.0.1:1/a.zip', blockSize: 0 }), { name: 'ConfigError', message: 'blockSize 0 is not valid: expected an integer of at least 1' });
  await assert.rejects(openHttpRangeReader({ url: 'http://127.0.0.1:1/a.zip', cacheBlocks: 1.5 }), { name: 'ConfigError', message: 'cacheBlocks 1.5 is not valid: expected an integer of at least 1' });
});

test('yauzl reads the central directory and chest entries over Range requests, transferring a small share', async () => {
  const server = await startFileServer({ data: ARCHIVE.zip });
  try {
    let transferred = 0;
    const remote = await openHttpRangeReader({ url: server.url, blockSize: 64 * 1024, backoffMs: 1, onBytes: (n) => (transferred += n) });
    assert.equal(remote.size, ARCHIVE.zip.length);
    assert.equal(remote.supportsRange, true);
    assert.match(remote.etag ?? '', /^".+"$/);
    const zip = await openZip(remote.reader, remote.size);
    try {
      const entries = await listEntries(zip);
      assert.equal(entries.length, ARCHIVE.chest.size + ARCHIVE.oct.size);
      const chestEntries = entries.filter((e) => e.fileName.startsWith('CellData/chest_xray/'));
      assert.equal(chestEntries.length, ARCHIVE.chest.size);
      for (const entry of chestEntries) assert.deepEqual(await readEntry(zip, entry), ARCHIVE.chest.get(entry.fileName));
    } finally {
      zip.close();
    }
    assert.ok(transferred < ARCHIVE.zip.length / 5, `${transferred} bytes transferred for a ${ARCHIVE.zip.length}-byte archive`);
    assert.equal(server.bytesSent, transferred);
    assert.equal(server.requests[0]?.method, 'HEAD');
    for (const r of server.requests.slice(1)) {
      assert.match(r.range ?? '', /^bytes=\d+-\d+$/);
      assert.equal(r.ifRange, remote.etag);
    }
  } finally {
    await server.close();
  }
});

test('entries larger than a block stream through their own Range request; cut connections are resumed', async () => {
  const server = await startFileServer({ data: ARCHIVE.zip, cutAfterBytes: 20_000, cutTimes: 3, cutDelayMs: 20 });
  try {
    const remote = await openHttpRangeReader({ url: server.url, blockSize: 32 * 1024, backoffMs: 1 });
    const zip = await openZip(remote.reader, remote.size);
    try {
      const entries = await listEntries(zip);
      const big = entries.filter((e) => e.fileName.startsWith('CellData/OCT/')).slice(2, 5);
      for (const entry of big) assert.deepEqual(await readEntry(zip, entry), ARCHIVE.oct.get(entry.fileName));
    } finally {
      zip.close();
    }
    const ranges = server.requests.map((r) => r.range).filter((r): r is string => r !== undefined);
    assert.ok(ranges.some((r) => Number(/^bytes=\d+-(\d+)$/.exec(r)?.[1]) - Number(/^bytes=(\d+)-/.exec(r)?.[1]) > 32 * 1024), 'a long range');
  } finally {
    await server.close();
  }
});

test('default block size: the whole archive reads correctly', async () => {
  const server = await startFileServer({ data: ARCHIVE.zip });
  try {
    const remote = await openHttpRangeReader({ url: server.url, backoffMs: 1 });
    const zip = await openZip(remote.reader, remote.size);
    try {
      for (const entry of await listEntries(zip)) {
        assert.deepEqual(await readEntry(zip, entry), ARCHIVE.chest.get(entry.fileName) ?? ARCHIVE.oct.get(entry.fileName));
      }
    } finally {
      zip.close();
    }
  } finally {
    await server.close();
  }
});

test('HEAD refused: the size comes from a one-byte ranged GET; 503s are retried', async () => {
  const server = await startFileServer({ data: ARCHIVE.zip, noHead: true, failFirst: 2 });
  try {
    const remote = await openHttpRangeReader({ url: server.url, backoffMs: 1 });
    assert.equal(remote.size, ARCHIVE.zip.length);
    assert.deepEqual(
      server.requests.map((r) => `${r.method} ${r.range ?? ''}`.trim()),
      ['HEAD', 'HEAD', 'HEAD', 'GET bytes=0-0'],
    );
  } finally {
    await server.close();
  }
});

test('a server without Range support is a FetchError pointing at pneumotype fetch', async () => {
  for (const options of [{ ignoreRange: true }, { rejectRange: true }]) {
    const server = await startFileServer({ data: ARCHIVE.zip, ...options });
    try {
      let transferred = 0;
      await assert.rejects(openHttpRangeReader({ url: server.url, backoffMs: 1, onBytes: (n) => (transferred += n) }), (err: unknown) => {
        assert.ok(err instanceof FetchError);
        assert.equal(
          err.message,
          `The server of "${server.url}" does not support HTTP Range requests; download the whole archive with \`pneumotype fetch\` instead`,
        );
        return true;
      });
      assert.equal(transferred, 0, 'the full body is not read');
    } finally {
      await server.close();
    }
  }
});

test('HEAD promises Range but GET ignores it (a proxy dropping it): a FetchError saying so, not "the file changed"', async () => {
  const { createServer } = await import('node:http');
  const { extractRemoteZip } = await import('../lib/remote-zip.js');
  const { mkdtemp, rm: remove } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const server = createServer((req, res) => {
    res.writeHead(200, { ETag: '"z"', 'Accept-Ranges': 'bytes', 'Content-Length': ARCHIVE.zip.length });
    res.end(req.method === 'HEAD' ? undefined : ARCHIVE.zip);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}/ZhangLabData.zip`;
  const out = await mkdtemp(join(tmpdir(), 'pneumotype-remote-'));
  try {
    await assert.rejects(extractRemoteZip({ url, outDir: out, backoffMs: 1 }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.equal(err.message, `The server of "${url}" answered a Range request with the whole file (HTTP 200, the same ETag): Range requests ` +
        'do not get through (a proxy between may drop them); download the whole archive with `pneumotype fetch` instead');
      return true;
    });
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await remove(out, { recursive: true, force: true });
  }
});

test('a server without ETag or Last-Modified that answers a Range request with the whole file: a FetchError, not "changed, open it again"', async () => {
  const { createServer } = await import('node:http');
  const server = createServer((req, res) => {
    res.writeHead(200, { 'Accept-Ranges': 'bytes', 'Content-Length': ARCHIVE.zip.length });
    res.end(req.method === 'HEAD' ? undefined : ARCHIVE.zip);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}/ZhangLabData.zip`;
  try {
    const remote = await openHttpRangeReader({ url, backoffMs: 1 });
    assert.equal(remote.etag, undefined);
    assert.equal(remote.lastModified, undefined);
    await assert.rejects(openZip(remote.reader, remote.size), (err: unknown) => {
      assert.ok(err instanceof FetchError, String(err));
      assert.equal(err.status, 200);
      assert.equal(err.message, `The server of "${url}" answered a Range request with the whole file (HTTP 200, ${ARCHIVE.zip.length} bytes, ` +
        'no ETag or Last-Modified): this server (or a proxy between) ignores Range requests; download the whole archive instead ' +
        '(`pneumotype run --download-whole`, or `pneumotype fetch`)');
      return true;
    });
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('404 is a FetchError naming the URL and status', async () => {
  const server = await startFileServer({ data: ARCHIVE.zip });
  try {
    const url = `${server.origin}/nothing.zip`;
    await assert.rejects(openHttpRangeReader({ url, backoffMs: 1 }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.equal(err.message, `Cannot read "${url}": the server answered HTTP 404 Not Found`);
      assert.equal(err.status, 404);
      return true;
    });
  } finally {
    await server.close();
  }
});

test('a URL with a user name and password: sent as Basic authorization to a URL without them, shown as *** in errors', async () => {
  const server = await startFileServer({ data: ARCHIVE.zip });
  try {
    const seen: { url: string; authorization: string | undefined }[] = [];
    // The real client against the real server; the wrapper only records what each request carried.
    const recording: FetchFn = (url, init) => {
      const headers = (init?.headers ?? {}) as Record<string, string>;
      seen.push({ url: String(url), authorization: headers.authorization });
      return nodeFetch(url, init);
    };
    const withUser = server.url.replace('http://', 'http://alice:pa%20ss@');
    const { reader, size } = await openHttpRangeReader({ url: withUser, fetch: recording, backoffMs: 1 });
    const zip = await openZip(reader, size);
    assert.ok((await listEntries(zip)).length > 0);
    zip.close();
    assert.ok(seen.length > 0);
    for (const s of seen) assert.deepEqual(s, { url: server.url, authorization: `Basic ${Buffer.from('alice:pa ss').toString('base64')}` });
    // Redirected to another origin (another port of the same host): the authorization stays behind.
    const redirector = createServer((req, res) => res.writeHead(302, { location: server.url }).end());
    await new Promise<void>((resolve) => redirector.listen(0, '127.0.0.1', resolve));
    try {
      seen.length = 0;
      const via = `http://alice:pa%20ss@127.0.0.1:${(redirector.address() as AddressInfo).port}/archive.zip`;
      const again = await openHttpRangeReader({ url: via, fetch: recording, backoffMs: 1 });
      assert.equal(again.size, size);
      const toFiles = seen.filter((s) => s.url === server.url);
      assert.ok(toFiles.length > 0 && seen.length > toFiles.length, JSON.stringify(seen));
      for (const s of seen) assert.equal(s.authorization, s.url === server.url ? undefined : `Basic ${Buffer.from('alice:pa ss').toString('base64')}`, s.url);
    } finally {
      await new Promise((resolve) => redirector.close(resolve));
    }
    const missing = withUser.replace(/[^/]*$/, 'nothing.zip');
    await assert.rejects(openHttpRangeReader({ url: missing, backoffMs: 1 }), (err: unknown) => {
      assert.ok(err instanceof FetchError);
      assert.equal(err.message, `Cannot read "${server.origin.replace('http://', 'http://***@')}/nothing.zip": the server answered HTTP 404 Not Found`);
      return true;
    });
  } finally {
    await server.close();
  }
});

test('a file that changes on the server after opening is an IntegrityError, never a mix of versions', async () => {
  const server = await startFileServer({ data: ARCHIVE.zip, etag: '"old"' });
  try {
    const remote = await openHttpRangeReader({ url: server.url, backoffMs: 1 });
    server.setData(Buffer.concat([ARCHIVE.zip, Buffer.alloc(10)]), '"new"');
    await assert.rejects(openZip(remote.reader, remote.size), (err: unknown) => {
      assert.ok(err instanceof IntegrityError);
      assert.equal(err.message, `Remote file "${server.url}" changed while it was being read (ETag "old" is now "new"); open it again`);
      assert.equal(err.expected, '"old"');
      assert.equal(err.actual, '"new"');
      return true;
    });
  } finally {
    await server.close();
  }
});

test('extractRemoteZip extracts only the chest X-ray entries of a v3-like archive over loopback, and resumes', async () => {
  const { extractRemoteZip } = await import('../lib/remote-zip.js');
  const { buildZip } = await import('./helpers/zip-writer.js');
  const { datasetFiles } = await import('./helpers/fixtures.js');
  const { mkdtemp, readFile, rm: remove } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  // Like v3: a large OCT half (random, incompressible) that must not be transferred, then the chest X-rays.
  const chest = await datasetFiles({ prefix: 'CellData/chest_xray', perClass: { train: 2, test: 1 } });
  const oct = Array.from({ length: 6 }, (_, i) => ({ path: `CellData/OCT/train/CNV/CNV-${i}-1.jpeg`, data: randomBytes(1_500_000) }));
  const fixture = { chest, zip: buildZip([...oct, ...chest].map((f) => ({ name: f.path, data: f.data, method: 'store' as const }))) };
  const server = await startFileServer({ data: fixture.zip });
  const dir = await mkdtemp(join(tmpdir(), 'pneumotype-remote-'));
  try {
    const r = await extractRemoteZip({ url: server.url, outDir: dir, retries: 2, backoffMs: 5 });
    assert.equal(r.files, fixture.chest.length);
    assert.equal(r.excluded, 6);
    assert.ok(r.transferredBytes < r.archiveBytes / 2, `transferred ${r.transferredBytes} of ${r.archiveBytes}`);
    for (const f of fixture.chest) assert.deepEqual(await readFile(join(dir, f.path)), f.data);
    const again = await extractRemoteZip({ url: server.url, outDir: dir, retries: 2, backoffMs: 5 });
    assert.equal(again.files, 0);
    assert.equal(again.alreadyPresent, fixture.chest.length);
  } finally {
    await server.close();
    await remove(dir, { recursive: true, force: true });
  }
});

test('a server with only Last-Modified that ignores If-Range: a changed file is an IntegrityError, never a mix of versions', async () => {
  const data = randomBytes(4096);
  const server = await startFileServer({ data, etag: false, ignoreIfRange: true });
  try {
    const remote = await openHttpRangeReader({ url: server.url, blockSize: 1024, retries: 0, backoffMs: 1 });
    assert.equal(remote.etag, undefined);
    assert.equal(remote.lastModified, 'Sat, 06 Jan 2018 12:00:00 GMT');
    const read = (position: number): Promise<Buffer> =>
      new Promise((resolve, reject) => {
        const buffer = Buffer.alloc(16);
        remote.reader.read(buffer, 0, buffer.length, position, (err) => (err ? reject(err) : resolve(buffer)));
      });
    assert.deepEqual(await read(0), data.subarray(0, 16));
    server.setData(randomBytes(data.length), false); // the same size, a new Last-Modified
    await assert.rejects(read(2048), (err: unknown) => {
      assert.ok(err instanceof IntegrityError, String(err));
      assert.equal(
        err.message,
        `Remote file "${server.url}" changed while it was being read (Last-Modified Sat, 06 Jan 2018 12:00:00 GMT is now Sun, 07 Jan 2018 12:00:00 GMT); open it again`,
      );
      assert.equal(err.expected, 'Sat, 06 Jan 2018 12:00:00 GMT');
      assert.equal(err.actual, 'Sun, 07 Jan 2018 12:00:00 GMT');
      return true;
    });
    assert.equal(server.requests.at(-1)?.ifRange, 'Sat, 06 Jan 2018 12:00:00 GMT');
  } finally {
    await server.close();
  }
});

test('extractRemoteZip stopped by its signal during an entry: an ArchiveError saying to run it again, no .part left', async () => {
  const { extractRemoteZip } = await import('../lib/remote-zip.js');
  const { ArchiveError } = await import('../lib/errors.js');
  const { mkdtemp, readdir, rm: remove } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const server = await startFileServer({ data: ARCHIVE.zip });
  const dir = await mkdtemp(join(tmpdir(), 'pneumotype-remote-'));
  try {
    const controller = new AbortController();
    const include = (name: string): boolean => name.startsWith('CellData/OCT/');
    await assert.rejects(
      extractRemoteZip({
        url: server.url,
        outDir: dir,
        include,
        backoffMs: 1,
        signal: controller.signal,
        onProgress: (p) => p.done > 0 && controller.abort(), // the first event: within the first entry
      }),
      (err: unknown) => {
        assert.ok(err instanceof ArchiveError, String(err));
        assert.equal(err.message, `Extraction of "${server.url}" into ${JSON.stringify(dir)} was aborted: run it again to continue (the files finished so far are kept)`);
        assert.equal(err.cause, controller.signal.reason);
        return true;
      },
    );
    const left = (await readdir(dir, { recursive: true })).filter((f) => f.endsWith('.jpeg') || f.endsWith('.part'));
    assert.deepEqual(left, []);
    const again = await extractRemoteZip({ url: server.url, outDir: dir, include, backoffMs: 1 });
    assert.equal(again.files, ARCHIVE.oct.size);
  } finally {
    await server.close();
    await remove(dir, { recursive: true, force: true });
  }
});

test('a stop while the central directory is read over HTTP is the same ArchiveError, not the reader\'s FetchError', async () => {
  const { extractZip, ZIP_OPEN_OPTIONS } = await import('../lib/zip.js');
  const { ArchiveError } = await import('../lib/errors.js');
  const { mkdtemp, rm: remove } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const zip = new AdmZip();
  for (let i = 0; i < 300; i++) zip.addFile(`chest_xray/train/NORMAL/IM-${1000 + i}-0001.jpeg`, Buffer.alloc(10, i));
  const server = await startFileServer({ data: zip.toBuffer() });
  const dir = await mkdtemp(join(tmpdir(), 'pneumotype-remote-'));
  try {
    const controller = new AbortController();
    let requests = 0;
    // Stopped at the fifth request: while the central directory (about 20 KB in blocks of 512 bytes) is being read.
    const fetch = ((url: string, init: object) => {
      if (++requests === 5) controller.abort(new Error('user stop'));
      return nodeFetch(url, init);
    }) as unknown as FetchFn;
    const { reader, size } = await openHttpRangeReader({ url: server.url, blockSize: 512, cacheBlocks: 2, fetch, signal: controller.signal, backoffMs: 1 });
    const zipfile = await new Promise<yauzl.ZipFile>((resolve, reject) =>
      yauzl.fromRandomAccessReader(reader, size, { ...ZIP_OPEN_OPTIONS }, (err, zf) => (err || !zf ? reject(err) : resolve(zf))));
    await assert.rejects(extractZip({ archive: { zipfile, name: server.url }, outDir: dir, signal: controller.signal }), (err: unknown) => {
      assert.ok(err instanceof ArchiveError, String(err));
      assert.equal(err.message, `Extraction of "${server.url}" into ${JSON.stringify(dir)} was aborted: run it again to continue (the files finished so far are kept)`);
      assert.equal(err.cause, controller.signal.reason);
      return true;
    });
  } finally {
    await server.close();
    await remove(dir, { recursive: true, force: true });
  }
});

test('the first-byte probe (HEAD refused) reads one byte of the answer, not an endless body', async () => {
  let sent = (): number => 0;
  const server = createServer((req, res) => {
    if (req.method === 'HEAD') return void res.writeHead(405).end();
    res.writeHead(206, { 'Content-Range': 'bytes 0-0/1000', ETag: '"e"' });
    sent = sendLongBody(res, 128 * 1024 ** 2);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/a.zip`;
    let received = 0;
    const remote = await openHttpRangeReader({ url, backoffMs: 1, onBytes: (n) => (received += n) });
    assert.equal(remote.size, 1000);
    assert.ok(received <= 64 * 1024, `read ${received} bytes of the probe's answer`);
    assert.ok(sent() < 64 * 1024 ** 2, `the server got to send ${sent()} bytes`);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
