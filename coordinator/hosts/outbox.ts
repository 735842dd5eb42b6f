/**
 * A round's outbound messages per client: delivered to the client's listener, or kept in order
 * until one subscribes. Each round host keeps one.
 */
import type { ServerMessage } from '../../shared/protocol/messages.js';

type Listener = (m: ServerMessage) => void;

export class Outbox {
  private readonly queues = new Map<string, ServerMessage[]>();
  private readonly listeners = new Map<string, Listener>();

  /** Delivers this client's queued and future messages to `listener`; returns an unsubscribe. */
  subscribe(clientId: string, listener: Listener): () => void {
    this.listeners.set(clientId, listener);
    const q = this.queues.get(clientId);
    if (q) {
      this.queues.delete(clientId);
      for (const m of q) listener(m);
    }
    return () => {
      if (this.listeners.get(clientId) === listener) this.listeners.delete(clientId);
    };
  }

  deliver(to: string, message: ServerMessage): void {
    const l = this.listeners.get(to);
    if (l) l(message);
    else (this.queues.get(to) ?? this.queues.set(to, []).get(to)!).push(message);
  }

  clear(): void {
    this.listeners.clear();
    this.queues.clear();
  }
}
