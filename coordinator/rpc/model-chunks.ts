/** A model version's weights as the stream of chunks FetchModel sends (SecAgg for clients, Admin for engineers). */
import { create } from '@bufbuild/protobuf';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import { weightBytes, type ModelVersionRecord } from '../jobs/training.js';

/** Model weights go out in pieces of this size. */
const MODEL_CHUNK_BYTES = 1024 * 1024;

/** A model version's weights in chunks (the manifest rides on the first when given). */
export function* modelChunks(v: ModelVersionRecord, manifestJson?: Uint8Array): Generator<pb.ModelChunk> {
  const bytes = weightBytes(v.weights);
  const model = create(pb.ModelVersionSchema, { version: v.version, sha256: v.sha256 });
  let offset = 0;
  do {
    const chunk = create(pb.ModelChunkSchema, { data: bytes.subarray(offset, offset + MODEL_CHUNK_BYTES), offset: BigInt(offset), totalBytes: BigInt(bytes.length), model });
    if (offset === 0 && manifestJson) chunk.manifestJson = manifestJson;
    yield chunk;
    offset += MODEL_CHUNK_BYTES;
  } while (offset < bytes.length);
}
