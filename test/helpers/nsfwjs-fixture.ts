// Test helper: real tfjs-converter output with stand-in weights: the model.json of nsfwjs 4.4.0's MobileNetV2
// (test/fixtures/nsfwjs-mobilenet_v2.model.json.gz, written by scripts/pretrained-nsfwjs.mjs; MIT, (c) 2019 Infinite
// Red, Inc.), and a weight shard of hashed bytes in its own uint8 quantization.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

interface Manifest {
  paths: string[];
  weights: Array<{ name: string; shape: number[]; dtype: string; quantization?: { dtype: string } }>;
}

/** The model.json as nsfwjs ships it: Keras 2.2.4, 162 layers, blocks 0-10 marked frozen, a 5-class head. */
export const nsfwjsModelJson = JSON.parse(gunzipSync(await readFile(new URL('../fixtures/nsfwjs-mobilenet_v2.model.json.gz', import.meta.url))).toString('utf8')) as {
  modelTopology: { model_config: { config: { layers: Array<{ name: string; class_name: string; config: Record<string, unknown> }> } } };
  weightsManifest: Manifest[];
};

/** Writes the model to `dir` as a folder of model.json and its one shard (no file extension, as nsfwjs names it). */
export async function writeNsfwjsModel(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const [group] = nsfwjsModelJson.weightsManifest;
  if (!group || group.paths.length !== 1) throw new Error('expected one weight group of one shard');
  const bytes = group.weights.reduce((sum, w) => {
    if (w.quantization?.dtype !== 'uint8') throw new Error(`${w.name}: expected uint8 quantization`);
    return sum + w.shape.reduce((a, b) => a * b, 1);
  }, 0);
  // Every uint8 level equally often, in a hashed order: weights spread over each tensor's own quantized range.
  const shard = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) shard[i] = ((i * 2654435761) >>> 24) & 255;
  await writeFile(join(dir, group.paths[0] as string), shard);
  await writeFile(join(dir, 'model.json'), JSON.stringify(nsfwjsModelJson));
}
