import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { ImageError } from '../lib/errors.js';
import { decodeGray, readImageInfo } from '../lib/images.js';
import { grayIccProfile, makeJpeg, withEmbeddedIcc } from './helpers/fixtures.js';

let dir = '';
let good: Buffer;
const file = (name: string): string => join(dir, name);
const q = (s: string): string => JSON.stringify(s);

function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body) >>> 0);
  return Buffer.concat([length, body, crc]);
}

/** A 1-bit PNG whose header claims width x height; its pixel data is a few bytes (a decompression bomb's header). */
function hugePng(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 0; // grayscale
  const signature = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
  return Buffer.concat([signature, pngChunk('IHDR', ihdr), pngChunk('IDAT', deflateSync(Buffer.alloc(16))), pngChunk('IEND', Buffer.alloc(0))]);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pneumotype-images-'));
  good = await makeJpeg({ seed: 7, width: 40, height: 48, pattern: 'bright-left' });
  // Garbage in the first Huffman table: corrupt whatever the encoder's exact output.
  const corrupt = Buffer.from(good);
  const dht = corrupt.indexOf(Buffer.from([0xff, 0xc4]));
  corrupt.fill(0xff, dht + 4, dht + 40);
  await writeFile(file('good.jpeg'), good);
  await writeFile(file('corrupt.jpeg'), corrupt);
  await writeFile(file('truncated.jpeg'), good.subarray(0, Math.floor(good.length / 2)));
  await writeFile(file('text.jpeg'), 'this is not an image\n');
  await writeFile(file('empty.jpeg'), '');
  await writeFile(file('huge.png'), hugePng(50000, 50000));
  await writeFile(file('vector.svg'), '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>');
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function rejectsWith(p: Promise<unknown>, message: string, withCause = false): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ImageError, `expected ImageError, got ${String(err)}`);
    assert.equal(err.message, message);
    assert.equal(err.code, 'ERR_IMAGE');
    if (withCause) assert.ok(err.cause instanceof Error, 'sharp error kept as cause');
    return true;
  });
}

test('readImageInfo reads the header', async () => {
  const info = await readImageInfo(file('good.jpeg'));
  assert.deepEqual({ width: info.width, height: info.height, format: info.format }, { width: 40, height: 48, format: 'jpeg' });
  assert.ok(info.channels >= 1);
  assert.deepEqual(await readImageInfo(good), info);
  // Header only: a truncated file still has a readable header.
  assert.equal((await readImageInfo(file('truncated.jpeg'))).width, 40);
});

test('decodeGray squashes to size x size grayscale bytes, deterministically', async () => {
  const a = await decodeGray(file('good.jpeg'), { size: 16 });
  assert.ok(a instanceof Uint8Array);
  assert.equal(a.length, 16 * 16);
  assert.deepEqual(await decodeGray(file('good.jpeg'), { size: 16 }), a);
  assert.deepEqual(await decodeGray(good, { size: 16 }), a);
  // The pattern survives: the left half is brighter than the right half.
  let left = 0;
  let right = 0;
  a.forEach((v, i) => {
    if (i % 16 < 8) left += v;
    else right += v;
  });
  assert.ok(left > right + 16 * 8 * 50, `left ${left} right ${right}`);
  // Same result as sharp's own squash with Lanczos 3.
  const direct = await sharp(good).grayscale().resize(16, 16, { fit: 'fill', kernel: 'lanczos3' }).raw().toBuffer();
  assert.deepEqual(Buffer.from(a), direct);
  // Colour and alpha inputs come out as one channel too.
  const rgba = await sharp({ create: { width: 30, height: 20, channels: 4, background: { r: 200, g: 10, b: 10, alpha: 0.5 } } }).png().toBuffer();
  assert.equal((await decodeGray(rgba, { size: 8 })).length, 64);
});

test('transparency is ignored: a transparent image decodes like the same image without its alpha channel, not black', async () => {
  const gray = await sharp(good).grayscale().png().toBuffer();
  const plain = await decodeGray(gray, { size: 16 });
  for (const alpha of [0, 0.5, 1]) {
    const withAlpha = await sharp(good).grayscale().ensureAlpha(alpha).png().toBuffer();
    assert.equal((await sharp(withAlpha).metadata()).hasAlpha, true);
    assert.deepEqual(await decodeGray(withAlpha, { size: 16 }), plain, `alpha ${alpha}`);
  }
  assert.ok(plain.reduce((a, b) => a + b, 0) / plain.length > 60, 'the fixture is not black itself');
});

test('16-bit images: full range as is; 12-bit (DICOM exports) and 8-bit data in a 16-bit file scaled to full range; float and signed pixels refused', async () => {
  const { data, info } = await sharp(good).grayscale().raw().toBuffer({ resolveWithObject: true });
  // A 16-bit grayscale PNG written by hand: each pixel v * 257 (full range) shifted right by `shift` bits.
  const sixteen = (shift: number): Buffer => {
    const rows: Buffer[] = [];
    for (let y = 0; y < info.height; y++) {
      const row = Buffer.alloc(1 + 2 * info.width); // filter byte 0, then big-endian samples
      for (let x = 0; x < info.width; x++) row.writeUInt16BE(((data[y * info.width + x] ?? 0) * 257) >> shift, 1 + 2 * x);
      rows.push(row);
    }
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(info.width, 0);
    ihdr.writeUInt32BE(info.height, 4);
    ihdr[8] = 16; // bit depth
    ihdr[9] = 0; // grayscale
    const signature = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
    return Buffer.concat([signature, pngChunk('IHDR', ihdr), pngChunk('IDAT', deflateSync(Buffer.concat(rows))), pngChunk('IEND', Buffer.alloc(0))]);
  };
  const full = await decodeGray(sixteen(0), { size: 16 });
  const mean = (px: Uint8Array): number => px.reduce((a, b) => a + b, 0) / px.length;
  assert.ok(mean(full) > 60, 'the full-range fixture is not dark');
  for (const [shift, what] of [[4, '12-bit'], [8, '8-bit']] as const) {
    const px = await decodeGray(sixteen(shift), { size: 16 });
    assert.ok(Math.abs(mean(px) - mean(full)) < 2, `${what} data: mean ${mean(px)} against ${mean(full)} at full range`);
  }
  // Float and signed TIFFs (written by hand: 32x32, one uncompressed strip; SampleFormat 3 float, 2 signed).
  const tiff = (pixels: Buffer, bits: number, sampleFormat: number): Buffer => {
    const tags: [number, number, number][] = [
      [256, 3, 32], [257, 3, 32], [258, 3, bits], [259, 3, 1], [262, 3, 1], [273, 4, 8], [277, 3, 1], [278, 3, 32], [279, 4, pixels.length], [339, 3, sampleFormat],
    ];
    const ifd = Buffer.alloc(2 + 12 * tags.length + 4);
    ifd.writeUInt16LE(tags.length, 0);
    tags.forEach(([tag, type, value], i) => {
      ifd.writeUInt16LE(tag, 2 + 12 * i);
      ifd.writeUInt16LE(type, 4 + 12 * i);
      ifd.writeUInt32LE(1, 6 + 12 * i);
      if (type === 3) ifd.writeUInt16LE(value, 10 + 12 * i);
      else ifd.writeUInt32LE(value, 10 + 12 * i);
    });
    const head = Buffer.from([0x49, 0x49, 42, 0, 0, 0, 0, 0]);
    head.writeUInt32LE(8 + pixels.length, 4);
    return Buffer.concat([head, pixels, ifd]);
  };
  const float = tiff(Buffer.from(new Float32Array(32 * 32).fill(0.5).buffer), 32, 3);
  assert.equal((await sharp(float).metadata()).depth, 'float', 'the fixture is a float TIFF');
  await rejectsWith(
    decodeGray(float, { size: 16, name: 'scan.tif' }),
    '"scan.tif": its pixels are 32-bit floating point (float): expected 8- or 16-bit unsigned integers; export it as an 8- or 16-bit PNG, JPEG or TIFF',
  );
  await rejectsWith(
    readImageInfo(tiff(Buffer.from(new Int16Array(32 * 32).fill(8192).buffer), 16, 2), { name: 'signed.tif' }),
    '"signed.tif": its pixels are signed 16-bit integers (short): expected 8- or 16-bit unsigned integers; export it as an 8- or 16-bit PNG, JPEG or TIFF',
  );
});

test('a corrupt JPEG is not a decodable image', async () => {
  const msg = `${q(file('corrupt.jpeg'))}: not a decodable image (corrupt data: VipsJpeg: Bogus Huffman table definition)`;
  await rejectsWith(decodeGray(file('corrupt.jpeg'), { size: 16 }), msg, true);
  await rejectsWith(readImageInfo(file('corrupt.jpeg')), msg, true);
});

test('a JPEG with damaged scan data is refused, not decoded to garbage', async () => {
  // A marker in the middle of the entropy-coded data: libjpeg only warns ("Corrupt JPEG data") and goes on.
  const damaged = Buffer.from(good);
  const sos = damaged.indexOf(Buffer.from([0xff, 0xda]));
  const start = sos + 2 + damaged.readUInt16BE(sos + 2);
  const mid = start + Math.floor((damaged.length - 2 - start) / 2);
  damaged[mid] = 0xff;
  damaged[mid + 1] = 0xd3;
  await sharp(damaged, { failOn: 'error' }).raw().toBuffer(); // what a lenient decoder accepts
  await rejectsWith(
    decodeGray(damaged, { size: 16, name: 'damaged.jpeg' }),
    '"damaged.jpeg": not a decodable image (corrupt data: VipsJpeg: Corrupt JPEG data: premature end of data segment)',
    true,
  );
});

test('a truncated JPEG fails the full decode', async () => {
  await rejectsWith(
    decodeGray(file('truncated.jpeg'), { size: 16 }),
    `${q(file('truncated.jpeg'))} is truncated: the data ends before the image is complete (VipsJpeg: premature end of JPEG image)`,
    true,
  );
});

test('a text file, an empty file and an SVG are refused', async () => {
  await rejectsWith(
    decodeGray(file('text.jpeg'), { size: 16 }),
    `${q(file('text.jpeg'))}: not a decodable image (unsupported or unrecognised format)`,
    true,
  );
  await rejectsWith(readImageInfo(file('empty.jpeg')), `${q(file('empty.jpeg'))}: not a decodable image (the file is empty)`);
  await rejectsWith(
    decodeGray(file('vector.svg'), { size: 16 }),
    `${q(file('vector.svg'))}: not a decodable image (format "svg" is not accepted: expected jpeg, png, webp, tiff)`,
  );
  await rejectsWith(
    decodeGray(Buffer.from('nope'), { size: 16 }),
    '"<buffer>": not a decodable image (unsupported or unrecognised format)',
  );
  await rejectsWith(
    decodeGray(Buffer.from('nope'), { size: 16, name: 'upload.jpeg' }),
    '"upload.jpeg": not a decodable image (unsupported or unrecognised format)',
  );
});

test('an image with too many pixels is refused before decoding', async () => {
  const msg =
    `${q(file('huge.png'))} has 50000x50000 = 2500000000 pixels, more than the limit of 40000000 (maxInputPixels); ` +
    'raise maxInputPixels if the image is trusted';
  await rejectsWith(readImageInfo(file('huge.png')), msg);
  await rejectsWith(decodeGray(file('huge.png'), { size: 16 }), msg);
  await rejectsWith(
    decodeGray(good, { size: 16, maxInputPixels: 1000 }),
    '"<buffer>" has 40x48 = 1920 pixels, more than the limit of 1000 (maxInputPixels); raise maxInputPixels if the image is trusted',
  );
});

test('an image under 16 pixels on a side (a tracking pixel, an icon) is refused, 16 is accepted', async () => {
  const png = (width: number, height: number): Promise<Buffer> =>
    sharp({ create: { width, height, channels: 3, background: { r: 90, g: 90, b: 90 } } }).png().toBuffer();
  await rejectsWith(
    decodeGray(await png(1, 1), { size: 16 }),
    '"<buffer>" is 1x1 pixels: too small for a chest X-ray (expected at least 16 pixels on each side; an icon or a thumbnail?)',
  );
  await rejectsWith(
    readImageInfo(await png(200, 15)),
    '"<buffer>" is 200x15 pixels: too small for a chest X-ray (expected at least 16 pixels on each side; an icon or a thumbnail?)',
  );
  assert.equal((await decodeGray(await png(16, 16), { size: 16 })).length, 256);
});

test('a file with too many bytes is refused before it is read', async () => {
  await rejectsWith(
    decodeGray(file('good.jpeg'), { size: 16, maxInputBytes: 100 }),
    `${q(file('good.jpeg'))} is ${good.length} bytes, more than the limit of 100 (maxInputBytes); raise maxInputBytes if the file is trusted`,
  );
  await rejectsWith(
    readImageInfo(good, { maxInputBytes: 100 }),
    `"<buffer>" is ${good.length} bytes, more than the limit of 100 (maxInputBytes); raise maxInputBytes if the file is trusted`,
  );
});

test('a missing file and a bad size are reported', async () => {
  const missing = file('missing.jpeg');
  await rejectsWith(
    decodeGray(missing, { size: 16 }),
    `${q(missing)}: cannot be read (ENOENT: no such file or directory, stat '${missing}')`,
    true,
  );
  await rejectsWith(decodeGray(good, { size: 0 }), 'image size 0 is not valid: expected an integer from 1 to 4096');
});

test('an embedded ICC profile is ignored: the pixels as stored, as the shared copies were made (else 12 levels brighter)', async () => {
  const width = 64;
  const ramp = Buffer.from(Array.from({ length: width * width }, (_, i) => (i % width) * 4));
  const plain = await sharp(ramp, { raw: { width, height: width, channels: 1 } }).toColourspace('b-w').jpeg({ quality: 95 }).toBuffer();
  const tagged = withEmbeddedIcc(plain, grayIccProfile(1.8));
  assert.equal((await sharp(tagged).metadata()).icc?.length, grayIccProfile(1.8).length);
  // What libvips makes of it when asked to convert through the profile: the gamma-1.8 gray brightened towards sRGB.
  const converted = await sharp(tagged).grayscale().raw().toBuffer();
  const asStored = await sharp(plain).grayscale().raw().toBuffer();
  const bias = converted.reduce((a, v, i) => a + v - asStored[i]!, 0) / converted.length;
  assert.ok(bias > 10, `the profile brightens by ${bias} levels through libvips`);
  assert.deepEqual(await decodeGray(tagged, { size: 32 }), await decodeGray(plain, { size: 32 }));
});
