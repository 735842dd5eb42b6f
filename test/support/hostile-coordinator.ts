/**
 * A hostile coordinator for job-level attack tests: the real TLS 1.3 listeners, the real CA's
 * server certificate and the real publisher registry (it is the coordinator that went rogue),
 * but every round it starts is scripted by the test — any round index, any manifest or none, any
 * model, parameters or group, a different one per client — and it relays the clients'
 * advertisements without the checks an honest coordinator makes. It records everything each
 * client sends, so a test can assert that a victim's masked input never left it.
 */
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { clientIdOf, type CaCertificate } from '../../coordinator/auth/ca.js';
import { listenTls, shutdown, type ServiceImpls } from '../../coordinator/rpc/listeners.js';
import { Mailboxes } from '../../coordinator/service/mailbox.js';
import { AegisError, ErrorCode } from '../../shared/errors.js';
import * as pb from '../../shared/gen/aegis/v1/secagg_pb.js';
import * as trust from '../../shared/gen/aegis/v1/trust_pb.js';
import type { AdvertisedEntry, AdvertiseKeys, ClientMessage, RoundRef, RoundStart } from '../../shared/protocol/messages.js';
import { sameRound } from '../../shared/protocol/session.js';
import { fromClientEnvelope, toEventEnvelope } from '../../shared/rpc/convert.js';
import { serverStream, unary } from '../../shared/rpc/service.js';
import { snapshotBytes } from '../../shared/trust/registry.js';
import { readSnapshot } from '../../shared/trust/registry-dir.js';
import type { Enrolled } from './cluster.js';

const MODEL_CHUNK = 1 << 20;

interface CallWithAuth {
  getAuthContext?: () => { sslPeerCertificate?: { raw?: Buffer } } | null;
}

function callerOf(call: CallWithAuth): string {
  const raw = call.getAuthContext?.()?.sslPeerCertificate?.raw;
  if (!raw) throw new AegisError(ErrorCode.Unauthenticated, 'no peer certificate');
  return clientIdOf(new Uint8Array(raw));
}

export class HostileCoordinator {
  /** Every message each client sent, in order. */
  readonly received: { clientId: string; msg: ClientMessage }[] = [];
  /** Model bytes served by FetchModel, by `${manifest hash hex}:${version}`. */
  readonly models = new Map<string, Uint8Array>();
  address = '';
  private servers: grpc.Server[] = [];
  private readonly mailboxes = new Mailboxes<pb.ServerEnvelope>();
  private readonly certificates: Map<string, Uint8Array>;

  private constructor(
    private readonly ca: CaCertificate,
    enrolled: readonly Enrolled[],
    private readonly registryDir: string | undefined,
  ) {
    this.certificates = new Map(enrolled.map((e) => [e.clientId, e.certificateDer]));
  }

  /** Listens on loopback with the real CA's server certificate; `registryDir` is served by Trust.GetRegistry. */
  static async start(ca: CaCertificate, enrolled: readonly Enrolled[], registryDir?: string): Promise<HostileCoordinator> {
    const h = new HostileCoordinator(ca, enrolled, registryDir);
    const bound = await listenTls({ ca }, h.services(), '127.0.0.1:0', '127.0.0.1:0');
    h.servers = bound.servers;
    h.address = bound.address;
    return h;
  }

  private services(): ServiceImpls {
    const secAgg = {
      subscribe: serverStream<pb.SubscribeRequest, pb.ServerEnvelope>((_req, call) => {
        const id = callerOf(call);
        const { messages, detach } = this.mailboxes.of(id).attach();
        call.on('cancelled', detach);
        call.sendMetadata(new grpc.Metadata());
        return messages;
      }),
      send: unary<pb.ClientEnvelope, pb.SendReply>((env, call) => {
        const clientId = callerOf(call);
        this.received.push({ clientId, msg: fromClientEnvelope(env) });
        return create(pb.SendReplySchema, {});
      }),
      heartbeat: unary<pb.HeartbeatRequest, pb.HeartbeatReply>(() => create(pb.HeartbeatReplySchema, {})),
      acquireUpload: unary<pb.AcquireUploadRequest, pb.AcquireUploadReply>(() => create(pb.AcquireUploadReplySchema, { slots: 64 })),
      issueTokens: unary<pb.IssueTokensRequest, pb.IssueTokensReply>((req) => {
        // The attacker takes any token: it does not check them.
        const count = req.count === 0 ? 1 : req.count;
        return create(pb.IssueTokensReplySchema, { tokens: Array.from({ length: count }, (_, i) => `hostile-${i}`), expiresAtMs: BigInt(Date.now() + 3_600_000) });
      }),
      fetchModel: serverStream<pb.FetchModelRequest, pb.ModelChunk>((req) => {
        const bytes = this.models.get(`${Buffer.from(req.manifestHash).toString('hex')}:${req.version}`);
        if (!bytes) throw new AegisError(ErrorCode.NotFound, 'no such model');
        return (function* () {
          for (let o = 0; o === 0 || o < bytes.length; o += MODEL_CHUNK) {
            yield create(pb.ModelChunkSchema, { data: bytes.subarray(o, o + MODEL_CHUNK), offset: BigInt(o), totalBytes: BigInt(bytes.length) });
          }
        })();
      }),
    };
    const trustImpl = {
      getRegistry: unary<trust.GetRegistryRequest, trust.RegistryReply>(async () => {
        if (this.registryDir === undefined) throw new AegisError(ErrorCode.NotFound, 'no registry');
        return create(trust.RegistryReplySchema, { snapshot: snapshotBytes(await readSnapshot(this.registryDir)) });
      }),
    };
    const refuse = (): never => {
      throw new AegisError(ErrorCode.Unavailable, 'not served by this coordinator');
    };
    const enrollment = { enroll: unary(refuse), renew: unary(refuse) };
    return { secAgg, trust: trustImpl, enrollment, admin: {} } as unknown as ServiceImpls;
  }

  /** Clients whose stream is attached. */
  connected(): string[] {
    return this.mailboxes.attached();
  }

  /** Sends each client in `to` the round start `startFor(clientId)` returns. */
  startRound(to: readonly string[], startFor: (clientId: string) => RoundStart): void {
    for (const id of to) this.mailboxes.push(id, toEventEnvelope(startFor(id)));
  }

  /** The messages of one type a client sent (all clients when `clientId` is undefined). */
  sent<T extends ClientMessage['type']>(type: T, clientId?: string): Extract<ClientMessage, { type: T }>[] {
    return this.received.filter((r) => r.msg.type === type && (clientId === undefined || r.clientId === clientId)).map((r) => r.msg as Extract<ClientMessage, { type: T }>);
  }

  /**
   * Relays the advertisements of `round` as one U1 broadcast to everyone who advertised, with
   * their certificates, as they came: no check of what each client signed. `tamper` may change
   * the entries first (keys, ids, the certificates relayed with them).
   */
  broadcastAdvertisements(round: RoundRef, tamper?: (entries: AdvertisedEntry[]) => void): string[] {
    const ads = this.sent('advertise-keys').filter((m: AdvertiseKeys) => sameRound(m.round, round));
    const entries: AdvertisedEntry[] = ads.map((m) => ({ clientId: m.clientId, cPk: m.cPk, sPk: m.sPk, view: m.view, signature: m.signature, certificate: this.certificates.get(m.clientId) ?? new Uint8Array(0) }));
    tamper?.(entries);
    const env = toEventEnvelope({ type: 'advertise-broadcast', round, entries });
    for (const m of ads) this.mailboxes.push(m.clientId, env);
    return ads.map((m) => m.clientId);
  }

  async close(): Promise<void> {
    this.mailboxes.closeAll(new AegisError(ErrorCode.Unavailable, 'gone'));
    await shutdown(this.servers);
  }

  /** The CA's certificate the clients pinned. */
  get caPem(): string {
    return this.ca.certificatePem;
  }
}
