// Reading models saved from Keras 3, whose model.json tfjs-layers 4 cannot parse: their topology and weight names in tfjs's form.
//
// Keras 3 (TensorFlow 2.16 and later) writes a functional model's configuration in a new form: an InputLayer's
// `batch_shape` (tfjs reads `batch_input_shape`), each layer's `dtype` as a DTypePolicy object, and each inbound node
// as `{args, kwargs}` holding `__keras_tensor__` objects with a `keras_history` (tfjs reads lists of
// `[layer, node, tensor, kwargs]`). A model.json that carries such a topology (a Keras 3 model converted to a tfjs
// layers model) fails in `tf.loadLayersModel` with "An InputLayer should be passed either a `batchInputShape` or an
// `inputShape`" (tensorflow/tfjs#8328, #8494). {@link fromKeras3} rewrites it into the form tfjs reads; every other
// model.json passes unchanged. Weight names are taken as Keras 3's variable paths (`layer/kernel`, or
// `model/layer/kernel` in a Sequential model) and brought to tfjs's (`layer/kernel`; a DepthwiseConv2D's kernel is
// `depthwise_kernel` in tfjs).
import { ConfigError, quote } from './errors.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/** The parts of a model.json this module reads and rewrites. */
export interface ModelJsonParts {
  readonly modelTopology?: unknown;
  readonly weightSpecs?: ReadonlyArray<{ readonly name: string }>;
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The Keras model configuration inside a model.json's `modelTopology` (which may also be the configuration itself). */
function modelConfigOf(topology: unknown): JsonObject | undefined {
  if (!isObject(topology)) return undefined;
  const inner = topology.model_config;
  return isObject(inner) ? inner : topology;
}

/** Every layer configuration of a model configuration, those of nested models included. */
function layersOf(model: JsonObject): JsonObject[] {
  const config = model.config;
  const layers = isObject(config) && Array.isArray(config.layers) ? config.layers.filter(isObject) : [];
  return layers.flatMap((l) => (isObject(l.config) && Array.isArray(l.config.layers) ? [l, ...layersOf(l)] : [l]));
}

/**
 * Whether `topology` (a model.json's `modelTopology`) was written by Keras 3: its inbound nodes are `{args, kwargs}`
 * objects, or an InputLayer has a `batch_shape`.
 *
 * @example isKeras3Topology(JSON.parse(text).modelTopology) // true for a Keras 3 MobileNetV2
 */
export function isKeras3Topology(topology: unknown): boolean {
  const model = modelConfigOf(topology);
  if (!model) return false;
  return layersOf(model).some(
    (l) =>
      (Array.isArray(l.inbound_nodes) && l.inbound_nodes.some(isObject)) ||
      (l.class_name === 'InputLayer' && isObject(l.config) && 'batch_shape' in l.config && !('batch_input_shape' in l.config)),
  );
}

/** The `[layer, node, tensor]` of each Keras tensor inside `value` (a node's args), in order. */
function tensorRefs(value: Json, where: string): Array<[string, Json, Json]> {
  if (Array.isArray(value)) return value.flatMap((v) => tensorRefs(v, where));
  if (!isObject(value) || value.class_name !== '__keras_tensor__') return [];
  const history = isObject(value.config) ? value.config.keras_history : undefined;
  if (!Array.isArray(history) || history.length !== 3 || typeof history[0] !== 'string') {
    throw new ConfigError(`the Keras 3 tensor in ${where} has no keras_history [layer, node, tensor] (it has ${quote(history ?? null)})`);
  }
  return [[history[0], history[1] ?? 0, history[2] ?? 0]];
}

/** A Keras 3 value rewritten for tfjs: DTypePolicy objects become their name; objects and lists recursively. */
function plain(value: Json): Json {
  if (Array.isArray(value)) return value.map(plain);
  if (!isObject(value)) return value;
  if ((value.class_name === 'DTypePolicy' || value.class_name === 'FloatDTypePolicy') && isObject(value.config) && typeof value.config.name === 'string') {
    return value.config.name;
  }
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
}

/** A `[name, node, tensor]` list or a list of them, as tfjs reads it (always the latter). */
function refList(value: Json | undefined): Json | undefined {
  return Array.isArray(value) && typeof value[0] === 'string' ? [value] : value;
}

function rewriteModel(model: JsonObject, path: string): JsonObject {
  const config = isObject(model.config) ? model.config : {};
  const layers = Array.isArray(config.layers) ? config.layers : [];
  // tfjs (as Keras 2) counts a nested model's own construction as its node 0, so its first call is node 1; Keras 3
  // counts the calls from 0.
  const nested = new Set(layers.filter((l) => isObject(l) && isObject(l.config) && Array.isArray(l.config.layers)).map((l) => (isObject(l) ? l.name : null)));
  const node = (layer: Json, index: Json): Json => (nested.has(layer) && typeof index === 'number' ? index + 1 : index);
  const rewritten: JsonObject = {
    ...config,
    layers: layers.map((layer, i): Json => {
      if (!isObject(layer)) return layer;
      const where = `${path} layer ${i} (${quote(layer.name ?? null)})`;
      let out: JsonObject = { ...layer, config: plain(layer.config ?? {}) };
      const c = out.config;
      if (layer.class_name === 'InputLayer' && isObject(c) && 'batch_shape' in c && !('batch_input_shape' in c)) {
        const { batch_shape: shape, ...rest } = c;
        out.config = { ...rest, batch_input_shape: shape ?? null };
      }
      if (Array.isArray(layer.inbound_nodes)) {
        out.inbound_nodes = layer.inbound_nodes.map((call) => {
          if (!isObject(call)) return call;
          // A call's kwargs go with each reference, as Keras 2 wrote them, less the defaults Keras 3 records (a
          // Dropout's `training: false`, `mask: null`): the training flag of the model's own call must reach it.
          const kwargs = Object.fromEntries(
            Object.entries(isObject(call.kwargs) ? call.kwargs : {}).filter(([k, v]) => v !== null && !(k === 'training' && v === false)).map(([k, v]) => [k, plain(v)]),
          );
          return tensorRefs(call.args ?? [], where).map(([layer, index, tensor]): Json => [layer, node(layer, index), tensor, kwargs]);
        });
      }
      if (isObject(out.config) && Array.isArray(out.config.layers)) out = { ...out, ...rewriteModel(out, where) };
      return out;
    }),
  };
  for (const key of ['input_layers', 'output_layers'] as const) {
    const list = refList(config[key]);
    if (Array.isArray(list)) rewritten[key] = list.map((ref) => (Array.isArray(ref) ? [ref[0] ?? null, node(ref[0] ?? null, ref[1] ?? 0), ...ref.slice(2)] : ref));
  }
  return { ...model, config: rewritten };
}

/**
 * A model.json's topology and weight names in the form tfjs-layers reads, when Keras 3 wrote them; unchanged
 * otherwise. Pure.
 *
 * @example
 * const { modelTopology, weightSpecs } = fromKeras3({ modelTopology: json.modelTopology, weightSpecs: specs });
 * await tf.loadLayersModel(tf.io.fromMemory({ modelTopology, weightSpecs, weightData }));
 */
export function fromKeras3<T extends ModelJsonParts>(parts: T): T {
  if (!isKeras3Topology(parts.modelTopology)) return parts;
  const topology = parts.modelTopology as JsonObject;
  const model = modelConfigOf(topology) as JsonObject;
  const rewritten = rewriteModel(model, 'the model');
  const modelTopology = topology.model_config === undefined ? rewritten : { ...topology, model_config: rewritten };
  // Weights as tfjs names them: `layer/weight`, where Keras 3 may put the model's name in front (a Sequential
  // model's `name/layer/weight`), and `depthwise_kernel` where Keras 3 names a DepthwiseConv2D's kernel `kernel`.
  const classes = new Map(layersOf(model).map((l) => [String(isObject(l.config) && typeof l.config.name === 'string' ? l.config.name : l.name), l.class_name]));
  const weightSpecs = parts.weightSpecs?.map((spec) => {
    const [layer, weight] = spec.name.split('/').slice(-2);
    if (layer === undefined || weight === undefined || !classes.has(layer)) return spec;
    return { ...spec, name: `${layer}/${weight === 'kernel' && classes.get(layer) === 'DepthwiseConv2D' ? 'depthwise_kernel' : weight}` };
  });
  return { ...parts, modelTopology, ...(weightSpecs ? { weightSpecs } : {}) };
}
