// Transfer learning: start from a pretrained tfjs layers model (a folder or URL), keep its features, new 3-class head.
import { stat } from 'node:fs/promises';
import type { LayersModel, SymbolicTensor, io } from '@tensorflow/tfjs';
import { arrayBufferOf, readModelArtifacts, weightsManifestBytes } from './checkpoint.js';
import { CLASSES } from './config.js';
import { ConfigError, causeChain, messageOf, quote } from './errors.js';
import { replaceLayerCall } from './fast-train.js';
import { isHttpUrl, maskUserInfo, shownUrl, splitCredentials } from './fetch.js';
import { fromKeras3 } from './keras3.js';
import { BN_MOMENTUM } from './models.js';
import { loadTf } from './tf.js';

export interface TransferOptions {
  /** A folder holding model.json (+ weights), or an http(s) URL of a model.json (e.g. a MobileNetV2 converted from Keras). */
  readonly from: string;
  /** Input side in pixels; the pretrained model must accept it (most convolutional bases accept any size). */
  readonly imageSize: number;
  readonly dropout?: number;
  /**
   * Name of the layer whose output feeds the new head, which pools it globally (default: the layer that feeds the
   * global pooling or flattening layer where the pretrained model's own head starts, found from its output back;
   * without one, the last layer with a 4-D output that is not a pooling layer).
   */
  readonly featureLayer?: string;
  /**
   * Told which layer the head was put on once the model is built: its name, and whether it is the one picked without
   * `featureLayer` (train records both in the model card, so that a resume naming the default layer is the same run).
   */
  readonly onFeatureLayer?: (layer: { readonly name: string; readonly isDefault: boolean }) => void;
  /** L2 penalty on the new head's kernel (train passes its weight decay). Default 0. */
  readonly l2?: number;
  /**
   * Freeze the pretrained layers (train the head only). Default false. Each pretrained layer carries the flag itself,
   * so it survives saving and loading (and so `--resume`): tfjs saves no trainable flag for a nested model. Its
   * batch-normalisation layers keep their scale and offset, and in {@link train} (or under
   * {@link holdFrozenBatchNorms}) also their moving statistics, as in Keras.
   */
  readonly freeze?: boolean;
  /**
   * Train every pretrained layer, also those the pretrained model itself marks frozen (a converted model keeps the
   * flags it was saved with: nsfwjs's MobileNetV2 marks blocks 0-10). Default false: those marks are kept. Not with
   * `freeze`.
   */
  readonly unfreeze?: boolean;
  /**
   * The pixel range the pretrained model was trained on, `[low, high]`; our pixels in [0, 1] are mapped onto it by the
   * fixed input filter. Default `[0, 1]` (unchanged). Keras's MobileNet, MobileNetV2, InceptionV3 and Xception expect
   * `[-1, 1]`.
   */
  readonly inputRange?: readonly [number, number];
  readonly seed?: number;
}

type Layer = LayersModel['layers'][number];

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
  const restores: Array<() => void> = [];
  for (const { layer, frozen } of allLayers(model)) {
    if (layer.getClassName() !== 'BatchNormalization' || !frozen || held.has(layer)) continue;
    const restore = replaceLayerCall(layer, (original) => (inputs, kwargs) => original(inputs, { ...kwargs, training: false }));
    held.add(layer);
    restores.push(() => {
      held.delete(layer);
      restore();
    });
  }
  return () => {
    for (const restore of restores.splice(0)) restore();
  };
}

/**
 * Loads the pretrained model, saying what was tried when it cannot be had (offline, 404, not a layers model). A
 * model.json written from Keras 3 is read too (lib/keras3.ts).
 */
async function loadPretrained(from: string): Promise<LayersModel> {
  const tf = loadTf();
  const isUrl = isHttpUrl(from);
  try {
    let artifacts: io.ModelArtifacts;
    if (isUrl) {
      artifacts = await downloadArtifacts(from);
    } else {
      const s = await stat(from).catch((err: NodeJS.ErrnoException) => {
        throw new Error(err.code === 'ENOENT' ? 'no such folder' : `it cannot be read: ${messageOf(err)}`, { cause: err });
      });
      if (!s.isDirectory()) throw new Error('not a folder holding model.json');
      artifacts = await readModelArtifacts(from);
    }
    return await tf.loadLayersModel(tf.io.fromMemory(fromKeras3(artifacts)));
  } catch (err) {
    // A URL's user name, password and signature are a secret: shown as ***, in the cause's words too.
    throw new ConfigError(
      `cannot start from the pretrained model ${quote(isUrl ? shownUrl(from) : from)}: ${isUrl ? 'downloading it' : 'reading it'} failed (${isUrl ? maskUserInfo(withRootCause(err)) : messageOf(err)}). ` +
        `Tried ${isUrl ? 'the tfjs layers model.json at that URL (needs the internet; HTTPS_PROXY is not used for it)' : 'model.json and its weights in that folder'}; ` +
        'without it, train from scratch (leave out --init-from).',
      { path: isUrl ? shownUrl(from) : from, cause: err },
    );
  }
}

/** The most a pretrained model.json may take (the weights are bounded by what it describes). */
const MAX_MODEL_JSON_BYTES = 64 * 1024 ** 2;

/**
 * A tfjs layers model at a URL: model.json, then its weights files (relative to it), each read up to the bytes its
 * manifest describes and no further, so that a server sending an endless or oversized body cannot exhaust memory. A
 * user name and password in the URL go as a Basic header to its own origin.
 */
async function downloadArtifacts(from: string): Promise<io.ModelArtifacts> {
  const { url, authorization } = splitCredentials(from);
  const { origin, search: query } = new URL(url);
  const get = async (target: string, limit: number, what: string): Promise<Buffer> => {
    const headers = authorization !== undefined && new URL(target).origin === origin ? { authorization } : undefined;
    const res = await fetch(target, headers ? { headers } : {});
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      throw new Error(`${what} ${quote(shownUrl(target))} answered HTTP ${res.status}`);
    }
    const chunks: Uint8Array[] = [];
    let bytes = 0;
    for await (const chunk of res.body ?? []) {
      bytes += (chunk as Uint8Array).length;
      if (bytes > limit) {
        await res.body?.cancel().catch(() => {});
        throw new Error(`${what} ${quote(shownUrl(target))} is larger than the ${limit} bytes expected`);
      }
      chunks.push(chunk as Uint8Array);
    }
    return Buffer.concat(chunks);
  };
  let json: { modelTopology?: object; weightsManifest?: { paths: string[]; weights: io.WeightsManifestEntry[] }[] };
  try {
    json = JSON.parse((await get(url, MAX_MODEL_JSON_BYTES, 'model.json')).toString('utf8')) as typeof json;
  } catch (err) {
    if (err instanceof SyntaxError) throw new Error(`model.json at ${quote(shownUrl(from))} is not JSON (${err.message})`, { cause: err });
    throw err;
  }
  if (json.modelTopology === undefined || !Array.isArray(json.weightsManifest)) {
    throw new Error(`model.json at ${quote(shownUrl(from))} is not a tfjs layers model (no modelTopology and weightsManifest)`);
  }
  const specs: io.WeightsManifestEntry[] = [];
  const buffers: Buffer[] = [];
  for (const group of json.weightsManifest) {
    const limit = weightsManifestBytes(group.weights);
    if (limit === undefined) throw new Error(`model.json at ${quote(shownUrl(from))} has weights of no fixed size (strings): not an image model`);
    specs.push(...group.weights);
    let got = 0;
    for (const p of group.paths) {
      // Beside model.json, with its query (a token or a signature there is the credential), as tfjs's loader does; on
      // its server only.
      const target = new URL(p, url);
      if (target.origin !== origin) throw new Error(`model.json at ${quote(shownUrl(from))} names the weights file ${quote(shownUrl(target.href))} on another server`);
      if (target.search === '') target.search = query;
      const part = await get(target.href, limit - got, 'the weights file');
      got += part.length;
      buffers.push(part);
    }
    if (got !== limit) throw new Error(`the weights of model.json at ${quote(shownUrl(from))} hold ${got} bytes where ${limit} are described`);
  }
  return { modelTopology: json.modelTopology, weightSpecs: specs, weightData: arrayBufferOf(Buffer.concat(buffers)) };
}

/**
 * An error's message with the message of its innermost cause where that says more: fetch's "fetch failed" hides the
 * reason (no name service, a refused connection, a certificate) two causes down.
 */
function withRootCause(err: unknown): string {
  const root = causeChain(err).at(-1);
  const message = messageOf(err);
  const rootMessage = root === err ? '' : messageOf(root);
  return rootMessage === '' || message.includes(rootMessage) ? message : `${message}: ${rootMessage}`;
}

/** A layer of a functional model's configuration, as tfjs writes it (Keras 2 form). */
interface LayerJson {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  inbound_nodes: Array<Array<[string, number, number, Record<string, unknown>]>>;
}

/** The names of the head and input layers this module adds; a pretrained layer of the same name keeps it nested. */
const OWN_NAMES = ['gray_input', 'gray_to_rgb', 'head_pool', 'head_dropout', 'head_logits'];

/**
 * The new gray input, repeated to RGB when the pretrained model takes RGB and mapped from [0, 1] onto `range`, by a
 * fixed 1x1 convolution (`gray_to_rgb`); with one channel and the range [0, 1] nothing is added.
 */
function grayStem(imageSize: number, channels: number, range: readonly [number, number] = [0, 1]): { input: SymbolicTensor; output: SymbolicTensor } {
  const tf = loadTf();
  const input = tf.input({ shape: [imageSize, imageSize, 1], name: 'gray_input' });
  const [low, high] = range;
  const identity = low === 0 && high === 1;
  if (channels !== 3 && identity) return { input, output: input };
  const output = tf.layers
    .conv2d({
      filters: channels,
      kernelSize: 1,
      useBias: !identity,
      trainable: false,
      kernelInitializer: identity ? 'ones' : tf.initializers.constant({ value: high - low }),
      ...(identity ? {} : { biasInitializer: tf.initializers.constant({ value: low }) }),
      name: 'gray_to_rgb',
    })
    .apply(input) as SymbolicTensor;
  return { input, output };
}

/**
 * Sets the pretrained layers of `trunk` (those not named in `ours`) to train as asked: all frozen (`freeze`), all
 * trained (`unfreeze`), or each as the pretrained model marks it. Then a batch norm that trains gets the momentum of
 * our own models ({@link BN_MOMENTUM}) when its own is slower: Keras's applications use 0.999, which leaves the moving
 * statistics thousands of steps behind layers that fine-tuning changes quickly, and validation, which uses them,
 * collapses. The flags and the momentum are the layers' own, so they are saved with the model (and kept on resume).
 */
function setTrainable(trunk: LayersModel, options: TransferOptions, ours: ReadonlySet<string> = new Set()): void {
  const pretrained = (): Array<{ layer: Layer; frozen: boolean }> => allLayers(trunk).filter(({ layer }) => !ours.has(layer.name));
  if (options.freeze || options.unfreeze) for (const { layer } of pretrained()) layer.trainable = !options.freeze;
  for (const { layer, frozen } of pretrained()) {
    const bn = layer as unknown as { momentum: number };
    if (!frozen && layer.getClassName() === 'BatchNormalization') bn.momentum = Math.min(bn.momentum, BN_MOMENTUM);
  }
}

/** The configuration of a functional model as tfjs writes it (Keras 2 form). */
interface ModelJson {
  class_name: string;
  config: { layers: LayerJson[]; input_layers: Array<[string, number, number]> };
}

/**
 * The pretrained layers from the base's input up to `featureName` as one flat model on the gray stem (see
 * {@link grayStem}), with the base's weights; undefined when the base is not a plain functional model (one input, no
 * nested models, each layer used once) or a name collides with ours. A flat model trains in the graph step
 * (lib/graph-train.ts); a nested one only op by op.
 */
async function flatTrunk(base: LayersModel, featureName: string, options: TransferOptions, channels: number): Promise<LayersModel | undefined> {
  const tf = loadTf();
  const json = base.toJSON(null, false) as unknown as ModelJson;
  if (!['Model', 'Functional'].includes(json.class_name) || json.config.input_layers.length !== 1) return undefined;
  const layers = json.config.layers;
  const inputName = json.config.input_layers[0]?.[0];
  const byName = new Map(layers.map((l) => [l.name, l]));
  const keep = new Set<string>();
  const stack = [featureName];
  for (let name = stack.pop(); name !== undefined; name = stack.pop()) {
    const layer = byName.get(name);
    if (!layer || keep.has(name)) continue;
    if ('layers' in layer.config || layer.inbound_nodes.length > 1 || OWN_NAMES.includes(name)) return undefined;
    keep.add(name);
    for (const ref of layer.inbound_nodes.flat()) {
      if (ref[1] !== 0) return undefined;
      stack.push(ref[0]);
    }
  }
  // The stem's layers in the same written form, taken from a model of the stem alone.
  const stem = grayStem(options.imageSize, channels, options.inputRange);
  const stemModel = tf.model({ inputs: stem.input, outputs: stem.output });
  const own = (stemModel.toJSON(null, false) as unknown as ModelJson).config.layers;
  stemModel.dispose();
  const root = stem.output.sourceLayer.name;
  const trunkLayers = layers
    .filter((l) => keep.has(l.name) && l.name !== inputName)
    .map((l) => ({
      ...l,
      inbound_nodes: l.inbound_nodes.map((node) => node.map(([name, n, t, kw]): [string, number, number, Record<string, unknown>] => [name === inputName ? root : name, n, t, kw])),
    }));
  const config = { name: 'transfer_trunk', layers: [...own, ...trunkLayers], input_layers: [['gray_input', 0, 0]], output_layers: [[featureName, 0, 0]] };
  // Through JSON text: a plain copy, sharing nothing with the base's configuration objects.
  const trunk = await tf.models.modelFromJSON({ modelTopology: JSON.parse(JSON.stringify({ class_name: 'Model', config })) as Record<string, never> });
  try {
    for (const l of trunkLayers) trunk.getLayer(l.name).setWeights(base.getLayer(l.name).getWeights());
  } catch {
    // Weights that do not fit the new input (a flattening layer in the trunk, say): keep the model nested.
    trunk.dispose();
    return undefined;
  }
  setTrainable(trunk, options, new Set(own.map((l) => l.name)));
  return trunk;
}

/**
 * A classifier made of a pretrained model's features and a new head (dropout + dense softmax over CLASSES). A
 * 1-channel input is repeated to the 3 channels most pretrained models expect, by a fixed 1x1 convolution. The
 * pretrained layers become layers of the new model itself (so that it trains in the graph step) when the pretrained
 * model is a plain functional one, and a nested model otherwise.
 *
 * @example const model = await buildTransferModel({ from: 'models/mobilenet_v2_tfjs', imageSize: 224 })
 */
export async function buildTransferModel(options: TransferOptions): Promise<LayersModel> {
  const tf = loadTf();
  if (options.freeze && options.unfreeze) throw new ConfigError('freeze and unfreeze exclude each other: freeze trains the head only, unfreeze every pretrained layer');
  const base = await loadPretrained(options.from);
  // The base's weights are freed on every error path: until the flat trunk has copied them, or the new model holds them.
  let baseHeld = true;
  let flat: LayersModel | undefined;
  try {
    const inShape = base.inputs[0]?.shape ?? [];
    const channels = inShape[3] ?? 1;
    if (inShape.length !== 4 || (channels !== 1 && channels !== 3)) {
      throw new ConfigError(`the pretrained model ${quote(options.from)} takes inputs of shape ${quote(inShape)}: expected [null, H, W, 1 or 3]`, { path: options.from });
    }
    // Keras's MobileNet (v1) reshapes its pooled features back to 4-D and ends in a 1x1 convolution and a softmax: the
    // last 4-D layer would be its ImageNet softmax, so the layer before its first global pooling comes first.
    // Walked back from the output along each layer's first input, so that the pooling inside squeeze-and-excitation
    // blocks (EfficientNet, MobileNetV3) is not taken for the head's; past any fixed-size pooling in front of it, which
    // would not fit other input sizes.
    const inbound = (l: Layer | undefined): Layer | undefined => (l as unknown as { inboundNodes?: { inboundLayers: Layer[] }[] } | undefined)?.inboundNodes?.[0]?.inboundLayers[0];
    const collapses = (l: Layer): boolean => /^(Global(Average|Max)Pooling2D|Flatten)$/.test(l.getClassName());
    let collapse = base.outputs[0]?.sourceLayer as Layer | undefined;
    while (collapse && !collapses(collapse)) collapse = inbound(collapse);
    let beforeCollapse = inbound(collapse);
    while (beforeCollapse && /Pooling2D$/.test(beforeCollapse.getClassName())) beforeCollapse = inbound(beforeCollapse);
    const defaultName = (beforeCollapse && (beforeCollapse.outputShape as unknown[]).length === 4 ? beforeCollapse.name : undefined) ??
      [...base.layers].reverse().find((l) => {
        const shape = l.outputShape as (number | null)[];
        return Array.isArray(shape) && shape.length === 4 && !/Pooling2D$/.test(l.getClassName());
      })?.name;
    const featureName = options.featureLayer ?? defaultName;
    const featureLayer = featureName === undefined ? undefined : base.layers.find((l) => l.name === featureName);
    if (!featureLayer || featureName === undefined) {
      throw new ConfigError(`the pretrained model ${quote(options.from)} has no layer ${quote(options.featureLayer ?? '(4-D output)')} to take features from`, { path: options.from });
    }
    if (featureLayer.getClassName() === 'InputLayer') {
      throw new ConfigError(
        `the layer ${quote(featureName)} of the pretrained model ${quote(options.from)} is its input, which computes no features: name a layer after it for the new head`,
        { path: options.from },
      );
    }
    const featureShape = featureLayer.outputShape as unknown[];
    if (!Array.isArray(featureShape) || featureShape.length !== 4) {
      throw new ConfigError(
        `the layer ${quote(featureName)} of the pretrained model ${quote(options.from)} gives ${JSON.stringify(featureShape)}, not 4-D feature maps [batch, height, width, channels] for the new head to pool`,
        { path: options.from },
      );
    }
    let input: SymbolicTensor;
    let x: SymbolicTensor;
    flat = await flatTrunk(base, featureName, options, channels);
    if (flat) {
      base.dispose();
      baseHeld = false;
      input = flat.inputs[0] as SymbolicTensor;
      x = flat.outputs[0] as SymbolicTensor;
    } else {
      const trunk = tf.model({ inputs: base.inputs, outputs: featureLayer.output as SymbolicTensor });
      // The pretrained head (its ImageNet classifier, say) is no part of the new model: its weights are freed.
      for (const l of base.layers) if (!trunk.layers.includes(l)) l.dispose();
      // Layer by layer (allLayers), not only on the nested model: its own flag is lost on saving, its layers' are kept.
      setTrainable(trunk, options);
      const stem = grayStem(options.imageSize, channels, options.inputRange);
      input = stem.input;
      x = trunk.apply(stem.output) as SymbolicTensor;
    }
    x = tf.layers.globalAveragePooling2d({ name: 'head_pool' }).apply(x) as SymbolicTensor;
    if ((options.dropout ?? 0.2) > 0) x = tf.layers.dropout({ rate: options.dropout ?? 0.2, name: 'head_dropout' }).apply(x) as SymbolicTensor;
    const out = tf.layers
      .dense({
        units: CLASSES.length, activation: 'softmax', name: 'head_logits', kernelInitializer: tf.initializers.glorotUniform({ seed: options.seed ?? 42 }),
        ...((options.l2 ?? 0) > 0 ? { kernelRegularizer: tf.regularizers.l2({ l2: options.l2 ?? 0 }) } : {}),
      })
      .apply(x) as SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: out, name: 'transfer' });
    baseHeld = false;
    flat = undefined;
    try {
      options.onFeatureLayer?.({ name: featureName, isDefault: featureName === defaultName });
    } catch (err) {
      model.dispose();
      throw err;
    }
    return model;
  } catch (err) {
    if (baseHeld) disposeQuietly(base);
    if (flat) disposeQuietly(flat);
    throw err;
  }
}

/** Frees a model's weights on an error path, layer by layer where some are already gone (a nested trunk's cut head). */
function disposeQuietly(model: LayersModel): void {
  try {
    model.dispose();
  } catch {
    for (const layer of model.layers) {
      try {
        layer.dispose();
      } catch {
        // already disposed
      }
    }
  }
}
