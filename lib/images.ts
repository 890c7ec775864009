// Image decoding with sharp: header checks (format, bytes, pixels) and full grayscale decode to a square size.
import { readFile, stat } from 'node:fs/promises';
import sharp from 'sharp';
import { DEFAULTS } from './config.js';
import { ImageError, messageOf, quote } from './errors.js';

/** An image that could not be used, and why (an ImageError's message, a file changed since relabel, …). */
export interface FailedImage {
  readonly file: string;
  readonly reason: string;
}

/** What an image's header says, read without decoding pixels. */
export interface ImageInfo {
  readonly width: number;
  readonly height: number;
  /** Channels as stored (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA/CMYK). */
  readonly channels: number;
  /** sharp's format name: 'jpeg', 'png', 'webp', 'tiff'. */
  readonly format: string;
}

/** Limits applied before any pixel is decoded. */
export interface ImageLimits {
  /** Files larger than this are refused without being read (DEFAULTS.maxInputBytes). */
  maxInputBytes?: number;
  /** Images whose header claims more pixels than this are refused (DEFAULTS.maxInputPixels). */
  maxInputPixels?: number;
  /** Names a Buffer input in error messages (a path input names itself). */
  name?: string;
}

/** Raster formats accepted as X-rays; vector and document formats (svg, pdf) are refused. */
export const IMAGE_FORMATS = ['jpeg', 'png', 'webp', 'tiff'] as const;

const BUFFER_NAME = '<buffer>';

function nameOf(input: string | Buffer, options: ImageLimits): string {
  return typeof input === 'string' ? input : (options.name ?? BUFFER_NAME);
}

/** Reads the bytes of `input` after checking its size, so a huge file is refused before it is read. */
async function loadBytes(input: string | Buffer, name: string, maxInputBytes: number): Promise<Buffer> {
  let size: number;
  if (typeof input === 'string') {
    try {
      size = (await stat(input)).size;
    } catch (err) {
      throw new ImageError(`${quote(name)}: cannot be read (${messageOf(err)})`, { path: name, cause: err });
    }
  } else size = input.length;
  if (size > maxInputBytes) {
    throw new ImageError(
      `${quote(name)} is ${size} bytes, more than the limit of ${maxInputBytes} (maxInputBytes); ` +
        'raise maxInputBytes if the file is trusted',
      { path: name },
    );
  }
  if (size === 0) throw new ImageError(`${quote(name)}: not a decodable image (the file is empty)`, { path: name });
  if (typeof input !== 'string') return input;
  try {
    return await readFile(input);
  } catch (err) {
    throw new ImageError(`${quote(name)}: cannot be read (${messageOf(err)})`, { path: name, cause: err });
  }
}

/** Turns a sharp/libvips error into an ImageError that names the file and says what kind of failure it was. */
function wrapSharpError(err: unknown, name: string): ImageError {
  // libvips may put several lines in one error (a warning, then the error): keep them all, on one line.
  const raw = messageOf(err)
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .join('; ')
    .replace(/^Input (?:buffer|file) has corrupt header: /i, '');
  if (/premature end|truncated|unexpected end|end of (?:file|data|stream)|not enough data/i.test(raw) && !/corrupt jpeg data/i.test(raw)) {
    return new ImageError(
      `${quote(name)} is truncated: the data ends before the image is complete (${raw})`,
      { path: name, cause: err },
    );
  }
  if (/unsupported image format/i.test(raw)) {
    return new ImageError(`${quote(name)}: not a decodable image (unsupported or unrecognised format)`, {
      path: name,
      cause: err,
    });
  }
  if (/exceeds pixel limit/i.test(raw)) {
    return new ImageError(`${quote(name)}: not a decodable image (${raw}; see maxInputPixels)`, { path: name, cause: err });
  }
  return new ImageError(`${quote(name)}: not a decodable image (corrupt data: ${raw || 'unknown decoder error'})`, {
    path: name,
    cause: err,
  });
}

function checkHeader(meta: sharp.Metadata, name: string, maxInputPixels: number): ImageInfo {
  const format = meta.format ?? 'unknown';
  if (!(IMAGE_FORMATS as readonly string[]).includes(format)) {
    throw new ImageError(
      `${quote(name)}: not a decodable image (format ${quote(format)} is not accepted: expected ${IMAGE_FORMATS.join(', ')})`,
      { path: name },
    );
  }
  const width = meta.width ?? 0;
  const height = meta.height ?? 0;
  if (!(width > 0 && height > 0)) {
    throw new ImageError(`${quote(name)}: not a decodable image (the header gives no size)`, { path: name });
  }
  if (width < DEFAULTS.minInputSide || height < DEFAULTS.minInputSide) {
    throw new ImageError(
      `${quote(name)} is ${width}x${height} pixels: too small for a chest X-ray (expected at least ${DEFAULTS.minInputSide} ` +
        'pixels on each side; an icon or a thumbnail?)',
      { path: name },
    );
  }
  const pixels = width * height;
  if (pixels > maxInputPixels) {
    throw new ImageError(
      `${quote(name)} has ${width}x${height} = ${pixels} pixels, more than the limit of ${maxInputPixels} ` +
        '(maxInputPixels); raise maxInputPixels if the image is trusted',
      { path: name },
    );
  }
  const depth = meta.depth ?? 'uchar';
  if (depth !== 'uchar' && depth !== 'ushort') {
    // Clipped to 8 bits these come out black or washed out, and a model would still answer with confidence.
    throw new ImageError(
      `${quote(name)}: its pixels are ${PIXEL_DEPTHS[depth] ?? depth} (${depth}): expected 8- or 16-bit unsigned integers; ` +
        'export it as an 8- or 16-bit PNG, JPEG or TIFF',
      { path: name },
    );
  }
  return { width, height, channels: meta.channels ?? 0, format };
}

/** What sharp's depth names mean, for errors. */
const PIXEL_DEPTHS: Readonly<Record<string, string>> = {
  char: 'signed 8-bit integers', short: 'signed 16-bit integers', uint: 'unsigned 32-bit integers', int: 'signed 32-bit integers',
  float: '32-bit floating point', double: '64-bit floating point', complex: 'complex numbers', dpcomplex: 'complex numbers',
};

/**
 * The factor that brings 16-bit pixels to their full range: 16-bit containers often hold fewer bits (12 from a DICOM
 * export of a 12-bit detector, 8 from a converted JPEG), which the conversion to 8 bits would leave dark. The
 * brightest value decides: the smallest of 8, 10, 12, 14 or 16 bits that holds it (an X-ray's brightest pixels,
 * bone and markers, are near the top of its range), and the factor is 2 to the power of the bits it lacks.
 *
 * @example fullRangeFactor(4095) // 16: 12-bit data
 */
export function fullRangeFactor(brightest: number): number {
  const bits = [8, 10, 12, 14].find((b) => brightest < 2 ** b) ?? 16;
  return 2 ** (16 - bits);
}

// libvips keeps one error buffer per process: when two operations fail at once, one of them may report the other's
// message or "Unknown error". Operations run "shared"; a failed one is retried "alone" (after the shared ones in
// flight finish, with new ones held back), so the error it reports is its own. Failures are rare, so this is cheap.
let active = 0;
let exclusive: Promise<void> | undefined;
let idleWaiters: (() => void)[] = [];

async function shared<T>(op: () => Promise<T>): Promise<T> {
  while (exclusive) await exclusive;
  active++;
  try {
    return await op();
  } finally {
    active--;
    if (active === 0) {
      const waiters = idleWaiters;
      idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}

async function alone<T>(op: () => Promise<T>): Promise<T> {
  while (exclusive) await exclusive;
  let release = (): void => {};
  exclusive = new Promise<void>((resolve) => {
    release = resolve;
  });
  try {
    while (active > 0) await new Promise<void>((resolve) => idleWaiters.push(resolve));
    return await op();
  } finally {
    exclusive = undefined;
    release();
  }
}

/**
 * Runs a sharp operation; a failure is retried alone once and reported as an ImageError naming the file. Every sharp
 * call of the project goes through here so that concurrent failures report their own libvips message.
 *
 * @example const px = await runSharp(() => sharp(buf).raw().toBuffer(), 'scan.jpeg')
 */
export async function runSharp<T>(op: () => Promise<T>, name: string): Promise<T> {
  try {
    return await shared(op);
  } catch {
    try {
      return await alone(op);
    } catch (err) {
      throw wrapSharpError(err, name);
    }
  }
}

async function header(data: Buffer, name: string, maxInputPixels: number): Promise<ImageInfo & { hasAlpha: boolean; sixteenBit: boolean }> {
  // The pixel limit is checked by checkHeader with a clearer message; sharp's own limit is off for the header read.
  const meta = await runSharp(() => sharp(data, { failOn: 'error', limitInputPixels: false }).metadata(), name);
  return { ...checkHeader(meta, name, maxInputPixels), hasAlpha: meta.hasAlpha === true, sixteenBit: meta.depth === 'ushort' };
}

/**
 * Reads an image's header (size, channels, format) without decoding its pixels. Refuses, with an ImageError naming
 * the file, inputs larger than `maxInputBytes`, headers claiming more than `maxInputPixels`, and anything that is not
 * a JPEG, PNG, WebP or TIFF image. It does not notice truncated or corrupt pixel data: {@link decodeGray} does.
 *
 * @example const { width, height } = await readImageInfo('data/labeled/train/virus/person1_virus_6.jpeg')
 */
export async function readImageInfo(input: string | Buffer, options: ImageLimits = {}): Promise<ImageInfo> {
  const name = nameOf(input, options);
  const data = await loadBytes(input, name, options.maxInputBytes ?? DEFAULTS.maxInputBytes);
  const { width, height, channels, format } = await header(data, name, options.maxInputPixels ?? DEFAULTS.maxInputPixels);
  return { width, height, channels, format };
}

/**
 * The largest of every `stride`-th sample, read in slices with a turn of the event loop between them: a 36-megapixel
 * scan is about 30 ms of looping, which a server answering /ping must not spend in one go.
 */
async function brightestSample(samples: Uint16Array, stride: number): Promise<number> {
  const slice = 1 << 20;
  let brightest = 0;
  for (let start = 0; start < samples.length; start += slice * stride) {
    if (start > 0) await new Promise<void>((done) => setImmediate(done));
    const end = Math.min(samples.length, start + slice * stride);
    for (let i = start; i < end; i += stride) brightest = Math.max(brightest, samples[i] ?? 0);
  }
  return brightest;
}

/** Options of {@link decodeGray}. */
export interface DecodeOptions extends ImageLimits {
  /** Output width and height in pixels: the image is squashed to a square (sharp fit 'fill'), not cropped. */
  size: number;
}

/**
 * Decodes a whole image to 8-bit grayscale and resizes it to `size` x `size` (squashed, Lanczos 3), as the shared
 * data were made. The whole pixel stream is decoded, so truncated and corrupt files fail with an ImageError instead
 * of coming back half grey. Returns `size * size` bytes, row-major.
 *
 * @example const pixels = await decodeGray('scan.jpeg', { size: 224 }) // Uint8Array(50176)
 */
export async function decodeGray(input: string | Buffer, options: DecodeOptions): Promise<Uint8Array> {
  const { size } = options;
  if (!Number.isInteger(size) || size < 1 || size > 4096) {
    throw new ImageError(`image size ${quote(size)} is not valid: expected an integer from 1 to 4096`);
  }
  const name = nameOf(input, options);
  const maxInputPixels = options.maxInputPixels ?? DEFAULTS.maxInputPixels;
  const data = await loadBytes(input, name, options.maxInputBytes ?? DEFAULTS.maxInputBytes);
  const { format, hasAlpha, sixteenBit } = await header(data, name, maxInputPixels);
  // libjpeg reports damaged scan data ("Corrupt JPEG data: …") only as a warning: stop on it (sharp's own default).
  // Not for PNG, where libpng warns about harmless chunks (a known-incorrect sRGB profile, say).
  const failOn = format === 'jpeg' ? 'warning' : 'error';
  // An embedded ICC profile is ignored: the pixels are taken as stored. libvips would convert 8-bit images through
  // it but not 16-bit ones, and in ChestXRay2017 only the NORMAL originals carry one (Apple's Generic Gray, gamma
  // 1.8: 14 levels brighter on average through it), so applying it would hand a model a brightness shortcut. The
  // shared 224 px copies were made without it (within 0.1 level on average when it is ignored here).
  const opening: sharp.SharpOptions = { failOn, limitInputPixels: maxInputPixels, autoOrient: true, ignoreIcc: true };
  const decode = (): sharp.Sharp => sharp(data, opening).removeAlpha().grayscale();
  const squash = (image: sharp.Sharp): Promise<{ data: Buffer; info: sharp.OutputInfo }> =>
    image.resize(size, size, { fit: 'fill', kernel: 'lanczos3' }).raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  const out = await runSharp(async () => {
    if (sixteenBit) {
      // 16-bit pixels are brought to 8 bits here, scaled to their full range first (fullRangeFactor): 12-bit data (a
      // DICOM export) would come out nearly black through libvips's own conversion, which divides by 256.
      const wide = await sharp(data, opening)
        .removeAlpha()
        .toColourspace('grey16')
        .raw({ depth: 'ushort' })
        .toBuffer({ resolveWithObject: true });
      const { width, height, channels } = wide.info;
      const samples = new Uint16Array(wide.data.buffer, wide.data.byteOffset, wide.data.byteLength >> 1);
      const scale = fullRangeFactor(await brightestSample(samples, channels)) / 256;
      // The scaling and the resize are libvips's, on its threads (a loop here held a server's event loop for seconds
      // under large 16-bit images). A Uint16Array is 16-bit raw input to sharp; kept at 16 bits until linear(),
      // which gives floor(v * scale), as libvips's v >> 8 at full range.
      const image = sharp(samples, { raw: { width, height, channels }, limitInputPixels: maxInputPixels });
      return squash((channels > 1 ? image.extractChannel(0) : image).toColourspace('grey16').linear(scale, 0));
    }
    if (!hasAlpha) return squash(decode());
    // libvips resizes an image with alpha premultiplied, so removeAlpha would leave transparent pixels black: the
    // alpha goes first, in a pass of its own, and the opaque pixels are resized as they are.
    const flat = await decode().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    const { width, height, channels } = flat.info;
    return squash(sharp(flat.data, { raw: { width, height, channels }, limitInputPixels: maxInputPixels }));
  }, name);
  const { width, height, channels } = out.info;
  if (width !== size || height !== size || out.data.length !== size * size * channels) {
    throw new ImageError(
      `${quote(name)}: not a decodable image (decoded to ${width}x${height}x${channels}, expected ${size}x${size}x1)`,
      { path: name },
    );
  }
  if (channels === 1) return new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.byteLength);
  // libvips keeps 3 bands for some colour inputs; they are equal after grayscale, so keep the first.
  const gray = new Uint8Array(size * size);
  for (let i = 0; i < gray.length; i++) gray[i] = out.data[i * channels] ?? 0;
  return gray;
}
