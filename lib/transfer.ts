// Transfer learning: start from a pretrained tfjs layers model (a folder or URL), keep its features, new 3-class head.
import { stat } from 'node:fs/promises';
import type { LayersModel, SymbolicTensor, io } from '@tensorflow/tfjs';
import { readModelArtifacts } from './checkpoint.js';
import { CLASSES } from './config.js';
import { ConfigError, messageOf, quote } from './errors.js';
import { fromKeras3 } from './keras3.js';
import { loadTf } from './tf.js';

export interface TransferOptions {
  /** A folder holding model.json (+ weights), or an http(s) URL of a model.json (e.g. a MobileNetV2 converted from Keras). */
  readonly from: string;
  /** Input side in pixels; the pretrained model must accept it (most convolutional bases accept any size). */
  readonly imageSize: number;
  readonly dropout?: number;
  /** Name of the layer whose output feeds the new head (default: the last layer with a 4-D output, pooled). */
  readonly featureLayer?: string;
  /**
   * Freeze the pretrained layers (train the head only). Default false. Each pretrained layer carries the flag itself,
   * so it survives saving and loading (and so `--resume`): tfjs saves no trainable flag for a nested model. Its
   * batch-normalisation layers keep their scale and offset, and in {@link train} (or under
   * {@link holdFrozenBatchNorms}) also their moving statistics, as in Keras.
   */
  readonly freeze?: boolean;
  readonly seed?: number;
}

type Layer = LayersModel['layers'][number];
type CallFn = (inputs: unknown, kwargs: Record<string, unknown>) => unknown;

/** Every layer of `model`, those of nested models included (depth first), each frozen if it or a model holding it is. */
function allLayers(model: { layers: readonly Layer[] }, frozen = false): Array<{ layer: Layer; frozen: boolean }> {
  return model.layers.flatMap((layer) => {
    const here = { layer, frozen: frozen || !layer.trainable };
    const nested = (layer as unknown as { layers?: readonly Layer[] }).layers;
    return Array.isArray(nested) ? [here, ...allLayers({ layers: nested }, here.frozen)] : [here];
  });
}

/** Layers held in inference mode by a live {@link holdFrozenBatchNorms}. */
const held = new WeakSet<Layer>();

/**
 * Makes every frozen BatchNormalization layer of `model` (`trainable` false, or inside a nested model that is)
 * normalise with its moving statistics and leave them as they are, in training too: what Keras does with a frozen
 * batch norm, and what a frozen pretrained trunk needs. tfjs-layers passes `training` to every layer, so a frozen batch
 * norm would otherwise normalise each batch by its own statistics and drift its moving averages towards the new data.
 * Replaces the `call` of those layer instances; nothing about the saved model changes. {@link train} applies it to
 * every run.
 * Returns the undo function.
 *
 * @example
 * const undo = holdFrozenBatchNorms(model);
 * try { optimizer.minimize(() => loss(model.apply(xs, { training: true }))); } finally { undo(); }
 */
export function holdFrozenBatchNorms(model: LayersModel): () => void {
  const patched: Array<{ layer: Layer; own: boolean; before: CallFn }> = [];
  for (const { layer, frozen } of allLayers(model)) {
    if (layer.getClassName() !== 'BatchNormalization' || !frozen || held.has(layer)) continue;
    const target = layer as unknown as { call: CallFn };
    const before = target.call;
    patched.push({ layer, own: Object.prototype.hasOwnProperty.call(layer, 'call'), before });
    held.add(layer);
    target.call = (inputs, kwargs) => before.call(layer, inputs, { ...kwargs, training: false });
  }
  return () => {
    for (const { layer, own, before } of patched.splice(0)) {
      held.delete(layer);
      if (own) (layer as unknown as { call: CallFn }).call = before;
      else Reflect.deleteProperty(layer, 'call');
    }
  };
}

/**
 * Loads the pretrained model, saying what was tried when it cannot be had (offline, 404, not a layers model). A
 * model.json written from Keras 3 is read too (lib/keras3.ts).
 */
async function loadPretrained(from: string): Promise<LayersModel> {
  const tf = loadTf();
  const isUrl = /^https?:\/\//i.test(from);
  try {
    let artifacts: io.ModelArtifacts;
    if (isUrl) {
      const handler = tf.io.http(from);
      if (!handler.load) throw new Error('tfjs has no HTTP loader');
      artifacts = await handler.load();
    } else {
      const s = await stat(from).catch(() => undefined);
      if (!s?.isDirectory()) throw new Error('not a folder holding model.json');
      artifacts = await readModelArtifacts(from);
    }
    return await tf.loadLayersModel(tf.io.fromMemory(fromKeras3(artifacts)));
  } catch (err) {
    throw new ConfigError(
      `cannot start from the pretrained model ${quote(from)}: ${isUrl ? 'downloading it' : 'reading it'} failed (${messageOf(err)}). ` +
        `Tried ${isUrl ? 'the tfjs layers model.json at that URL (needs the internet)' : 'model.json and its weights in that folder'}; ` +
        'without it, train from scratch (leave out --init-from).',
      { path: from, cause: err },
    );
  }
}

/**
 * A classifier made of a pretrained model's features and a new head (dropout + dense softmax over CLASSES). A
 * 1-channel input is repeated to the 3 channels most pretrained models expect, by a fixed 1x1 convolution.
 *
 * @example const model = await buildTransferModel({ from: 'models/mobilenet_v2_tfjs', imageSize: 224 })
 */
export async function buildTransferModel(options: TransferOptions): Promise<LayersModel> {
  const tf = loadTf();
  const base = await loadPretrained(options.from);
  const inShape = base.inputs[0]?.shape ?? [];
  const channels = inShape[3] ?? 1;
  if (inShape.length !== 4 || (channels !== 1 && channels !== 3)) {
    base.dispose();
    throw new ConfigError(`the pretrained model ${quote(options.from)} takes inputs of shape ${quote(inShape)}: expected [null, H, W, 1 or 3]`, { path: options.from });
  }
  const featureName = options.featureLayer ?? [...base.layers].reverse().find((l) => {
    const shape = l.outputShape as (number | null)[];
    return Array.isArray(shape) && shape.length === 4;
  })?.name;
  const featureLayer = featureName === undefined ? undefined : base.layers.find((l) => l.name === featureName);
  if (!featureLayer) {
    base.dispose();
    throw new ConfigError(`the pretrained model ${quote(options.from)} has no layer ${quote(options.featureLayer ?? '(4-D output)')} to take features from`, { path: options.from });
  }
  const trunk = tf.model({ inputs: base.inputs, outputs: featureLayer.output as SymbolicTensor });
  // Layer by layer, not on the nested model: its own flag is lost on saving, its layers' flags are kept.
  if (options.freeze) for (const layer of trunk.layers) layer.trainable = false;
  const input = tf.input({ shape: [options.imageSize, options.imageSize, 1], name: 'gray_input' });
  let x: SymbolicTensor = input;
  if (channels === 3) {
    x = tf.layers
      .conv2d({ filters: 3, kernelSize: 1, useBias: false, trainable: false, kernelInitializer: 'ones', name: 'gray_to_rgb' })
      .apply(x) as SymbolicTensor;
  }
  x = trunk.apply(x) as SymbolicTensor;
  x = tf.layers.globalAveragePooling2d({ name: 'head_pool' }).apply(x) as SymbolicTensor;
  if ((options.dropout ?? 0.2) > 0) x = tf.layers.dropout({ rate: options.dropout ?? 0.2, name: 'head_dropout' }).apply(x) as SymbolicTensor;
  const out = tf.layers
    .dense({ units: CLASSES.length, activation: 'softmax', name: 'head_logits', kernelInitializer: tf.initializers.glorotUniform({ seed: options.seed ?? 42 }) })
    .apply(x) as SymbolicTensor;
  return tf.model({ inputs: input, outputs: out, name: 'transfer' });
}
