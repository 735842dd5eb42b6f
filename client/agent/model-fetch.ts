/** A training round's global model, downloaded from the coordinator over the client's mTLS channel. */
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import type { MethodsOf, TypedClient } from '../../shared/rpc/service.js';
import { asAegisError } from './grpc-errors.js';

/**
 * A model version's bytes (FetchModel, streamed in chunks), refusing a stream that announces
 * another size than `expectedBytes`, sends chunks out of order or more than that, or ends early.
 */
export function fetchModel(client: TypedClient<MethodsOf<typeof pb.SecAgg>>, manifestHash: Uint8Array, version: number, expectedBytes: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const out = new Uint8Array(expectedBytes);
    let received = 0;
    const call = client.fetchModel(create(pb.FetchModelRequestSchema, { manifestHash, version }), new grpc.Metadata(), { deadline: Date.now() + 5 * 60_000 });
    call.on('data', (c: pb.ModelChunk) => {
      const offset = Number(c.offset);
      if (Number(c.totalBytes) !== expectedBytes || offset !== received || offset + c.data.length > expectedBytes) {
        call.cancel();
        reject(new AegisError(ErrorCode.HashMismatch, `the model does not have the manifest's size (${expectedBytes} bytes)`));
        return;
      }
      out.set(c.data, offset);
      received += c.data.length;
    });
    call.on('error', (err: unknown) => reject(asAegisError(err)));
    call.on('end', () => (received === expectedBytes ? resolve(out) : reject(new AegisError(ErrorCode.HashMismatch, 'the model arrived incomplete'))));
  });
}
