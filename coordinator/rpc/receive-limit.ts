/**
 * A per-call cap on the size of a request message, enforced from the 5-byte gRPC length prefix
 * before the body is buffered. grpc-js takes one limit per server
 * (`grpc.max_receive_message_length`, checked by its stream decoder as soon as the prefix is
 * read); it has no per-method limit, so this lowers the decoder's limit of one call from a server
 * interceptor that runs before the first read. A call over its cap ends RESOURCE_EXHAUSTED with
 * the reason `too-large`; the rest of its body is dropped as it arrives (grpc-js discards the
 * DATA of a call that has ended), never held in memory.
 *
 * This reaches two fields of grpc-js's base server call (`decoder.maxReadMessageLength`,
 * `maxReceiveMessageSize`). When a grpc-js release no longer has them, `capReceive` returns
 * false and the caller refuses the call: a missing cap fails closed, and the tests that send an
 * oversized message to every call kind catch the upgrade.
 */
import { Metadata, status as Status, type ServerInterceptingCallInterface } from '@grpc/grpc-js';
import { ErrorCode } from '../../shared/errors.js';
import { errorReasonName } from '../../shared/rpc/convert.js';
import { REASON_ENUM_KEY, REASON_KEY } from '../../shared/rpc/status.js';

interface BaseCallInternals {
  decoder?: { maxReadMessageLength?: unknown };
  maxReceiveMessageSize?: unknown;
  sendStatus: ServerInterceptingCallInterface['sendStatus'];
}

/** The trailing metadata of a status with an Aegis reason code. */
export function reasonMetadata(code: ErrorCode): Metadata {
  const md = new Metadata();
  md.set(REASON_KEY, code);
  md.set(REASON_ENUM_KEY, errorReasonName(code));
  return md;
}

/**
 * Lowers the largest request message `call` (grpc-js's base server call, as the first
 * interceptor sees it) takes to `maxBytes`. Returns false when this grpc-js has no such field.
 */
export function capReceive(call: ServerInterceptingCallInterface, maxBytes: number, what: string): boolean {
  const base = call as unknown as BaseCallInternals;
  const decoder = base.decoder;
  if (!decoder || typeof decoder.maxReadMessageLength !== 'number' || typeof base.maxReceiveMessageSize !== 'number') return false;
  const limit = Math.min(decoder.maxReadMessageLength, Math.max(0, Math.floor(maxBytes)));
  decoder.maxReadMessageLength = limit;
  base.maxReceiveMessageSize = limit;
  // The decoder's refusal is sent by the base call itself, without trailing metadata: give it the
  // reason code and a message that names the call kind and its cap (not the library's text).
  const send = base.sendStatus.bind(call);
  base.sendStatus = (status) => {
    if (status.code === Status.RESOURCE_EXHAUSTED && !status.metadata) {
      send({ code: Status.RESOURCE_EXHAUSTED, details: `the message is larger than ${what} takes (${limit} bytes)`, metadata: reasonMetadata(ErrorCode.TooLarge) });
      return;
    }
    send(status);
  };
  return true;
}
