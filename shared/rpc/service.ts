/**
 * The one piece of grpc-js glue: a grpc-js `ServiceDefinition` built from a protobuf-es
 * `DescService` (protoc-gen-es emits descriptors, not grpc stubs), with typed server and client
 * shapes derived from the generated `GenService`. Unary and server-streaming methods only: the
 * Aegis protocol has no client streams.
 */
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import type { DescMessage, MessageShape } from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import * as grpc from '@grpc/grpc-js';
import { AegisError, ErrorCode } from '../errors.js';
import { toServiceError } from './status.js';

type In<M extends GenServiceMethods, K extends keyof M> = MessageShape<M[K]['input']>;
type Out<M extends GenServiceMethods, K extends keyof M> = MessageShape<M[K]['output']>;

/** The method shapes of a generated service: `MethodsOf<typeof SecAgg>`. */
export type MethodsOf<S> = S extends GenService<infer M extends GenServiceMethods> ? M : never;

/** What a server implements: one grpc-js handler per method, keyed by the method's local name. */
export type ServerImpl<M extends GenServiceMethods> = {
  [K in keyof M]: M[K]['methodKind'] extends 'server_streaming'
    ? grpc.handleServerStreamingCall<In<M, K>, Out<M, K>>
    : grpc.handleUnaryCall<In<M, K>, Out<M, K>>;
};

/** A unary client method: grpc-js's callback style (see `callUnary` for a promise). */
export interface UnaryMethod<I, O> {
  (request: I, callback: grpc.requestCallback<O>): grpc.ClientUnaryCall;
  (request: I, metadata: grpc.Metadata, callback: grpc.requestCallback<O>): grpc.ClientUnaryCall;
  (request: I, metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, callback: grpc.requestCallback<O>): grpc.ClientUnaryCall;
}

/** A typed client: one method per rpc, keyed by the method's local name (`send`, `subscribe`). */
export type TypedClient<M extends GenServiceMethods> = grpc.Client & {
  [K in keyof M]: M[K]['methodKind'] extends 'server_streaming'
    ? (request: In<M, K>, metadata?: grpc.Metadata, options?: Partial<grpc.CallOptions>) => grpc.ClientReadableStream<Out<M, K>>
    : UnaryMethod<In<M, K>, Out<M, K>>;
};

/** The encoding as a Buffer over the same memory (Buffer.from of a Uint8Array would copy it). */
const encode = (desc: DescMessage, msg: MessageShape<DescMessage>): Buffer => {
  const bytes = toBinary(desc, msg);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
};
const serializer = (desc: DescMessage) => (msg: MessageShape<DescMessage>) => encode(desc, msg);
/**
 * A server stream's serializer, encoding each message object once: a coordinator writes one
 * broadcast object to every member's stream (the advertise broadcast is ~700 bytes per member,
 * to each of n members), and grpc-js copies what this returns into its own frame. A message
 * object written to a stream is therefore never changed afterwards.
 */
const streamSerializer = (desc: DescMessage) => {
  const encoded = new WeakMap<object, Buffer>();
  return (msg: MessageShape<DescMessage>): Buffer => {
    let bytes = encoded.get(msg);
    if (!bytes) encoded.set(msg, (bytes = encode(desc, msg)));
    return bytes;
  };
};
const deserializer = (desc: DescMessage) => (buf: Buffer) => fromBinary(desc, buf);

/**
 * What a server's request deserializer returns for bytes that are not the method's protobuf
 * message. grpc-js would turn a throw there into INTERNAL without a reason; `unary` and
 * `serverStream` answer INVALID_ARGUMENT with the reason `invalid-argument` instead.
 */
const UNPARSEABLE = Object.freeze({ [Symbol.for('aegis.unparseable')]: true });
export const isUnparseable = (request: unknown): boolean => request === UNPARSEABLE;
export const unparseableError = (): AegisError => new AegisError(ErrorCode.InvalidArgument, 'the request is not a valid protobuf message for this method');
/** `deserialize`, returning the unparseable marker instead of throwing (for services not built here). */
export const lenient =
  <T>(deserialize: (buf: Buffer) => T) =>
  (buf: Buffer): T | typeof UNPARSEABLE => {
    try {
      return deserialize(buf);
    } catch {
      return UNPARSEABLE;
    }
  };
const lenientDeserializer = (desc: DescMessage) => lenient((buf: Buffer) => fromBinary(desc, buf));

/** The grpc-js definition of `service`: paths `/aegis.v1.SecAgg/Send`, protobuf binary on the wire. */
export function serviceDefinition<M extends GenServiceMethods>(service: GenService<M>): grpc.ServiceDefinition<ServerImpl<M>> {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const m of service.methods) {
    if (m.methodKind !== 'unary' && m.methodKind !== 'server_streaming') {
      throw new Error(`${service.typeName}.${m.name}: ${m.methodKind} methods are not supported`);
    }
    def[m.localName] = {
      path: `/${service.typeName}/${m.name}`,
      requestStream: false,
      responseStream: m.methodKind === 'server_streaming',
      requestSerialize: serializer(m.input) as (v: unknown) => Buffer,
      requestDeserialize: lenientDeserializer(m.input),
      responseSerialize: (m.methodKind === 'server_streaming' ? streamSerializer(m.output) : serializer(m.output)) as (v: unknown) => Buffer,
      responseDeserialize: deserializer(m.output),
      originalName: m.name,
    };
  }
  return def as grpc.ServiceDefinition<ServerImpl<M>>;
}

/** `server.addService` with the definition built from the descriptor and a typed implementation. */
export function addService<M extends GenServiceMethods>(server: grpc.Server, service: GenService<M>, impl: ServerImpl<M>): void {
  server.addService(serviceDefinition(service) as grpc.ServiceDefinition, impl as unknown as grpc.UntypedServiceImplementation);
}

/** A typed client constructor (`new (clientFor(SecAgg))(address, credentials)`). */
export function clientFor<M extends GenServiceMethods>(
  service: GenService<M>,
): new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions) => TypedClient<M> {
  const ctor = grpc.makeGenericClientConstructor(serviceDefinition(service) as grpc.ServiceDefinition, service.typeName);
  return ctor as unknown as new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions) => TypedClient<M>;
}

/** A unary handler from an async function; any throw becomes a status with its reason code. */
export function unary<I, O>(fn: (request: I, call: grpc.ServerUnaryCall<I, O>) => Promise<O> | O): grpc.handleUnaryCall<I, O> {
  return (call, callback) => {
    Promise.resolve()
      .then(() => {
        if (isUnparseable(call.request)) throw unparseableError();
        return fn(call.request, call);
      })
      .then(
        (reply) => callback(null, reply),
        (err: unknown) => callback(toServiceError(err)),
      );
  };
}

/**
 * A server-streaming handler from an async iterable; the stream ends when it does, and a throw
 * becomes a status with its reason code. Back-pressure: waits for 'drain' when the buffer is full.
 */
export function serverStream<I, O>(
  fn: (request: I, call: grpc.ServerWritableStream<I, O>) => AsyncIterable<O> | Iterable<O>,
): grpc.handleServerStreamingCall<I, O> {
  return (call) => {
    void (async () => {
      try {
        if (isUnparseable(call.request)) throw unparseableError();
        for await (const msg of fn(call.request, call)) {
          if (call.cancelled) return;
          if (!call.write(msg)) await new Promise<void>((resolve) => call.once('drain', () => resolve()));
        }
        call.end();
      } catch (err) {
        // grpc-js turns an 'error' event into the final status (after what was already written).
        call.emit('error', toServiceError(err));
      }
    })();
  };
}

/** Calls a unary method and returns a promise of the reply. */
export function callUnary<I, O>(method: UnaryMethod<I, O>, request: I, metadata = new grpc.Metadata(), options: Partial<grpc.CallOptions> = {}): Promise<O> {
  return new Promise<O>((resolve, reject) => {
    method(request, metadata, options, (err, reply) => {
      if (err) reject(err);
      else if (reply === undefined) reject(new Error('empty reply'));
      else resolve(reply);
    });
  });
}
