/** A model version's weights as the stream of chunks FetchModel sends (SecAgg for clients, Admin for engineers). */
import { create } from '@bufbuild/protobuf';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import { sha256, weightBytes, type ModelVersionRecord } from '../jobs/training.js';
import type { RoundStore } from '../queue/round-store.js';

/** Model weights go out in pieces of this size. */
const MODEL_CHUNK_BYTES = 1024 * 1024;

/** A model version's weights in chunks (the manifest rides on the first when given). */
export function modelChunks(v: ModelVersionRecord, manifestJson?: Uint8Array): Generator<pb.ModelChunk> {
  return chunksOf(weightBytes(v.weights), v.version, v.sha256, manifestJson);
}

/**
 * A model version another front end recorded on the Redis (a training job it runs, whose round
 * this front end's clients take part in): its weights in chunks; `not-found` when none is there.
 */
export async function* sharedModelChunks(store: RoundStore | undefined, manifestHash: Uint8Array, version: number): AsyncGenerator<pb.ModelChunk> {
  const bytes = store ? await store.model(Buffer.from(manifestHash).toString('hex'), version) : undefined;
  if (!bytes) throw new AegisError(ErrorCode.NotFound, 'no training job with this manifest hash runs here');
  yield* chunksOf(bytes, version, sha256(bytes));
}

function* chunksOf(bytes: Uint8Array, version: number, digest: Uint8Array, manifestJson?: Uint8Array): Generator<pb.ModelChunk> {
  const model = create(pb.ModelVersionSchema, { version, sha256: digest });
  let offset = 0;
  do {
    const chunk = create(pb.ModelChunkSchema, { data: bytes.subarray(offset, offset + MODEL_CHUNK_BYTES), offset: BigInt(offset), totalBytes: BigInt(bytes.length), model });
    if (offset === 0 && manifestJson) chunk.manifestJson = manifestJson;
    yield chunk;
    offset += MODEL_CHUNK_BYTES;
  } while (offset < bytes.length);
}
