/** gRPC channel options every Aegis caller uses (clients, operators, the simulator). */
import type { ChannelOptions } from '@grpc/grpc-js';

const CHANNEL_OPTIONS: ChannelOptions = {
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  'grpc.max_send_message_length': -1,
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 5_000,
};

/**
 * Channel options for `address`. For an IP literal the TLS name checked is `localhost`, which
 * every coordinator server certificate carries (TLS SNI cannot name an IP, RFC 6066); the
 * certificate must still chain to the pinned coordinator CA.
 */
export function channelOptions(address: string): ChannelOptions {
  const host = address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  const ip = /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(':');
  return ip ? { ...CHANNEL_OPTIONS, 'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost' } : CHANNEL_OPTIONS;
}

