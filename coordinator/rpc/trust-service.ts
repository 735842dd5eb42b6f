/** The Trust service: the coordinator's publisher registry (signed metadata), for clients to check manifests against. */
import { create } from '@bufbuild/protobuf';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as trust from '../../shared/gen/aegis/v1/trust_pb.js';
import { snapshotBytes } from '../../shared/trust/registry.js';
import { readSnapshot } from '../../shared/trust/registry-dir.js';
import { unary } from '../../shared/rpc/service.js';

export function trustService(registryDir: string | undefined) {
  return {
    getRegistry: unary<trust.GetRegistryRequest, trust.RegistryReply>(async () => {
      if (registryDir === undefined) throw new AegisError(ErrorCode.NotFound, 'this coordinator serves no publisher registry');
      return create(trust.RegistryReplySchema, { snapshot: snapshotBytes(await readSnapshot(registryDir)) });
    }),
  };
}
