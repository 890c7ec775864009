// Thumbnails of a model's training images: a copy of one is known again (re-encoded, resized), other images are not.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import sharp from 'sharp';
import { decodeGray } from '../lib/images.js';
import { SAME_IMAGE, THUMBNAIL_BYTES, seenInTraining, thumbnail } from '../lib/phash.js';
import { createRng } from '../lib/random.js';

/** A smooth random grayscale image (a random 6 x 6 grid, enlarged): different seeds, different images. */
async function smoothImage(seed: number, size = 96): Promise<Buffer> {
  const rng = createRng(seed);
  const grid = Buffer.from(Array.from({ length: 36 }, () => Math.floor(40 + rng() * 180)));
  return sharp(grid, { raw: { width: 6, height: 6, channels: 1 } }).resize(size, size, { kernel: 'cubic' }).png().toBuffer();
}

test('thumbnail: the whole image in 17 x 16 bytes, one channel', async () => {
  const px = await decodeGray(await smoothImage(1), { size: 64 });
  const t = await thumbnail(px, 64);
  assert.equal(t.length, THUMBNAIL_BYTES);
  assert.equal(THUMBNAIL_BYTES, 17 * 16);
  // Top half black, bottom half white: the first row is dark and the last bright (sharp writes raw one-channel input
  // back as three channels unless told, which would make 272 bytes a third of the image, each pixel thrice).
  const halves = Uint8Array.from({ length: 64 * 64 }, (_, i) => (i < 32 * 64 ? 0 : 255));
  const h = await thumbnail(halves, 64);
  assert.ok(Math.max(...h.subarray(0, 17)) < 10 && Math.min(...h.subarray(15 * 17)) > 245, JSON.stringify([...h]));
});

test('seenInTraining: the training images themselves and copies of them re-encoded or resized; not other images', async () => {
  const size = 64;
  const thumbOf = async (image: Buffer): Promise<Uint8Array> => thumbnail(await decodeGray(image, { size }), size);
  const training = await Promise.all([1, 2, 3, 4].map(async (s) => thumbOf(await smoothImage(s))));
  const file = new Uint8Array(training.length * THUMBNAIL_BYTES);
  training.forEach((t, k) => file.set(t, k * THUMBNAIL_BYTES));
  const original = await smoothImage(3);
  const queries = [
    await thumbOf(original), // 0: a training image
    await thumbOf(await sharp(original).jpeg({ quality: 60 }).toBuffer()), // 1: re-encoded
    await thumbOf(await sharp(original).resize(300, 300).png().toBuffer()), // 2: another size (a full-resolution copy)
    await thumbOf(await smoothImage(5)), // 3: another image
    await thumbOf(await sharp(Buffer.alloc(32 * 32, 128), { raw: { width: 32, height: 32, channels: 1 } }).png().toBuffer()), // 4: flat
  ];
  assert.deepEqual(seenInTraining(queries, file), [0, 1, 2]);
  // Both measures must agree: the same pattern under other noise correlates highly, but its fine gradients differ.
  const noisy = Uint8Array.from(training[0] ?? [], (v, i) => Math.max(0, Math.min(255, v + ((i * 7919) % 13) - 6)));
  assert.deepEqual(seenInTraining([noisy], file, { correlation: SAME_IMAGE.correlation, bits: 256 }), [0], 'correlated');
  assert.deepEqual(seenInTraining([noisy], file), [], 'but not the same image');
  assert.deepEqual(seenInTraining(queries, new Uint8Array(0)), [], 'a model without training thumbnails knows nothing');
});
