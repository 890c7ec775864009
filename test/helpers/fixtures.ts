// Test fixtures: tiny generated chest X-ray trees in the Mendeley layout, with bad files on request.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import sharp from 'sharp';

/** A tiny 8-bit grayscale (1-channel, like the dataset's) JPEG whose content depends on `seed` (so hashes differ) and, optionally, on a class pattern. */
export async function makeJpeg(options: { seed: number; width?: number; height?: number; pattern?: 'bright-left' | 'bright-right' | 'stripes' }): Promise<Buffer> {
  const width = options.width ?? 40;
  const height = options.height ?? 48;
  const pixels = Buffer.alloc(width * height);
  let s = (options.seed * 2654435761) >>> 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      const noise = (s >>> 24) / 8;
      let base = 60 + ((x * 3 + y * 2 + options.seed * 7) % 50);
      if (options.pattern === 'bright-left') base += x < width / 2 ? 100 : 0;
      if (options.pattern === 'bright-right') base += x >= width / 2 ? 100 : 0;
      if (options.pattern === 'stripes') base += (Math.floor(y / 4) % 2) * 100;
      pixels[y * width + x] = Math.min(255, base + noise);
    }
  }
  return sharp(pixels, { raw: { width, height, channels: 1 } }).toColourspace('b-w').jpeg({ quality: 90 }).toBuffer();
}

export interface FixtureFile {
  /** Path relative to the tree root, e.g. `chest_xray/train/NORMAL/IM-0001-0001.jpeg`. */
  readonly path: string;
  readonly data: Buffer;
}

/** Options of {@link datasetFiles}: how many images per split and class, and which bad files to add. */
export interface DatasetFixtureOptions {
  /** Root folder inside the tree (`chest_xray` as in v2; `CellData/chest_xray` as in v3). */
  readonly prefix?: string;
  readonly perClass?: { readonly train?: number; readonly test?: number; readonly val?: number };
  /** Adds a corrupt JPEG, a truncated JPEG and a text file named .jpeg under train/PNEUMONIA (names carry labels). */
  readonly badImages?: boolean;
  /** Adds junk entries: __MACOSX/, ._ files, .DS_Store, Thumbs.db. */
  readonly junk?: boolean;
  /** Adds a PNEUMONIA name with no class in it and one with both. */
  readonly unlabeled?: boolean;
  /** Image size in pixels. */
  readonly width?: number;
  readonly height?: number;
}

/**
 * The files of a miniature ChestXRay2017 tree: NORMAL names `IM-NNNN-0001.jpeg` and `NORMAL2-IM-NNNN-0001.jpeg`,
 * PNEUMONIA names `personN_bacteria_M.jpeg` and `personN_virus_M.jpeg`, two images per pneumonia patient where counts
 * allow, so patient grouping matters. Classes carry distinct patterns so a tiny model can learn them.
 */
export async function datasetFiles(options: DatasetFixtureOptions = {}): Promise<FixtureFile[]> {
  const prefix = options.prefix ?? 'chest_xray';
  const per = { train: 6, test: 3, val: 0, ...options.perClass };
  const size = { width: options.width ?? 40, height: options.height ?? 48 };
  const files: FixtureFile[] = [];
  let seed = 1;
  let image = 1000;
  for (const split of ['train', 'test', 'val'] as const) {
    const n = per[split];
    for (let i = 0; i < n; i++) {
      const normalName = i % 2 === 0 ? `IM-${String(100 + i).padStart(4, '0')}-0001.jpeg` : `NORMAL2-IM-${String(200 + i).padStart(4, '0')}-0001.jpeg`;
      files.push({ path: `${prefix}/${split}/NORMAL/${normalName}`, data: await makeJpeg({ seed: seed++, pattern: 'bright-left', ...size }) });
      const person = 10 + Math.floor(i / 2);
      files.push({ path: `${prefix}/${split}/PNEUMONIA/person${person}_bacteria_${image++}.jpeg`, data: await makeJpeg({ seed: seed++, pattern: 'bright-right', ...size }) });
      files.push({ path: `${prefix}/${split}/PNEUMONIA/person${person + 50}_virus_${image++}.jpeg`, data: await makeJpeg({ seed: seed++, pattern: 'stripes', ...size }) });
    }
  }
  if (options.badImages) {
    const good = await makeJpeg({ seed: 999, ...size });
    const corrupt = Buffer.from(good);
    corrupt.fill(0x5a, 150, 250); // inside the Huffman tables: a header-level corruption decoders must report
    files.push({ path: `${prefix}/train/PNEUMONIA/person900_bacteria_9001.jpeg`, data: corrupt });
    files.push({ path: `${prefix}/train/PNEUMONIA/person901_bacteria_9002.jpeg`, data: good.subarray(0, Math.floor(good.length / 2)) });
    files.push({ path: `${prefix}/train/PNEUMONIA/person902_virus_9003.jpeg`, data: Buffer.from('this is not an image\n') });
  }
  if (options.junk) {
    files.push({ path: `__MACOSX/${prefix}/train/NORMAL/._IM-0100-0001.jpeg`, data: Buffer.from('mac resource fork') });
    files.push({ path: `${prefix}/train/NORMAL/._IM-0100-0001.jpeg`, data: Buffer.from('mac resource fork') });
    files.push({ path: `${prefix}/train/.DS_Store`, data: Buffer.from('ds store') });
    files.push({ path: `${prefix}/test/PNEUMONIA/Thumbs.db`, data: Buffer.from('thumbs') });
  }
  if (options.unlabeled) {
    files.push({ path: `${prefix}/train/PNEUMONIA/person950_9501.jpeg`, data: await makeJpeg({ seed: 950, ...size }) });
    files.push({ path: `${prefix}/train/PNEUMONIA/person951_bacteria_virus_9502.jpeg`, data: await makeJpeg({ seed: 951, ...size }) });
  }
  return files;
}

/** Writes fixture files under `root`. */
export async function writeTree(root: string, files: readonly FixtureFile[]): Promise<void> {
  for (const f of files) {
    await mkdir(dirname(join(root, f.path)), { recursive: true });
    await writeFile(join(root, f.path), f.data);
  }
}

/** An s15Fixed16 number of an ICC profile. */
function s15Fixed16(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(Math.round(v * 65536));
  return b;
}

/**
 * A minimal ICC v2 monochrome display profile (description, copyright, D50 white point, a gamma curve), made here
 * byte by byte: ChestXRay2017's NORMAL originals carry a gray profile of gamma 1.8, and this one stands in for it.
 */
export function grayIccProfile(gamma: number): Buffer {
  const pad = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
  const text = 'pneumotype test gray';
  const tags: [string, Buffer][] = [
    ['desc', pad(Buffer.concat([Buffer.from('desc'), Buffer.alloc(4), Buffer.from([0, 0, 0, text.length + 1]), Buffer.from(`${text}\0`, 'latin1'), Buffer.alloc(78)]))],
    ['cprt', pad(Buffer.concat([Buffer.from('text'), Buffer.alloc(4), Buffer.from('none\0', 'latin1')]))],
    ['wtpt', Buffer.concat([Buffer.from('XYZ '), Buffer.alloc(4), s15Fixed16(0.9642), s15Fixed16(1), s15Fixed16(0.8249)])],
    // curv with one entry: the gamma as u8Fixed8.
    ['kTRC', Buffer.concat([Buffer.from('curv'), Buffer.alloc(4), Buffer.from([0, 0, 0, 1, Math.floor(gamma), Math.round((gamma % 1) * 256), 0, 0])])],
  ];
  let offset = 128 + 4 + 12 * tags.length;
  const table = [Buffer.from([0, 0, 0, tags.length])];
  for (const [signature, body] of tags) {
    const entry = Buffer.alloc(12);
    entry.write(signature, 0, 'latin1');
    entry.writeUInt32BE(offset, 4);
    entry.writeUInt32BE(body.length, 8);
    table.push(entry);
    offset += body.length;
  }
  const header = Buffer.alloc(128);
  header.writeUInt32BE(offset, 0);
  header.writeUInt32BE(0x02200000, 8);
  header.write('mntrGRAYXYZ ', 12, 'latin1');
  header.write('acsp', 36, 'latin1');
  Buffer.concat([s15Fixed16(0.9642), s15Fixed16(1), s15Fixed16(0.8249)]).copy(header, 68);
  return Buffer.concat([header, ...table, ...tags.map(([, body]) => body)]);
}

/** A grayscale JPEG with `profile` embedded as it is (an APP2 ICC_PROFILE segment after SOI), its pixels unchanged. */
export function withEmbeddedIcc(jpeg: Buffer, profile: Buffer): Buffer {
  const length = 2 + 12 + 2 + profile.length;
  const app2 = Buffer.concat([Buffer.from([0xff, 0xe2, length >> 8, length & 255]), Buffer.from('ICC_PROFILE\0', 'latin1'), Buffer.from([1, 1]), profile]);
  return Buffer.concat([jpeg.subarray(0, 2), app2, jpeg.subarray(2)]);
}
