// Test fixtures: a tiny raw zip writer that can lie on purpose, and builders for normal and hostile archives.
import { crc32, deflateRawSync } from 'node:zlib';
import AdmZip from 'adm-zip';
import { datasetFiles, makeJpeg, type DatasetFixtureOptions, type FixtureFile } from './fixtures.js';

/** One entry of {@link buildZip}. Everything a real writer computes can be overridden to build hostile archives. */
export interface RawZipEntry {
  /** Entry name, written byte for byte (`../evil.txt`, `/abs.txt`, `C:\\x` are all allowed). */
  readonly name: string;
  /** Uncompressed content (empty when omitted, e.g. for folders `dir/`). */
  readonly data?: Uint8Array;
  /** 'deflate' (default) or 'store'. */
  readonly method?: 'store' | 'deflate';
  /** Sets general-purpose bit 3: zero CRC and sizes in the local header, a data descriptor after the data. */
  readonly dataDescriptor?: boolean;
  /** CRC-32 written in the headers instead of the real one. */
  readonly crc32?: number;
  /** Uncompressed size written in the headers instead of the real one. */
  readonly uncompressedSize?: number;
  /** Raw bytes written as the entry's data instead of the stored/deflated content (corrupt deflate data). */
  readonly rawData?: Uint8Array;
  /** Unix mode (`0o100644`, `0o120777` for a symlink, ...): written in the high 16 bits of the external attributes. */
  readonly unixMode?: number;
  /** Sets general-purpose bit 0 (traditional encryption) without encrypting anything. */
  readonly encrypted?: boolean;
  /** Compression method number written instead of 0/8 (unsupported methods). */
  readonly methodNumber?: number;
  /** Host system in the "version made by" field (0 MS-DOS, 3 Unix, 11 NTFS, 14 VFAT). Default 3 with unixMode, else 0. */
  readonly host?: number;
  /**
   * Writes no data of its own: the central directory points this name at entry N's local header (overlapping entries,
   * the zip bomb that reuses one deflated stream under many names). Give it entry N's data.
   */
  readonly dataOf?: number;
}

const DOS_DATE = ((2020 - 1980) << 9) | (1 << 5) | 1; // 2020-01-01
const DOS_TIME = 0;

/**
 * Builds a zip archive in memory: local headers, data (stored or deflated), optional data descriptors, central
 * directory and end-of-central-directory record. No zip64, so at most 65535 entries and 4 GiB.
 *
 * @example const zip = buildZip([{ name: '../evil.txt', data: Buffer.from('x') }]);
 */
export function buildZip(entries: readonly RawZipEntry[], options: { comment?: string } = {}): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  const offsets: number[] = [];
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const data = Buffer.from(e.data ?? new Uint8Array());
    const method = e.methodNumber ?? (e.method === 'store' ? 0 : 8);
    const payload = e.rawData ? Buffer.from(e.rawData) : method === 8 ? deflateRawSync(data, { level: 9 }) : data;
    const crc = e.crc32 ?? crc32(data);
    const size = e.uncompressedSize ?? data.length;
    let flags = 0;
    if (/[^\x00-\x7f]/.test(e.name)) flags |= 0x800;
    if (e.dataDescriptor) flags |= 0x8;
    if (e.encrypted) flags |= 0x1;
    const host = e.host ?? (e.unixMode === undefined ? 0 : 3);
    const attributes = e.unixMode === undefined ? (e.name.endsWith('/') ? 0x10 : 0) : ((e.unixMode & 0xffff) << 16) >>> 0;

    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(flags, 6);
    local.writeUInt16LE(method, 8);
    local.writeUInt16LE(DOS_TIME, 10);
    local.writeUInt16LE(DOS_DATE, 12);
    local.writeUInt32LE(e.dataDescriptor ? 0 : crc, 14);
    local.writeUInt32LE(e.dataDescriptor ? 0 : payload.length, 18);
    local.writeUInt32LE(e.dataDescriptor ? 0 : size, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const parts = [local, name, payload];
    if (e.dataDescriptor) {
      const descriptor = Buffer.alloc(16);
      descriptor.writeUInt32LE(0x08074b50, 0);
      descriptor.writeUInt32LE(crc, 4);
      descriptor.writeUInt32LE(payload.length, 8);
      descriptor.writeUInt32LE(size, 12);
      parts.push(descriptor);
    }
    const localRecord = Buffer.concat(parts);
    offsets.push(offset);
    if (e.dataOf === undefined) locals.push(localRecord);

    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((host << 8) | 20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(flags, 8);
    central.writeUInt16LE(method, 10);
    central.writeUInt16LE(DOS_TIME, 12);
    central.writeUInt16LE(DOS_DATE, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(payload.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt16LE(0, 30); // extra length
    central.writeUInt16LE(0, 32); // comment length
    central.writeUInt16LE(0, 34); // disk
    central.writeUInt16LE(0, 36); // internal attributes
    central.writeUInt32LE(attributes, 38);
    central.writeUInt32LE(e.dataOf === undefined ? offset : offsets[e.dataOf] ?? 0, 42);
    centrals.push(Buffer.concat([central, name]));
    if (e.dataOf === undefined) offset += localRecord.length;
  }
  const directory = Buffer.concat(centrals);
  const comment = Buffer.from(options.comment ?? '', 'utf8');
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  end.writeUInt16LE(comment.length, 20);
  return Buffer.concat([...locals, directory, end, comment]);
}

/** A generated archive and the files it holds (the ones an extraction should produce, junk excluded). */
export interface ZipFixture {
  readonly zip: Buffer;
  /** Every file in the archive, junk included, in archive order. */
  readonly files: readonly FixtureFile[];
}

/**
 * A normal ChestXRay2017-like archive built with adm-zip (as real tools write it) from {@link datasetFiles}.
 *
 * @example const { zip, files } = await datasetZip({ junk: true });
 */
export async function datasetZip(options: DatasetFixtureOptions = {}): Promise<ZipFixture> {
  const files = await datasetFiles(options);
  const zip = new AdmZip();
  for (const f of files) zip.addFile(f.path, f.data);
  return { zip: zip.toBuffer(), files };
}

/**
 * A ZhangLabData-like archive (v3): `CellData/OCT/...` scans that must never be extracted, then
 * `CellData/chest_xray/...`, folder entries included, every other entry written with a data descriptor.
 *
 * @example const { zip, chest, oct } = await v3LikeZip();
 */
export async function v3LikeZip(options: Omit<DatasetFixtureOptions, 'prefix'> = {}): Promise<ZipFixture & { chest: readonly FixtureFile[]; oct: readonly FixtureFile[] }> {
  const oct: FixtureFile[] = [];
  let seed = 5000;
  for (const split of ['train', 'test']) {
    for (const cls of ['CNV', 'DME', 'DRUSEN', 'NORMAL']) {
      for (let i = 1; i <= 2; i++) oct.push({ path: `CellData/OCT/${split}/${cls}/${cls}-${100 + i}-${i}.jpeg`, data: await makeJpeg({ seed: seed++ }) });
    }
  }
  const chest = await datasetFiles({ ...options, prefix: 'CellData/chest_xray' });
  const files = [...oct, ...chest];
  const dirs = ['CellData/', 'CellData/OCT/', 'CellData/chest_xray/'];
  const entries: RawZipEntry[] = [
    ...dirs.slice(0, 2).map((name) => ({ name, method: 'store' as const })),
    ...oct.map((f, i) => ({ name: f.path, data: f.data, dataDescriptor: i % 2 === 0 })),
    { name: dirs[2] ?? '', method: 'store' as const },
    ...chest.map((f, i) => ({ name: f.path, data: f.data, dataDescriptor: i % 2 === 0, method: i % 3 === 0 ? ('store' as const) : ('deflate' as const) })),
  ];
  return { zip: buildZip(entries), files, chest, oct };
}

const GOOD = Buffer.from('a harmless file\n');

/** An archive whose only entry has the given (unsafe) name. */
export function unsafeNameZip(name: string): Buffer {
  return buildZip([{ name, data: GOOD }]);
}

/** Zip-slip: `../evil.txt` after a harmless entry. */
export function zipSlipZip(): Buffer {
  return buildZip([
    { name: 'chest_xray/ok.txt', data: GOOD },
    { name: '../evil.txt', data: Buffer.from('escaped\n') },
  ]);
}

/** An absolute entry name, `/abs.txt`. */
export function absolutePathZip(): Buffer {
  return unsafeNameZip('/abs.txt');
}

/** A symbolic link entry (`chest_xray/link` pointing at `/etc/passwd`), mode 0o120777. */
export function symlinkZip(): Buffer {
  return buildZip([{ name: 'chest_xray/link', data: Buffer.from('/etc/passwd'), method: 'store', unixMode: 0o120777 }]);
}

/** An entry that declares 4,000,000,000 uncompressed bytes (its data is 11 bytes). */
export function oversizedClaimZip(): Buffer {
  return buildZip([{ name: 'chest_xray/huge.bin', data: Buffer.from('tiny inside'), uncompressedSize: 4_000_000_000 }]);
}

/** A high-ratio bomb: `bytes` zeros deflated (5 MiB gives about 5 KiB, a ratio over 1000:1). */
export function ratioBombZip(bytes = 5 * 1024 * 1024): Buffer {
  return buildZip([{ name: 'chest_xray/zeros.bin', data: Buffer.alloc(bytes) }]);
}

/** An entry that declares 100 bytes but inflates to `bytes` zeros. */
export function lyingSizeZip(bytes = 1024 * 1024): Buffer {
  return buildZip([{ name: 'chest_xray/liar.bin', data: Buffer.alloc(bytes), uncompressedSize: 100 }]);
}

/** `count` tiny entries. */
export function tooManyEntriesZip(count = 64): Buffer {
  return buildZip(Array.from({ length: count }, (_, i) => ({ name: `chest_xray/many/${i}.txt`, data: Buffer.from(`${i}\n`), method: 'store' as const })));
}

/** An entry whose CRC-32 in the headers is wrong (first), then a good one. */
export function crcMismatchZip(): Buffer {
  return buildZip([
    { name: 'chest_xray/bad-crc.txt', data: Buffer.from('the content changed after the CRC was computed\n'), crc32: 0x12345678 },
    { name: 'chest_xray/good.txt', data: GOOD },
  ]);
}

/** An entry whose deflate data is garbage. */
export function corruptDeflateZip(): Buffer {
  const data = Buffer.from('some text that deflates to a few bytes, some text that deflates to a few bytes\n');
  const raw = deflateRawSync(data);
  raw.fill(0xff, 0, Math.min(raw.length, 8));
  return buildZip([{ name: 'chest_xray/corrupt.txt', data, rawData: raw }]);
}

/** An entry flagged as encrypted. */
export function encryptedZip(): Buffer {
  return buildZip([{ name: 'chest_xray/secret.txt', data: GOOD, method: 'store', encrypted: true }]);
}

/**
 * A chest X-ray archive as Windows PowerShell 5.1 `Compress-Archive` writes it: "\\" as the path separator, made on
 * MS-DOS (host 0, as .NET writes it; 11 NTFS and 14 VFAT also given), an empty folder included. `files` use "/".
 *
 * @example const { zip, files } = windowsBackslashZip(11);
 */
export function windowsBackslashZip(host = 0): ZipFixture {
  const files: FixtureFile[] = [
    { path: 'chest_xray/train/NORMAL/IM-0115-0001.jpeg', data: Buffer.from('normal image\n') },
    { path: 'chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg', data: Buffer.from('bacteria image '.repeat(20)) },
    { path: 'chest_xray/test/PNEUMONIA/person100_virus_184.jpeg', data: Buffer.from('virus image\n') },
  ];
  const entries: RawZipEntry[] = [
    ...files.map((f) => ({ name: f.path.replaceAll('/', '\\'), data: f.data, host })),
    { name: 'chest_xray\\val\\', method: 'store', host },
  ];
  return { zip: buildZip(entries), files };
}

/** A normal dataset archive cut in half, as an interrupted download leaves it. */
export async function truncatedZip(): Promise<Buffer> {
  const { zip } = await datasetZip({ perClass: { train: 2, test: 1 } });
  return zip.subarray(0, Math.floor(zip.length / 2));
}

/** Not a zip at all: an HTML error page saved under a .zip name. */
export function garbageZip(): Buffer {
  return Buffer.from('<!DOCTYPE html>\n<html><body><h1>503 Service Unavailable</h1></body></html>\n'.repeat(20));
}

/** Every fixture archive with the file name it is written under and a one-line description. */
export async function allFixtureZips(): Promise<Array<{ file: string; zip: Buffer; description: string }>> {
  return [
    { file: 'dataset.zip', zip: (await datasetZip({ junk: true })).zip, description: 'normal ChestXRay2017-like archive (adm-zip) with __MACOSX/._/.DS_Store/Thumbs.db junk' },
    { file: 'v3-like.zip', zip: (await v3LikeZip()).zip, description: 'ZhangLabData-like archive: CellData/OCT (never extracted) + CellData/chest_xray, data descriptors' },
    { file: 'zip-slip.zip', zip: zipSlipZip(), description: 'entry ../evil.txt escaping the target folder' },
    { file: 'absolute.zip', zip: absolutePathZip(), description: 'absolute entry name /abs.txt' },
    { file: 'absolute-windows.zip', zip: unsafeNameZip('C:\\x'), description: 'absolute Windows entry name C:\\x' },
    { file: 'unc.zip', zip: unsafeNameZip('\\\\server\\share\\x'), description: 'UNC entry name \\\\server\\share\\x' },
    { file: 'windows-backslash.zip', zip: windowsBackslashZip().zip, description: 'chest_xray\\train\\NORMAL\\... made on MS-DOS (Compress-Archive): "\\" separates' },
    { file: 'backslash-slip.zip', zip: unsafeNameZip('..\\evil.txt'), description: 'backslash traversal ..\\evil.txt' },
    { file: 'symlink.zip', zip: symlinkZip(), description: 'symbolic link entry chest_xray/link -> /etc/passwd' },
    { file: 'oversized-claim.zip', zip: oversizedClaimZip(), description: 'entry declaring 4,000,000,000 uncompressed bytes' },
    { file: 'ratio-bomb.zip', zip: ratioBombZip(), description: '5 MiB of zeros deflated (ratio > 1000:1)' },
    { file: 'lying-size.zip', zip: lyingSizeZip(), description: 'entry declaring 100 bytes that inflates to 1 MiB' },
    { file: 'too-many-entries.zip', zip: tooManyEntriesZip(), description: '64 tiny entries (refused with maxEntries below 64)' },
    { file: 'crc-mismatch.zip', zip: crcMismatchZip(), description: 'entry with a wrong CRC-32' },
    { file: 'corrupt-deflate.zip', zip: corruptDeflateZip(), description: 'entry with garbage deflate data' },
    { file: 'encrypted.zip', zip: encryptedZip(), description: 'entry flagged as encrypted' },
    { file: 'truncated.zip', zip: await truncatedZip(), description: 'normal archive cut in half' },
    { file: 'garbage.zip', zip: garbageZip(), description: 'an HTML page, not a zip' },
  ];
}
