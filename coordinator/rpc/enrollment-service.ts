/**
 * The Enrollment service: Enroll (on the enrollment listener, where a device without a
 * certificate trades a one-time token and a CSR for one) and Renew (on the mTLS listener,
 * authenticated by the client's current certificate). The client registry does the work.
 */
import type * as enroll from '../../shared/gen/aegis/v1/enrollment_pb.js';
import { unary } from '../../shared/rpc/service.js';
import type { ClientRegistry } from '../clients/client-registry.js';
import { peerCertificate, type CallerAuthorization } from './caller.js';

export function enrollmentService(deps: { auth: CallerAuthorization; clients: ClientRegistry }) {
  return {
    enroll: unary<enroll.EnrollRequest, enroll.EnrollReply>((req) => deps.clients.enroll(req)),
    renew: unary<enroll.RenewRequest, enroll.RenewReply>(async (req, call) => {
      const rec = deps.auth.client(call);
      return deps.clients.renew(req, rec, peerCertificate(call)!);
    }),
  };
}
